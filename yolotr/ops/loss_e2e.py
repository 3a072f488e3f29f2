"""Loss of the end-to-end heads (YOLOv10, YOLO26): both branches with task-aligned targets, mixed.

The one-to-many branch is trained like YOLOv8's head (task-aligned top-10 targets per box), the one-to-one
branch with top-7 candidates of which each box keeps only its best anchor (``topk2 = 1``), so that at
inference one box per object comes out without NMS. Per branch (:class:`BranchLoss`): ``1 - CIoU`` box
loss and BCE class loss as in :mod:`yolotr.ops.loss_af`, and a third term: the distribution focal loss
with ``reg_max > 1`` (YOLOv10), or with ``reg_max == 1`` (YOLO26: the head predicts the four distances
directly) the L1 distance between predicted and target sides in input-size units (each side times its
stride, divided by the input width for left/right and the height for top/bottom), averaged over the four
sides. All three are weighted per anchor by its class target and divided by the sum of the class targets.

:class:`E2ELoss` returns ``o2m * L_one2many + o2o * L_one2one`` (each ``items * batch_size``), ``o2o = 1 -
o2m``; ``o2m`` starts at 0.8 and, after ``e`` finished epochs of ``E``, is ``max(1 - e / (E - 1), 0) *
(0.8 - 0.1) + 0.1``. The logged items are the one-to-one branch's. Numerically the ``ultralytics``
package's ``E2ELoss`` (8.4, which uses it for YOLOv10 and YOLO26 alike); it differs in its interface
(:meth:`E2ELoss.set_progress` from the finished epoch count, so resuming needs no saved state) and computes
in float32 with autocast off.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from yolotr.errors import ConfigError
from yolotr.ops.anchors import bbox2dist, dist2bbox, make_anchors
from yolotr.ops.assign import TaskAlignedAssigner, bbox_ciou
from yolotr.ops.loss_af import AF_HYP_DEFAULTS, AnchorFreeLoss, LossOutput, anchor_rows, head_geometry
from yolotr.ops.targets import check_target_layout
from yolotr.ops.transfer import device_tensor

E2E_START_O2M, E2E_FINAL_O2M = 0.8, 0.1


def _hyp_number(hyp: Mapping, key: str, default: float) -> float:
    value = hyp.get(key, default)
    try:
        number = float(value if value is not None else default)
    except (TypeError, ValueError):
        raise ConfigError(f"hyp key '{key}': expected a number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"hyp key '{key}': expected a non-negative number, got {value!r}")
    return number


class BranchLoss:
    """The detection loss of one branch's maps (box, cls, and DFL or L1), with its own assigner.

    Args:
        nc, reg_max, strides: the head's classes, bins per side (1: distances predicted directly) and strides.
        gains: ``{"box", "cls", "dfl"}`` (the ``dfl`` gain also weights the L1 term).
        topk, topk2: the assigner's candidates per box and the tighter second top-k (one-to-one: 7 and 1).
        dense: as :class:`~yolotr.ops.loss_af.AnchorFreeLoss`'s: the box terms on every anchor with the
            background weighted out and the assigner's dense overlaps, no host synchronisation (``None``,
            default: dense off the CPU; foreground-only, one ``nonzero``, on it).

    Call with ``maps`` (list of ``(B, 4 * reg_max + nc, H_i, W_i)``) and ``targets`` ``(N, 6)`` normalized
    ``[image, class, cx, cy, w, h]``; returns :class:`~yolotr.ops.loss_af.LossOutput` (``total`` = items
    sum times the batch size).
    """

    def __init__(
        self,
        nc: int,
        reg_max: int,
        strides: list[float],
        gains: dict,
        topk: int,
        topk2: int | None = None,
        dense: bool | None = None,
    ):
        self.nc, self.reg_max, self.strides, self.gains, self.dense = nc, reg_max, strides, gains, dense
        self.assigner = TaskAlignedAssigner(
            topk=topk, num_classes=nc, alpha=0.5, beta=6.0, strides=strides, topk2=topk2, dense=dense
        )
        self._dfl = AnchorFreeLoss({"nc": nc, "reg_max": reg_max, "stride": strides}) if reg_max > 1 else None

    def __call__(self, maps: list[torch.Tensor], targets: torch.Tensor) -> LossOutput:
        batch_size, device = maps[0].shape[0], maps[0].device
        pred_dist, pred_logits = anchor_rows(maps, (4 * self.reg_max, self.nc))  # (B, A, 4 * reg_max), (B, A, nc)
        points, stride = make_anchors(maps, self.strides)  # (A, 2) grid units, (A, 1)
        height, width = maps[0].shape[2] * self.strides[0], maps[0].shape[3] * self.strides[0]

        # padded where the targets are (host targets cost an accelerator no synchronisation), then moved
        gt_labels, gt_boxes, mask_gt = AnchorFreeLoss.pad_targets(
            targets, batch_size, width, height, device, nc=self.nc, who="E2ELoss"
        )
        if self._dfl is not None:
            pred_boxes = self._dfl.decode(points, pred_dist)
        else:
            pred_boxes = dist2bbox(pred_dist, points, xywh=False)  # (B, A, 4) xyxy, grid units
        assignment = self.assigner(
            pred_logits.detach().sigmoid(), pred_boxes.detach() * stride, points * stride, gt_labels, gt_boxes, mask_gt
        )
        target_scores = assignment.scores
        score_sum = target_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="none").sum() / score_sum

        fg = assignment.fg_mask
        target_boxes = assignment.boxes / stride  # (B, A, 4) grid units
        if self.dense if self.dense is not None else device.type != "cpu":
            # every anchor, background weighted out: no host synchronisation (an accelerator's way)
            mask = fg.unsqueeze(-1)  # (B, A, 1); terms of the background are garbage, selected away
            weight = target_scores.sum(-1, keepdim=True)  # (B, A, 1), 0 on the background
            box_p, box_t, dist_p, anchor_points, anchor_stride = pred_boxes, target_boxes, pred_dist, points, stride
        else:
            # the foreground only, found once (a CPU's way: no work on the background)
            image, anchor = fg.nonzero(as_tuple=True)
            mask = None
            weight = target_scores[image, anchor].sum(-1, keepdim=True)  # (F, 1)
            box_p, box_t, dist_p = pred_boxes[image, anchor], target_boxes[image, anchor], pred_dist[image, anchor]
            anchor_points, anchor_stride = points[anchor], stride[anchor]
        ciou = bbox_ciou(box_p, box_t)
        loss_box = self._masked((1.0 - ciou) * weight, mask).sum() / score_sum
        if self._dfl is not None:
            target_ltrb = bbox2dist(anchor_points, box_t, self.reg_max - 1 - 0.01).reshape(-1, 4)
            side = self._dfl.distribution_focal_loss(dist_p.reshape(-1, self.reg_max), target_ltrb)
        else:
            scale = anchor_stride / device_tensor([width, height, width, height], device)  # (..., 4)
            target_ltrb = torch.cat((anchor_points - box_t[..., :2], box_t[..., 2:] - anchor_points), -1)
            side = F.l1_loss(dist_p * scale, target_ltrb * scale, reduction="none").mean(-1, keepdim=True)
        loss_side = self._masked(side.reshape(weight.shape) * weight, mask).sum() / score_sum
        items = torch.stack((loss_box * self.gains["box"], loss_cls * self.gains["cls"], loss_side * self.gains["dfl"]))
        return LossOutput(items.sum() * batch_size, items.detach(), assignment)

    @staticmethod
    def _masked(term: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``term`` with the background zeroed (a select, not a product: a NaN there must not count)."""
        return term if mask is None else torch.where(mask, term, 0.0)


