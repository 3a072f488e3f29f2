"""YOLOv5's detection loss: anchor matching by size ratio, neighbouring cells, CIoU, objectness, BCE.

Differs from YOLOv5's ``ComputeLoss`` in two ways: the head decodes the matched predictions
(``head.cell_boxes``), so a head with another parametrization (YOLOv4's ``exp`` for w/h) is trained
on what it predicts; and the neighbouring-cell rule follows the head's reachable offsets
(``head.xy_range``): YOLOv5's ``(-0.5, 1.5)`` gives its 0.5 rule, YOLOv4's ``(0, 1)`` only the
centre cell. Everything is computed in float32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.head import Detect
from yolotr.ops.loss_af import AnchorFreeLoss
from yolotr.ops.loss_detr import RTDETRLoss
from yolotr.ops.loss_e2e import E2ELoss
from yolotr.ops.targets import check_targets
from yolotr.ops.transfer import device_tensor, to_device

LOSS_NAMES = ("box", "obj", "cls")


def scaled_gains(hyp: dict, nc: int, nl: int, imgsz: int) -> dict[str, float]:
    """YOLOv5's gain scaling: box by 3/nl, cls by nc/80 * 3/nl, obj by (imgsz/640)^2 * 3/nl."""
    return {
        "box": float(hyp.get("box", 0.05)) * 3 / nl,
        "cls": float(hyp.get("cls", 0.5)) * nc / 80 * 3 / nl,
        "obj": float(hyp.get("obj", 1.0)) * (imgsz / 640) ** 2 * 3 / nl,
    }


