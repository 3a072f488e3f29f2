"""Task-aligned assignment of ground-truth boxes to anchor points (TOOD / YOLOv8).

Each ground-truth box takes as candidates the anchor points whose centres lie inside it, scores them
with the alignment metric ``score ** alpha * CIoU ** beta`` (``score`` is the predicted probability of
the box's class, ``CIoU`` the overlap of the predicted box with it, clamped at 0) and keeps the
``topk`` best. An anchor chosen by several boxes goes to the box it overlaps most. The class target of
a foreground anchor is not 1 but its metric normalized per box, so that the best anchor of a box gets
that box's best overlap.

Follows the ``ultralytics`` package (8.4) rule by rule, including its two less obvious details: a box
side shorter than the second stride (16 px for strides 8, 16, 32) is widened to it about the box's
centre for the "centre inside" test only, and an anchor claimed by several boxes goes to the box of
highest overlap among *all* boxes whose interior holds it. (Some 8.4 sources widen only sides shorter
than the *first* stride; the package that made our oracle, 8.4.190, widens below the second: a 12.8 px
side is widened there, and the foreground counts agree only with that rule.) It differs in form
only: padding boxes are marked by an explicit mask (the package infers them from a zero coordinate
sum), and the result is a named tuple.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of ``xyxy`` boxes, elementwise (broadcast) over the leading dimensions.

    Args:
        box1, box2: ``(..., 4)`` boxes ``x1, y1, x2, y2``, same units.
        eps: guard of the heights, the union and the enclosing diagonal (the package's placement).

    Returns:
        ``(..., 1)`` CIoU ``IoU - centre_distance^2 / diagonal^2 - v * alpha`` (at most 1, can be
        negative). ``alpha`` is treated as a constant for the gradient, as in the CIoU paper.
    """
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * (
        b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    diagonal2 = cw.pow(2) + ch.pow(2) + eps
    centre2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre2 / diagonal2 + v * alpha)


