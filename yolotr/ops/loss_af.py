"""Loss of the anchor-free head (YOLOv8 / YOLO11 / YOLO12): task-aligned targets, CIoU, DFL, BCE.

The head predicts, per anchor point, four distributions over ``reg_max`` bins (the distances
left, top, right, bottom in grid units) and ``nc`` class logits. The loss decodes the expected
distances to boxes, assigns targets with :class:`~yolotr.ops.assign.TaskAlignedAssigner`, and sums

- box: ``1 - CIoU`` of each foreground prediction with its target box,
- dfl: distribution focal loss, the cross-entropy of the two bins around the target distance
  weighted by their linear interpolation,
- cls: BCE of every class logit against the assigner's soft class targets,

the first two weighted per anchor by its class target, all three divided by the sum of the class
targets (at least 1). Numerically the ``ultralytics`` package's ``v8DetectionLoss`` (8.4); it differs
in its interface (per-level maps and ``(N, 6)`` targets in, a scalar total and the items out) and in
that it always computes in float32, with autocast off, whatever the maps' dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F

from yolotr.errors import ConfigError
from yolotr.ops.anchors import bbox2dist, dist2bbox, make_anchors
from yolotr.ops.assign import Assignment, TaskAlignedAssigner, bbox_ciou
from yolotr.ops.targets import check_target_layout, check_targets
from yolotr.ops.transfer import to_device

AF_LOSS_NAMES = ("box", "cls", "dfl")

# hyp key -> default: the gains of this head family and the assigner's top-k.
AF_HYP_DEFAULTS = {"af_box": 7.5, "af_cls": 0.5, "dfl": 1.5, "tal_topk": 10}


def anchor_rows(maps: list[torch.Tensor], sizes: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level maps ``(B, no, H_i, W_i)`` -> their two channel groups as contiguous ``(B, A, sizes[0])`` and
    ``(B, A, sizes[1])`` rows, ``A`` the anchors of all levels (each level row-major), ``no = sum(sizes)``.

    One copy of each group forward and one copy back, whatever the layout: the channels are split where the
    split's backward (a concatenation of the two gradients) writes memory in the maps' own order, so that the
    gradient reaches the head in its layout. For ``channels_last`` maps (the trainer's) the split is of the
    anchor rows ``(B, H_i * W_i, no)``, for contiguous maps of the channel planes ``(B, no, H_i * W_i)``. (A
    split of the planes of a ``channels_last`` map gave back a contiguous gradient: a transposing copy in
    the loss's backward, 3.4 ms of 9.9 at 320 px with 80 classes, and a conversion in the head's.)
    """
    if all(m.is_contiguous(memory_format=torch.channels_last) for m in maps):
        parts = [m.flatten(2).transpose(1, 2).split(sizes, 2) for m in maps]
    else:
        parts = [[p.transpose(1, 2) for p in m.flatten(2).split(sizes, 1)] for m in maps]
    return torch.cat([first for first, _ in parts], 1), torch.cat([second for _, second in parts], 1)


class LossOutput(NamedTuple):
    """Everything one loss evaluation produced.

    Attributes:
        total: scalar float32 ``(box + cls + dfl) * batch_size``, with gradient.
        items: ``(3,)`` float32 ``(box, cls, dfl)`` with gains applied, detached, not times the batch.
        assignment: the assigner's output (anchors in level order, each level row-major).
    """

    total: torch.Tensor
    items: torch.Tensor
    assignment: Assignment


def head_geometry(head_or_params, who: str) -> tuple[int, int, list[float]]:
    """``(nc, reg_max, strides)`` of a head (or a mapping with those keys), checked for the loss ``who``.

    Raises:
        ConfigError: a key is missing, or the strides are not measured yet (the model builds them).
    """
    get = head_or_params.get if isinstance(head_or_params, Mapping) else lambda k: getattr(head_or_params, k, None)
    nc, reg_max, stride = get("nc"), get("reg_max"), get("stride")
    if nc is None or reg_max is None or stride is None:
        raise ConfigError(f"{who}: the head must have 'nc', 'reg_max' and 'stride'")
    strides = [float(s) for s in (stride.tolist() if isinstance(stride, torch.Tensor) else stride)]
    if not strides or min(strides) <= 0:
        raise ConfigError(
            f"{who}: the head's strides {strides} are not set; build the model (which measures them) before its loss"
        )
    return int(nc), int(reg_max), strides


