"""Hungarian matching of DETR queries to targets, and the ``cxcywh`` IoU / GIoU it and the set loss use.

Every image's queries are matched one-to-one to its targets by minimum total cost (scipy's
``linear_sum_assignment``); the cost of a (query, target) pair is
``class * focal(p) + bbox * L1(boxes) + giou * (1 - GIoU)``, ``p`` the query's probability of the target's class
and ``focal(p) = alpha (1 - p)^gamma (-log(p + 1e-8)) - (1 - alpha) p^gamma (-log(1 - p + 1e-8))``.
Numerically the ``ultralytics`` package's ``HungarianMatcher`` (8.4: gains 2 / 5 / 2 as its RT-DETR loss sets
them, alpha 0.25, gamma 2); costs that are NaN or infinite count as 0.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment


def iou_cxcywh(a: torch.Tensor, b: torch.Tensor, giou: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or GIoU) of broadcastable ``(..., 4)`` normalized ``cx, cy, w, h`` boxes -> ``(...)``.

    The union gets ``eps`` (and with ``giou`` the enclosing area too), as in the package's ``bbox_iou``."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a.unbind(-1), b.unbind(-1)
    a1x, a2x, a1y, a2y = ax - aw / 2, ax + aw / 2, ay - ah / 2, ay + ah / 2
    b1x, b2x, b1y, b2y = bx - bw / 2, bx + bw / 2, by - bh / 2, by + bh / 2
    inter = (a2x.minimum(b2x) - a1x.maximum(b1x)).clamp(0) * (a2y.minimum(b2y) - a1y.maximum(b1y)).clamp(0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    if not giou:
        return iou
    enclosing = (a2x.maximum(b2x) - a1x.minimum(b1x)) * (a2y.maximum(b2y) - a1y.minimum(b1y)) + eps
    return iou - (enclosing - union) / enclosing


class HungarianMatcher:
    """One-to-one assignment of queries to targets per image.

    Args:
        cost_gain: weights of the ``class``, ``bbox`` (L1) and ``giou`` costs.
        alpha, gamma: of the focal class cost.
    """

    def __init__(self, cost_gain: dict[str, float] | None = None, alpha: float = 0.25, gamma: float = 2.0):
        self.cost_gain = dict(cost_gain or {"class": 2.0, "bbox": 5.0, "giou": 2.0})
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def cost(self, boxes: torch.Tensor, logits: torch.Tensor, gt_boxes: torch.Tensor, gt_cls: torch.Tensor):
        """Cost ``(B, Q, M)`` float32 of every query against each image's targets padded to ``M``: ``boxes``
        ``(B, Q, 4)``, ``logits`` ``(B, Q, nc)``, ``gt_boxes`` ``(B, M, 4)``, ``gt_cls`` ``(B, M)`` int64."""
        p = logits.float().sigmoid().gather(2, gt_cls[:, None].expand(-1, logits.shape[1], -1))  # (B, Q, M)
        positive = self.alpha * (1 - p) ** self.gamma * -(p + 1e-8).log()
        negative = (1 - self.alpha) * p**self.gamma * -(1 - p + 1e-8).log()
        boxes = boxes.float()
        l1 = (boxes[:, :, None] - gt_boxes[:, None]).abs().sum(-1)
        giou = iou_cxcywh(boxes[:, :, None], gt_boxes[:, None], giou=True)
        gain = self.cost_gain
        total = gain["class"] * (positive - negative) + gain["bbox"] * l1 + gain["giou"] * (1.0 - giou)
        return total.nan_to_num(0.0, 0.0, 0.0)

    def __call__(
        self, boxes: torch.Tensor, logits: torch.Tensor, gt_boxes: torch.Tensor, gt_cls: torch.Tensor, groups: list[int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image ``(query indices, target indices)`` int64 on the CPU; target indices count in the
        concatenated ``gt_boxes`` ``(N, 4)`` / ``gt_cls`` ``(N,)`` (image-ordered, ``groups`` per image)."""
        b = boxes.shape[0]
        empty = torch.zeros(0, dtype=torch.long)
        if sum(groups) == 0:
            return [(empty, empty) for _ in range(b)]
        padded_boxes = torch.nn.utils.rnn.pad_sequence(gt_boxes.float().split(groups), batch_first=True)
        padded_cls = torch.nn.utils.rnn.pad_sequence(gt_cls.split(groups), batch_first=True)
        cost = self.cost(boxes.detach(), logits.detach(), padded_boxes, padded_cls).cpu()
        matches, offset = [], 0
        for image, n in enumerate(groups):
            rows, cols = linear_sum_assignment(cost[image, :, :n].numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long) + offset))
            offset += n
        return matches