class Assignment(NamedTuple):
    """What the assigner gives each anchor point (``B`` images, ``A`` anchors, ``nc`` classes).

    Attributes:
        labels: ``(B, A)`` long, class of the assigned box (meaningless where ``fg_mask`` is False).
        boxes: ``(B, A, 4)`` the assigned box, ``xyxy`` in the units of the inputs.
        scores: ``(B, A, nc)`` float class targets: the normalized alignment in the assigned class,
            0 elsewhere and on background anchors.
        fg_mask: ``(B, A)`` bool, the foreground anchors.
        gt_index: ``(B, A)`` long, index of the assigned box among the image's boxes.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    fg_mask: torch.Tensor
    gt_index: torch.Tensor


class TaskAlignedAssigner:
    """Task-aligned assigner.

    Args:
        topk: candidates kept per box (the package's detection loss uses 10).
        num_classes: number of classes ``nc``.
        alpha: exponent of the class score in the alignment metric.
        beta: exponent of the overlap (CIoU) in the alignment metric.
        strides: the head's strides, ascending, in the units of the boxes; a box side shorter than
            ``strides[1]`` (``strides[0]`` with one level) counts as that long for the "centre inside
            the box" test.
        topk2: optional second, tighter top-k applied after overlaps are resolved (``None``: same as
            ``topk``, no effect).
        eps: margin of the "centre inside" test and guard of the normalization.
        dense: compute the overlaps of every (box, anchor) pair rather than of the candidates only:
            no host synchronisation, more arithmetic. ``None`` (default): dense off the CPU.
    """

    def __init__(
        self,
        topk: int = 10,
        num_classes: int = 80,
        alpha: float = 0.5,
        beta: float = 6.0,
        strides: tuple[float, ...] | list[float] = (8.0, 16.0, 32.0),
        topk2: int | None = None,
        eps: float = 1e-9,
        dense: bool | None = None,
    ):
        if int(topk) < 1:
            raise ValueError(f"TaskAlignedAssigner: topk must be at least 1, got {topk}")
        if not len(strides):
            raise ValueError("TaskAlignedAssigner: strides must not be empty")
        self.topk = int(topk)
        self.topk2 = int(topk2) if topk2 else self.topk
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.strides = [float(s) for s in strides]
        self.min_side = self.strides[1] if len(self.strides) > 1 else self.strides[0]
        self.eps = float(eps)
        self.dense = dense

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(topk={self.topk}, topk2={self.topk2}, num_classes={self.num_classes}, "
            f"alpha={self.alpha}, beta={self.beta}, strides={self.strides})"
        )

    @torch.no_grad()
    def __call__(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        anchor_points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        mask_gt: torch.Tensor,
    ) -> Assignment:
        """Assign boxes to anchors.

        Args:
            pd_scores: ``(B, A, nc)`` predicted class probabilities (after the sigmoid).
            pd_bboxes: ``(B, A, 4)`` predicted boxes, ``xyxy``, same units as ``gt_bboxes``.
            anchor_points: ``(A, 2)`` anchor centres ``(x, y)``, same units.
            gt_labels: ``(B, M, 1)`` classes of the boxes (any integer or float dtype).
            gt_bboxes: ``(B, M, 4)`` boxes ``xyxy``, padded per image to ``M``.
            mask_gt: ``(B, M, 1)`` bool (or 0/1), True for real boxes, False for padding.

        Returns:
            The :class:`Assignment` (nothing is foreground when ``M`` is 0).
        """
        bs, n_boxes = gt_bboxes.shape[:2]
        n_anchors = pd_scores.shape[1]
        device = pd_scores.device
        if n_boxes == 0:
            return Assignment(
                labels=torch.full((bs, n_anchors), self.num_classes, dtype=torch.long, device=device),
                boxes=torch.zeros_like(pd_bboxes),
                scores=torch.zeros_like(pd_scores),
                fg_mask=torch.zeros((bs, n_anchors), dtype=torch.bool, device=device),
                gt_index=torch.zeros((bs, n_anchors), dtype=torch.long, device=device),
            )
        mask_gt = mask_gt.bool()
        labels = gt_labels.long().view(bs, n_boxes).clamp(0)

        in_box = self.centres_in_boxes(anchor_points, gt_bboxes, mask_gt)  # (B, M, A)
        dense = self.dense if self.dense is not None else device.type != "cpu"
        align, overlaps = self.alignment(pd_scores, pd_bboxes, labels, gt_bboxes, in_box, dense=dense)
        mask_pos = self.topk_mask(align, self.topk) & in_box
        gt_index, fg_mask, mask_pos = self.resolve(mask_pos, overlaps, align)

        flat_index = gt_index + torch.arange(bs, device=device)[:, None] * n_boxes  # (B, A)
        target_labels = labels.flatten()[flat_index]
        target_boxes = gt_bboxes.reshape(-1, 4)[flat_index]

        # Normalize per box: its best anchor gets the box's best overlap.
        pos = mask_pos.to(align.dtype)
        align = align * pos
        best_align = align.amax(-1, keepdim=True)  # (B, M, 1)
        best_overlap = (overlaps * pos).amax(-1, keepdim=True)
        norm = (align * best_overlap / (best_align + self.eps)).amax(-2)  # (B, A)
        # The class target: the normalized alignment in the assigned class of a foreground anchor, else 0.
        scores = torch.zeros((bs, n_anchors, self.num_classes), dtype=pd_scores.dtype, device=device)
        scores.scatter_(2, target_labels.unsqueeze(-1), (norm * fg_mask).unsqueeze(-1).to(scores.dtype))
        return Assignment(target_labels, target_boxes, scores, fg_mask, gt_index)

    def centres_in_boxes(
        self, anchor_points: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor
    ) -> torch.Tensor:
        """``(B, M, A)`` bool: the anchor centre lies strictly inside the real box (by more than ``eps``).

        A side of a real box shorter than ``min_side`` (the second stride) is first widened to it about
        the box's centre, so a tiny box still has candidates.
        """
        xy = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
        wh = gt_bboxes[..., 2:] - gt_bboxes[..., :2]
        widen = (wh < self.min_side) & mask_gt
        wh = torch.where(widen, self.min_side, wh)
        lt, rb = xy - wh / 2, xy + wh / 2  # (B, M, 2)
        x, y = anchor_points[:, 0], anchor_points[:, 1]  # (A,)
        # one comparison per side ((B, M, A) each): a reduction over a last axis of 2 is far slower on a CPU
        inside = (x - lt[..., 0:1] > self.eps) & (y - lt[..., 1:2] > self.eps)
        inside &= rb[..., 0:1] - x > self.eps
        inside &= rb[..., 1:2] - y > self.eps
        return inside & mask_gt

    def alignment(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        candidates: torch.Tensor,
        dense: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment metric and overlap ``(B, M, A)`` each, computed on ``candidates`` only (0 elsewhere).

        ``labels`` is ``(B, M)`` long (non-negative); the overlap is the CIoU of box and prediction
        clamped at 0. ``dense`` computes every (box, anchor) pair and masks, which needs no host
        synchronisation (an accelerator's way); otherwise only the candidate pairs, found with one
        ``nonzero`` (a CPU's way: a fraction of the arithmetic).
        """
        bs, n_boxes = labels.shape
        n_anchors = pd_bboxes.shape[1]
        if dense:
            index = labels.unsqueeze(1).expand(-1, n_anchors, -1)  # (B, A, M)
            box_scores = pd_scores.gather(2, index).transpose(1, 2)  # (B, M, A)
            overlaps = bbox_ciou(gt_bboxes.unsqueeze(2), pd_bboxes.unsqueeze(1)).squeeze(-1).clamp_(0)
            zero = overlaps.new_zeros(())
            overlaps = torch.where(candidates, overlaps.to(pd_bboxes.dtype), zero)
            align = torch.where(candidates, box_scores.pow(self.alpha) * overlaps.pow(self.beta), zero)
            return align, overlaps
        b, m, a = candidates.nonzero(as_tuple=True)
        box_scores = pd_scores[b, a, labels[b, m]]
        values = bbox_ciou(gt_bboxes[b, m], pd_bboxes[b, a]).squeeze(-1).clamp_(0).to(pd_bboxes.dtype)
        overlaps = torch.zeros((bs, n_boxes, n_anchors), dtype=pd_bboxes.dtype, device=pd_bboxes.device)
        align = torch.zeros((bs, n_boxes, n_anchors), dtype=values.dtype, device=pd_bboxes.device)
        overlaps[b, m, a] = values
        align[b, m, a] = box_scores.pow(self.alpha) * values.pow(self.beta)
        return align, overlaps

    @staticmethod
    def topk_mask(metric: torch.Tensor, k: int) -> torch.Tensor:
        """``(B, M, A)`` bool marking the ``k`` largest entries of ``metric`` along the last axis."""
        k = min(k, metric.shape[-1])
        index = torch.topk(metric, k, dim=-1, largest=True).indices
        mask = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)
        return mask.scatter_(-1, index, True)

    def resolve(
        self, mask_pos: torch.Tensor, overlaps: torch.Tensor, align: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Give each anchor claimed by several boxes to the box it overlaps most; apply ``topk2``.

        Args:
            mask_pos: ``(B, M, A)`` bool, the candidate pairs after top-k.
            overlaps: ``(B, M, A)`` the clamped CIoU of every in-box pair.
            align: ``(B, M, A)`` the alignment metric.

        Returns:
            ``gt_index`` ``(B, A)`` long, ``fg_mask`` ``(B, A)`` bool, the resolved ``mask_pos`` (bool).
        """
        claims = mask_pos.sum(-2)  # (B, A)
        # no test of "any anchor claimed twice" first: that would read a device value on the host
        best = torch.zeros_like(mask_pos).scatter_(1, overlaps.max(1).indices.unsqueeze(1), True)
        mask_pos = torch.where((claims > 1).unsqueeze(1), best, mask_pos)
        if self.topk2 != self.topk:
            mask_pos = mask_pos & self.topk_mask(align * mask_pos, self.topk2)
            fg_mask = mask_pos.any(-2)
        else:
            fg_mask = claims > 0  # every claimed anchor keeps exactly one box
        # at most one box per anchor now: its index is the sum (an argmax over a middle axis is slow on a CPU)
        box_index = torch.arange(mask_pos.shape[1], device=mask_pos.device).view(1, -1, 1)
        gt_index = torch.where(mask_pos, box_index, 0).sum(-2)
        return gt_index, fg_mask, mask_pos