class DetectionLoss:
    """Loss of a ``Detect`` head's raw training output.

    Args:
        head: the model's ``Detect`` (or subclass) module; its ``anchors`` are in grid units.
        hyp: gains and settings: ``box``, ``obj``, ``cls``, ``cls_pw``, ``obj_pw``, ``anchor_t``,
            ``label_smoothing``, ``fl_gamma`` (above 0: YOLOv5's focal loss around both BCE terms, alpha 0.25).
        imgsz: training image size (scales the objectness gain).
        dense: match targets without boolean indexing (every candidate, masked: no host synchronisation,
            more work); default: on any device but the CPU.

    Call with ``raw`` (list of ``(B, na, H, W, 5 + nc)``) and ``targets`` ``(N, 6)`` float
    ``[image_index, class, cx, cy, w, h]`` normalized to the input image. Returns
    ``(loss * batch_size, (box, obj, cls) detached)``, both float32.
    """

    reads = frozenset({"box", "cls", "cls_pw", "obj", "obj_pw", "anchor_t", "label_smoothing", "fl_gamma"})

    names = LOSS_NAMES

    def __init__(self, head: Detect, hyp: dict, imgsz: int = 640, dense: bool | None = None):
        self.head, self.dense = head, dense
        self.nc, self.nl, self.na = head.nc, head.nl, head.na
        self.gains = scaled_gains(hyp, self.nc, self.nl, imgsz)
        self.anchor_t = float(hyp.get("anchor_t", 4.0))
        eps = float(hyp.get("label_smoothing", 0.0))
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * eps, 0.5 * eps
        self.cls_pw = float(hyp.get("cls_pw", 1.0))
        self.obj_pw = float(hyp.get("obj_pw", 1.0))
        self.fl_gamma = float(hyp.get("fl_gamma", 0.0))
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02][: self.nl])
        if len(self.balance) < self.nl:
            self.balance += [0.02] * (self.nl - len(self.balance))

    def _bce(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor, reduction: str = "mean"):
        """BCE with logits (``pos_weight`` on the positive term), its mean or (``reduction="none"``) each term;
        with ``fl_gamma`` > 0 YOLOv5's ``FocalLoss`` around it: each term times ``alpha_t * (1 - p_t) ** gamma``,
        alpha 0.25 for positives."""
        if self.fl_gamma <= 0:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)
        terms = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        terms = terms * (target * 0.25 + (1 - target) * 0.75) * (1.0 - p_t) ** self.fl_gamma
        return terms.mean() if reduction == "mean" else terms

    def __call__(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = raw[0].device
        cls_pw = torch.full((1,), self.cls_pw, device=device)
        obj_pw = torch.full((1,), self.obj_pw, device=device)
        losses = torch.zeros(3, device=device)
        check_targets(targets, self.nc, raw[0].shape[0], "DetectionLoss")  # read where they are: the host
        targets = to_device(targets.float(), device)
        dense = self.dense if self.dense is not None else device.type != "cpu"
        levels = self._targets(raw, targets, dense)
        for i, (pi, (b, a, gj, gi, tbox, anchors, tcls, valid)) in enumerate(zip(raw, levels)):
            pi = pi.float()
            tobj = torch.zeros(pi.shape[:4], device=device)
            if valid is not None:
                self._dense_level(i, pi, tobj, losses, cls_pw, (b, a, gj, gi, tbox, anchors, tcls, valid))
            elif b.numel():
                matched = pi[b, a, gj, gi]
                pbox = self.head.cell_boxes(i, matched[:, :4], anchors).float()
                ciou_loss = complete_iou_loss(_xyxy(pbox), _xyxy(tbox))
                losses[0] += ciou_loss.mean()
                tobj[b, a, gj, gi] = (1.0 - ciou_loss).detach().clamp(0)
                if self.nc > 1:
                    t = torch.full_like(matched[:, 5:], self.cls_neg)
                    t[torch.arange(b.numel(), device=device), tcls] = self.cls_pos
                    losses[2] += self._bce(matched[:, 5:], t, cls_pw)
            losses[1] += self._bce(pi[..., 4], tobj, obj_pw) * self.balance[i]
        losses = losses * device_tensor([self.gains["box"], self.gains["obj"], self.gains["cls"]], device)
        batch_size = raw[0].shape[0]
        return losses.sum() * batch_size, losses.detach()

    def _dense_level(
        self, i: int, pi: torch.Tensor, tobj: torch.Tensor, losses: torch.Tensor, cls_pw: torch.Tensor, level
    ) -> None:
        """One level's box and class terms over every candidate, the invalid ones selected away (adds to
        ``losses`` and writes ``tobj`` in place): the numbers of the filtered path without reading a count.

        Invalid candidates read a cell that exists (their indices are clamped) but enter nothing: their raw
        values and target boxes are replaced by harmless ones before the CIoU (so that no NaN of a degenerate
        box reaches the gradient), their terms are selected out, and their objectness is written to one spare
        slot past the map. The valid ones keep their order, so a cell matched twice keeps the last write, as
        on the filtered path (on CUDA only under deterministic algorithms, the default ``deterministic: true``;
        otherwise which duplicate wins is unspecified there, as in YOLOv5).
        """
        b, a, gj, gi, tbox, anchors, tcls, valid = level
        count = valid.sum()
        keep = valid[:, None]
        matched = torch.where(keep, pi[b, a, gj, gi], 0.0)
        pbox = self.head.cell_boxes(i, matched[:, :4], anchors).float()
        tbox = torch.where(keep, tbox, pbox.detach())
        ciou_loss = complete_iou_loss(_xyxy(pbox), _xyxy(tbox))
        losses[0] += torch.where(valid, ciou_loss, 0.0).sum() / count.clamp(min=1)
        cell = ((b * self.na + a) * tobj.shape[2] + gj) * tobj.shape[3] + gi
        slots = torch.cat((tobj.view(-1), tobj.new_zeros(1)))
        slots[torch.where(valid, cell, tobj.numel())] = (1.0 - ciou_loss).detach().clamp(0)
        tobj.view(-1).copy_(slots[:-1])
        if self.nc > 1:
            t = torch.full_like(matched[:, 5:], self.cls_neg)
            t[torch.arange(b.numel(), device=pi.device), tcls] = self.cls_pos
            terms = self._bce(matched[:, 5:], t, cls_pw, reduction="none")
            losses[2] += torch.where(keep, terms, 0.0).sum() / (count * self.nc).clamp(min=1)

    @torch.no_grad()
    def build_targets(self, raw: list[torch.Tensor], targets: torch.Tensor):
        """Assign each target to anchors and cells, per head.

        A target goes to every anchor whose width and height ratios to it are all below
        ``anchor_t``, in the cell holding its centre and in the neighbouring cells (left/right,
        up/down) from which the head can still reach the centre.

        Yields per head: image index, anchor index, cell row, cell column ``(n,)`` long; the target
        box relative to its cell ``(n, 4)`` in grid units; the matched anchors ``(n, 2)``; the classes.
        """
        for level in self._targets(raw, targets, dense=False):
            yield level[:7]

    @torch.no_grad()
    def _targets(self, raw: list[torch.Tensor], targets: torch.Tensor, dense: bool):
        """:meth:`build_targets` plus an eighth item: ``None``, or with ``dense`` a ``(n,)`` bool of which
        candidates are matches. Dense, the candidates are every (direction, anchor, target) triple in the
        filtered path's order (direction, then anchor, then target): no boolean indexing, which on an
        accelerator reads the count on the host (3 a level)."""
        device = targets.device
        nt = targets.shape[0]
        anchor_index = torch.arange(self.na, device=device).float().view(self.na, 1).repeat(1, nt)
        all_targets = torch.cat((targets.repeat(self.na, 1, 1), anchor_index[..., None]), 2)  # (na, nt, 7)
        directions = device_tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device)
        for i in range(self.nl):
            anchors = self.head.anchors[i].to(device)
            _, _, ny, nx, _ = raw[i].shape
            lo, hi = self.head.xy_range(i)
            g = max(min(hi - 1.0, -lo), 0.0)
            gain = device_tensor([1, 1, nx, ny, nx, ny, 1], device)
            t = all_targets * gain
            valid = None
            if dense:
                r = t[..., 4:6] / anchors[:, None]
                fits = torch.max(r, 1 / r).max(2)[0] < self.anchor_t  # (na, nt)
                gxy, gxi = t[..., 2:4], gain[2:4] - t[..., 2:4]
                left, up = ((gxy % 1 < g) & (gxy > 1)).unbind(-1)
                right, down = ((gxi % 1 < g) & (gxi > 1)).unbind(-1)
                valid = (torch.stack((torch.ones_like(left), left, up, right, down)) & fits).view(-1)
                t = t.repeat((5, 1, 1)).view(-1, 7)
                offsets = (directions[:, None, None] * g).expand(5, self.na, nt, 2).reshape(-1, 2)
            elif nt:
                r = t[..., 4:6] / anchors[:, None]
                t = t[torch.max(r, 1 / r).max(2)[0] < self.anchor_t]
                gxy = t[:, 2:4]
                gxi = gain[2:4] - gxy
                left, up = ((gxy % 1 < g) & (gxy > 1)).T
                right, down = ((gxi % 1 < g) & (gxi > 1)).T
                use = torch.stack((torch.ones_like(left), left, up, right, down))
                t = t.repeat((5, 1, 1))[use]
                offsets = (torch.zeros_like(gxy)[None] + directions[:, None] * g)[use]
            else:
                t = all_targets[0]
                offsets = torch.zeros(0, 2, device=device)
            bc, gxy, gwh, a = t.split((2, 2, 2, 1), 1)
            a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij.T.clamp(min=0)
            gi, gj = gi.clamp(max=nx - 1), gj.clamp(max=ny - 1)
            # the offset from the clamped cell, as YOLOv5 (which clamps gij in place): a centre on the right or
            # bottom edge (cx = 1) is 1.0 into the last cell, not 0.0 into the one past it
            cell = torch.stack((gi, gj), 1)
            yield b, a, gj, gi, torch.cat((gxy - cell, gwh), 1), anchors[a], c, valid


