"""Anchor points of the anchor-free heads (YOLOv8 / YOLO11 / YOLO12) and the distance <-> box rules.

An anchor point is the centre of a grid cell, in grid units of its level: ``(x + 0.5, y + 0.5)``.
A box is predicted as its distances ``(left, top, right, bottom)`` from that point.
"""

from __future__ import annotations

import torch


def make_anchors(
    feats: list[torch.Tensor] | list[tuple[int, int]], strides, offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points and their strides for a list of feature maps.

    Args:
        feats: feature maps ``(B, C, H_i, W_i)`` (or their ``(H_i, W_i)`` sizes).
        strides: the stride of each level (pixels per cell).
        offset: where in the cell the point sits (0.5 = the centre).

    Returns:
        ``points`` ``(sum(H_i * W_i), 2)`` as ``(x, y)`` in grid units, levels in order and each level
        row-major (``y`` outer, ``x`` inner); ``stride`` ``(sum(H_i * W_i), 1)``. Both take the
        feature maps' dtype and device (float32 for plain sizes).
    """
    points, stride_of_point = [], []
    if isinstance(feats[0], torch.Tensor):
        dtype, device = feats[0].dtype, feats[0].device
        sizes = [f.shape[2:4] for f in feats]
    else:
        dtype, device = torch.float32, torch.device("cpu")
        sizes = feats
    for (h, w), s in zip(sizes, strides):
        # sizes stay as traced values under ONNX export (no int()), so a dynamic-size export keeps them dynamic
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_of_point.append(torch.ones_like(xx).view(-1, 1) * float(s))
    return torch.cat(points), torch.cat(stride_of_point)


def dist2bbox(distance: torch.Tensor, points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Distances ``(left, top, right, bottom)`` from ``points`` -> boxes (``cxcywh`` or ``xyxy``).

    ``distance`` is ``(..., 4, ...)`` along ``dim``; ``points`` ``(..., 2, ...)`` broadcastable to it.
    """
    lt, rb = distance.chunk(2, dim)
    x1y1 = points - lt
    x2y2 = points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(points: torch.Tensor, boxes: torch.Tensor, max_distance: float) -> torch.Tensor:
    """``xyxy`` boxes ``(..., 4)`` -> distances ``(left, top, right, bottom)`` from ``points`` ``(..., 2)``,
    clamped to ``[0, max_distance]`` (the largest distance the distribution can express)."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((points - x1y1, x2y2 - points), -1).clamp_(0, max_distance)