class E2ELoss:
    """Loss of an end-to-end head's training output ``{"one2many": maps, "one2one": maps}``.

    Args:
        head_or_params: the head (``nc``, ``reg_max``, measured ``stride``) or a mapping with those keys.
        hyp: reads the gains ``af_box``, ``af_cls``, ``dfl`` (7.5, 0.5, 1.5), ``tal_topk`` (one-to-many
            candidates, 10) and ``epochs`` (the run's length for the branch weighting, 100).
        imgsz: unused (same signature as the other losses).
        dense: :class:`BranchLoss`'s (``None``: sync-free dense path off the CPU, foreground-only on it).

    Call with the head's training output and ``targets`` ``(N, 6)``; returns ``(total, items)``: ``total``
    the scalar ``o2m * L_o2m + o2o * L_o2o`` (each branch's items times the batch size), ``items`` ``(3,)``
    the one-to-one branch's gain-scaled items (detached, not times the batch). :attr:`names` names them:
    ``(box, cls, dfl)``, or ``(box, cls, l1)`` with ``reg_max`` 1. The trainer calls :meth:`set_progress`
    at the start of every epoch.
    """

    reads = frozenset(AF_HYP_DEFAULTS)  # the loss settings of cfg/default.yaml it takes

    def __init__(self, head_or_params, hyp: Mapping | None = None, imgsz: int | None = None, dense: bool | None = None):
        nc, reg_max, strides = head_geometry(head_or_params, "E2ELoss")
        hyp = dict(hyp or {})
        values = {key: _hyp_number(hyp, key, default) for key, default in AF_HYP_DEFAULTS.items()}
        topk = values["tal_topk"]
        if topk < 1 or topk != int(topk):
            raise ConfigError(f"hyp key 'tal_topk': expected an integer >= 1, got {hyp.get('tal_topk')!r}")
        self.epochs = int(_hyp_number(hyp, "epochs", 100))
        self.nc, self.reg_max = int(nc), int(reg_max)
        self.gains = {"box": values["af_box"], "cls": values["af_cls"], "dfl": values["dfl"]}
        self.names = ("box", "cls", "dfl" if self.reg_max > 1 else "l1")
        self.one2many = BranchLoss(self.nc, self.reg_max, strides, self.gains, int(topk), dense=dense)
        self.one2one = BranchLoss(self.nc, self.reg_max, strides, self.gains, 7, topk2=1, dense=dense)
        self.updates = 0
        self.o2m, self.o2o = E2E_START_O2M, 1.0 - E2E_START_O2M

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(nc={self.nc}, reg_max={self.reg_max}, gains={self.gains}, "
            f"o2m={self.o2m:.4f}, o2o={self.o2o:.4f}, updates={self.updates}/{self.epochs})"
        )

    def set_progress(self, epoch: int, epochs: int | None = None) -> None:
        """Weight the branches for training after ``epoch`` finished epochs (of ``epochs``, default the hyp's).

        Equals calling :meth:`update` ``epoch`` times from the start; call it at the start of every epoch
        (also the first one of a resumed run)."""
        if epochs is not None:
            self.epochs = int(epochs)
        self.updates = int(epoch)
        decay = max(1 - self.updates / max(self.epochs - 1, 1), 0)
        self.o2m = decay * (E2E_START_O2M - E2E_FINAL_O2M) + E2E_FINAL_O2M
        self.o2o = max(1.0 - self.o2m, 0.0)

    def update(self) -> None:
        """One more finished epoch (the package trainer's call)."""
        self.set_progress(self.updates + 1)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "epochs": self.epochs}

    def load_state_dict(self, state: Mapping) -> None:
        self.set_progress(int(state["updates"]), int(state["epochs"]))

    def __call__(self, preds: dict, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one2many, one2one = self.detailed(preds, targets)
        return self.o2m * one2many.total + self.o2o * one2one.total, one2one.items

    def detailed(self, preds: dict, targets: torch.Tensor) -> tuple[LossOutput, LossOutput]:
        """Both branches' own losses and assignments (arguments as for a call)."""
        if not isinstance(preds, Mapping) or not {"one2many", "one2one"} <= set(preds):
            raise ValueError("E2ELoss: expected the end-to-end head's {'one2many': maps, 'one2one': maps}")
        no = 4 * self.reg_max + self.nc
        for key in ("one2many", "one2one"):
            maps = preds[key]
            if len(maps) != len(self.one2many.strides):
                raise ValueError(f"E2ELoss: {len(maps)} {key} maps for {len(self.one2many.strides)} strides")
            for i, m in enumerate(maps):
                if m.ndim != 4 or m.shape[1] != no:
                    raise ValueError(f"E2ELoss: {key} map {i} has shape {tuple(m.shape)}, expected (B, {no}, H, W)")
        check_target_layout(targets, "E2ELoss")
        device = preds["one2many"][0].device
        targets = targets.float()
        # float32 throughout: CIoU, the softmax expectation and the BCE sums lose too much in half precision.
        with torch.autocast(device.type, enabled=False):
            one2many = self.one2many([m.float() for m in preds["one2many"]], targets)
            one2one = self.one2one([m.float() for m in preds["one2one"]], targets)
        return one2many, one2one