def unread_settings_warning(loss, cfg: dict, defaults: dict) -> str | None:
    """The warning for loss settings (``box``, ``cls``, ``af_box``, ``dfl`` ...) that ``cfg`` changes from
    ``defaults`` but ``loss`` does not read (its ``reads``): YOLOv5's ``box`` given to an anchor-free model, whose
    loss takes ``af_box``, changed nothing. None when there is none."""
    every = DetectionLoss.reads | AnchorFreeLoss.reads
    unread = sorted(k for k in every - loss.reads if k in cfg and cfg[k] != defaults.get(k))
    if not unread:
        return None
    takes = ", ".join(sorted(loss.reads)) or "none of them"
    package = " (the ultralytics package's box, cls and dfl gains)" if "af_box" in loss.reads else ""
    return f"{', '.join(unread)}: not read by this model's {type(loss).__name__}, which takes {takes}{package}"


def build_loss(model: nn.Module, hyp: dict, imgsz: int = 640, dense: bool | None = None):
    """The loss a model trains with, chosen by its head (``model.model[-1]``).

    RT-DETR's decoder (``dec_score_head``) gets :class:`~yolotr.ops.loss_detr.RTDETRLoss`; a head with a
    one-to-one branch (``one2one_cv2``: YOLOv10 / YOLO26) gets
    :class:`~yolotr.ops.loss_e2e.E2ELoss` (its ``set_progress(epoch, epochs)`` weights the branches), an
    anchor-free head (one with ``reg_max``: YOLOv8 / YOLO11 / YOLO12)
    :class:`~yolotr.ops.loss_af.AnchorFreeLoss`, any other (YOLOv5, YOLOv4) :class:`DetectionLoss`.
    A DDP-wrapped model is unwrapped. The returned callable takes the head's training output and
    ``targets`` ``(N, 6)`` and returns ``(total * batch_size, items)``; its ``names`` attribute
    names the items (e.g. for results.csv). ``dense`` (the YOLO losses; None: by device) matches targets
    without host synchronisation (every candidate, masked: an accelerator's way) or filters them (the CPU's).
    """
    model = getattr(model, "module", model)
    head = model.model[-1]
    if hasattr(head, "dec_score_head"):  # RT-DETR's decoder: the set loss (total not times the batch size)
        return RTDETRLoss(head, hyp, imgsz)
    if hasattr(head, "one2one_cv2"):
        return E2ELoss(head, hyp, imgsz, dense)
    if hasattr(head, "reg_max"):
        return AnchorFreeLoss(head, hyp, imgsz, dense)
    return DetectionLoss(head, hyp, imgsz, dense)