class AnchorFreeLoss:
    """Loss of an anchor-free ``Detect`` head's training output.

    Args:
        head_or_params: the head (any object with ``nc``, ``reg_max`` and ``stride``, the strides as
            a ``(nl,)`` tensor or sequence, already measured) or a mapping with those keys.
        hyp: training configuration; reads ``af_box``, ``af_cls``, ``dfl`` (gains, default 7.5, 0.5,
            1.5) and ``tal_topk`` (default 10). Other keys are ignored.
        imgsz: accepted for the same signature as the YOLOv5 loss; unused, since the input size is
            read from the maps (first map's size times the first stride).
        dense: compute the box losses on every anchor with the background weighted out, and the
            assigner's overlaps on every (box, anchor) pair: no host synchronisation but more
            arithmetic. ``None`` (default): dense off the CPU, foreground-only (one ``nonzero`` each in
            the assigner and the loss) on it.

    Call with ``maps``, the list of per-level ``(B, 4 * reg_max + nc, H_i, W_i)`` (box distribution
    first, then class logits), and ``targets`` ``(N, 6)`` ``[image_index, class, cx, cy, w, h]``
    normalized to the input image. Returns ``(total * batch_size, items)`` as :class:`LossOutput`'s
    first two fields; :meth:`detailed` also gives the assignment.
    """

    reads = frozenset(AF_HYP_DEFAULTS)  # the loss settings of cfg/default.yaml it takes

    names = AF_LOSS_NAMES

    def __init__(self, head_or_params, hyp: Mapping | None = None, imgsz: int | None = None, dense: bool | None = None):
        nc, reg_max, strides = head_geometry(head_or_params, "AnchorFreeLoss")
        if int(reg_max) < 2:
            raise ConfigError(f"AnchorFreeLoss: reg_max must be at least 2 (a distribution), got {reg_max}")
        self.nc, self.reg_max, self.strides = int(nc), int(reg_max), strides
        hyp = dict(hyp or {})
        values = {}
        for key, default in AF_HYP_DEFAULTS.items():
            value = hyp.get(key, default)
            try:
                values[key] = float(value if value is not None else default)
            except (TypeError, ValueError):
                raise ConfigError(f"hyp key '{key}': expected a number, got {value!r}") from None
            if values[key] < 0 or (key == "tal_topk" and (values[key] < 1 or values[key] != int(values[key]))):
                raise ConfigError(
                    f"hyp key '{key}': expected a non-negative number (top-k: an integer >= 1), got {value!r}"
                )
        self.gains = {"box": values["af_box"], "cls": values["af_cls"], "dfl": values["dfl"]}
        self.dense = dense
        self.assigner = TaskAlignedAssigner(
            topk=int(values["tal_topk"]), num_classes=self.nc, alpha=0.5, beta=6.0, strides=self.strides, dense=dense
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nc={self.nc}, reg_max={self.reg_max}, gains={self.gains}, {self.assigner})"

    def __call__(self, maps: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.detailed(maps, targets)
        return out.total, out.items

    def detailed(self, maps: list[torch.Tensor], targets: torch.Tensor) -> LossOutput:
        """The loss and the assignment it was computed with (arguments as for a call)."""
        if len(maps) != len(self.strides):
            raise ValueError(f"AnchorFreeLoss: {len(maps)} maps for {len(self.strides)} strides")
        no = 4 * self.reg_max + self.nc
        for i, m in enumerate(maps):
            if m.ndim != 4 or m.shape[1] != no:
                raise ValueError(f"AnchorFreeLoss: map {i} has shape {tuple(m.shape)}, expected (B, {no}, H, W)")
        check_target_layout(targets, "AnchorFreeLoss")
        device = maps[0].device
        # float32 throughout: the softmax expectation, CIoU and the BCE sums lose too much in half precision.
        with torch.autocast(device.type, enabled=False):
            return self._loss([m.float() for m in maps], targets.float())

    def _loss(self, maps: list[torch.Tensor], targets: torch.Tensor) -> LossOutput:
        batch_size = maps[0].shape[0]
        device = maps[0].device
        pred_dist, pred_logits = anchor_rows(maps, (4 * self.reg_max, self.nc))
        points, stride = make_anchors(maps, self.strides)  # (A, 2) grid units, (A, 1)
        height, width = maps[0].shape[2] * self.strides[0], maps[0].shape[3] * self.strides[0]

        gt_labels, gt_boxes, mask_gt = self.pad_targets(
            targets, batch_size, width, height, device, nc=self.nc, who="AnchorFreeLoss"
        )
        pred_boxes = self.decode(points, pred_dist)  # (B, A, 4) xyxy, grid units
        assignment = self.assigner(
            pred_logits.detach().sigmoid(),
            pred_boxes.detach() * stride,
            points * stride,
            gt_labels,
            gt_boxes,
            mask_gt,
        )
        target_scores = assignment.scores
        score_sum = target_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="sum") / score_sum

        fg = assignment.fg_mask
        if self.dense if self.dense is not None else device.type != "cpu":
            # every anchor, background weighted out: no host synchronisation (an accelerator's way)
            weight = target_scores.sum(-1, keepdim=True)  # (B, A, 1), 0 on the background
            target_boxes = assignment.boxes / stride  # grid units
            ciou = bbox_ciou(pred_boxes, target_boxes)
            loss_box = torch.where(fg.unsqueeze(-1), (1.0 - ciou) * weight, 0.0).sum() / score_sum
            target_ltrb = bbox2dist(points, target_boxes, self.reg_max - 1 - 0.01).view(-1, 4)
            dfl = self.distribution_focal_loss(pred_dist.view(-1, self.reg_max), target_ltrb).view(weight.shape)
            loss_dfl = torch.where(fg.unsqueeze(-1), dfl * weight, 0.0).sum() / score_sum
        else:
            # the foreground only, found once (a CPU's way: no work on the background)
            image, anchor = fg.nonzero(as_tuple=True)
            weight = target_scores[image, anchor].sum(-1, keepdim=True)  # (F, 1)
            target_boxes = assignment.boxes[image, anchor] / stride[anchor]  # grid units
            ciou = bbox_ciou(pred_boxes[image, anchor], target_boxes)
            loss_box = ((1.0 - ciou) * weight).sum() / score_sum
            target_ltrb = bbox2dist(points[anchor], target_boxes, self.reg_max - 1 - 0.01)  # (F, 4)
            dfl = self.distribution_focal_loss(pred_dist[image, anchor].view(-1, self.reg_max), target_ltrb)
            loss_dfl = (dfl * weight).sum() / score_sum

        items = torch.stack((loss_box * self.gains["box"], loss_cls * self.gains["cls"], loss_dfl * self.gains["dfl"]))
        return LossOutput(items.sum() * batch_size, items.detach(), assignment)

    def decode(self, points: torch.Tensor, pred_dist: torch.Tensor) -> torch.Tensor:
        """``(B, A, 4 * reg_max)`` distributions -> ``(B, A, 4)`` ``xyxy`` boxes in grid units.

        Each side's distance is the expectation of its softmax over the bins ``0 .. reg_max - 1``.
        """
        b, a, _ = pred_dist.shape
        bins = torch.arange(self.reg_max, dtype=pred_dist.dtype, device=pred_dist.device)
        distance = pred_dist.view(b, a, 4, self.reg_max).softmax(3).matmul(bins)
        return dist2bbox(distance, points, xywh=False)

    def distribution_focal_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """DFL of ``logits`` ``(F * 4, reg_max)`` against distances ``target`` ``(F, 4)`` -> ``(F, 1)``.

        A distance ``t`` between bins ``l = floor(t)`` and ``l + 1`` is the mix ``(l + 1 - t, t - l)``
        of the two; the loss is that mix of their cross-entropies, averaged over the four sides.
        Targets are clamped to ``[0, reg_max - 1.01]`` so the right bin exists.
        """
        target = target.clamp(0, self.reg_max - 1 - 0.01)
        left = target.long()
        right = left + 1
        w_left = right - target
        w_right = 1 - w_left
        log_p = F.log_softmax(logits, dim=1)
        nll_left = -log_p.gather(1, left.view(-1, 1)).view(left.shape)
        nll_right = -log_p.gather(1, right.view(-1, 1)).view(left.shape)
        return (nll_left * w_left + nll_right * w_right).mean(-1, keepdim=True)

    @staticmethod
    def pad_targets(
        targets: torch.Tensor,
        batch_size: int,
        width: float,
        height: float,
        device: torch.device | None = None,
        nc: int | None = None,
        who: str = "AnchorFreeLoss",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, 6)`` normalized targets -> per-image padded ``labels`` ``(B, M, 1)``, ``xyxy`` pixel
        ``boxes`` ``(B, M, 4)`` and ``mask`` ``(B, M, 1)`` bool, ``M`` the most boxes of one image.

        Boxes keep their order within an image. Malformed targets raise ``ValueError`` (prefixed ``who``):
        an image index outside ``[0, batch_size)``, a class id outside ``[0, nc)``, NaN, boxes not normalized
        (:func:`~yolotr.ops.targets.check_targets`).
        The padding is done where ``targets`` are and the results moved to ``device`` (default: the
        same): targets still on the host cost an accelerator no synchronisation (``M`` is read once,
        with the index check, wherever they are).
        """
        device = targets.device if device is None else torch.device(device)
        work = targets.device
        if targets.shape[0] == 0:
            empty = torch.zeros(batch_size, 0, 1, device=device)
            return empty, torch.zeros(batch_size, 0, 4, device=device), empty.bool()
        image = targets[:, 0].long()
        # scatter_add rather than bincount, which reads its input's maximum on the host on CUDA
        counts = torch.zeros(batch_size, dtype=torch.long, device=work)
        counts.scatter_add_(0, image.clamp(0, batch_size - 1), torch.ones_like(image))
        (m,) = check_targets(targets, nc, batch_size, who, extra=counts.max()[None])  # the one host read
        order = torch.sort(image, stable=True).indices
        image, targets = image[order], targets[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(image.shape[0], device=work) - starts[image]
        labels = torch.zeros(batch_size, m, 1, device=work)
        boxes = torch.zeros(batch_size, m, 4, device=work)
        mask = torch.zeros(batch_size, m, 1, dtype=torch.bool, device=work)
        scale = torch.tensor([width, height], device=work)
        xy, half = targets[:, 2:4] * scale, targets[:, 4:6] * scale / 2
        labels[image, slot] = targets[:, 1:2]
        boxes[image, slot] = torch.cat((xy - half, xy + half), 1)
        mask[image, slot] = True
        if device == work:
            return labels, boxes, mask
        return tuple(to_device(t, device) for t in (labels, boxes, mask))