def _xyxy(xywh: torch.Tensor) -> torch.Tensor:
    xy, half = xywh[:, :2], xywh[:, 2:4] / 2
    return torch.cat((xy - half, xy + half), 1)


def complete_iou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``1 - CIoU`` of ``xyxy`` boxes ``(N, 4)`` -> ``(N,)`` float, as torchvision's ``complete_box_iou_loss``
    (``reduction="none"``): its formula, order of operations and ``eps`` placement, so the same numbers and
    gradients (``tests/ops/test_loss.py``).

    One difference: the intersection of disjoint boxes is set to 0 by ``torch.where`` where torchvision indexes
    through a boolean mask (four reads and a write, each a ``nonzero`` and so a host synchronisation on CUDA:
    15 a step of the YOLOv5 loss). The aspect term ``v`` and ``alpha`` (a constant for the gradient) are the
    CIoU paper's; ``bbox_ciou`` in ``ops/assign.py`` is the ultralytics package's variant (``eps`` on the
    heights), which differs in the last bits.
    """
    # three reads of the corners, as torchvision's three functions make them: the gradient then sums its
    # contributions in the same order, and equals torchvision's to the bit
    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlaps = (ykis2 > ykis1) & (xkis2 > xkis1)
    intersection = torch.where(overlaps, (xkis2 - xkis1) * (ykis2 - ykis1), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intersection
    iou = intersection / (union + eps)

    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    diagonal2 = ((torch.max(x2, x2g) - torch.min(x1, x1g)) ** 2) + ((torch.max(y2, y2g) - torch.min(y1, y1g)) ** 2)
    centres2 = (((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2) + (((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2)
    distance_iou_loss = 1 - iou + (centres2 / (diagonal2 + eps))

    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    v = (4 / (torch.pi**2)) * torch.pow(torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1)), 2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return distance_iou_loss + alpha * v
