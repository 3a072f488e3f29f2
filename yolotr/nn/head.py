"""Detection heads: YOLOv5's ``Detect`` (and the decode rule shared by its subclasses)."""

from __future__ import annotations

import math

import torch
from torch import nn

from yolotr.ops.boxes import ROWS


def reset_grids_after_load(head: nn.Module, _incompatible_keys) -> None:
    """``load_state_dict`` post-hook of the heads: forget the cached grids (a function, not a lambda, so that
    a model pickles whole: ``torch.save(model)``, ``pickle``, worker processes)."""
    head.reset_grids()


class Detect(nn.Module):
    """YOLOv5 detection head: one 1x1 conv per scale, anchors as a buffer in grid units.

    Input: a list of ``nl`` feature maps ``(B, ch[i], H_i, W_i)``.
    Training output: list of raw maps ``(B, na, H_i, W_i, no)`` with ``no = nc + 5``.
    Eval output: ``(decoded, raw)`` where ``decoded`` is ``(B, sum(na*H_i*W_i), no)`` float with
    ``cx, cy, w, h`` in input pixels, objectness and class probabilities (sigmoid), heads in
    stride order and each head in ``(anchor, y, x)`` order. Exported in the same layout (``export_layout``,
    YOLOv5's ``(B, anchors, 5 + nc)``); the output needs NMS (``end2end`` False).

    ``anchors`` holds anchor sizes divided by the stride once the model has measured its strides
    (:meth:`yolotr.models.detection.DetectionModel`), as in YOLOv5, so official weights load.
    """

    export_layout = ROWS  # exported as (B, anchors, 5 + nc), as YOLOv5 does
    end2end = False  # the decoded output needs NMS
    nms_iou = (0.45, 0.6)  # default NMS IoU (predict, val): YOLOv5's detect.py and val.py (engine/head_mode.py)

    def __init__(self, nc: int = 80, anchors=(), ch: tuple[int, ...] = ()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.register_buffer("stride", torch.ones(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.export = False
        self.register_load_state_dict_post_hook(reset_grids_after_load)

    def forward(self, x: list[torch.Tensor]):
        raw = []
        for i in range(self.nl):
            y = self.m[i](x[i])
            bs, _, ny, nx = y.shape
            raw.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        if self.training:
            return raw
        decoded = torch.cat([self.decode(i, r).view(r.shape[0], -1, self.no) for i, r in enumerate(raw)], 1)
        return decoded if self.export else (decoded, raw)

    def decode(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        """Raw head ``(B, na, H, W, no)`` -> boxes in input pixels, same shape (YOLOv5 v6+ rule)."""
        grid, anchor_grid = self._grid(i, raw)
        xy, wh, conf = raw.sigmoid().split((2, 2, self.nc + 1), 4)
        xy = (xy * 2 + grid) * self.stride[i]
        wh = (wh * 2) ** 2 * anchor_grid
        return torch.cat((xy, wh, conf), 4)

    def cell_boxes(self, i: int, twh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes relative to their cell, in the units of ``anchors``: raw ``(..., 4)`` -> ``(..., 4)``.

        ``x, y = 2 * sigmoid(t) - 0.5`` (offsets from the cell corner, in ``(-0.5, 1.5)``) and
        ``w, h = (2 * sigmoid(t)) ** 2 * anchors``. The loss calls this with anchors in grid units;
        subclasses with another parametrization override it together with :meth:`decode`.
        """
        xy = twh[..., :2].sigmoid() * 2 - 0.5
        wh = (twh[..., 2:4].sigmoid() * 2) ** 2 * anchors
        return torch.cat((xy, wh), -1)

    def xy_range(self, i: int) -> tuple[float, float]:
        """Offsets from the cell corner that head ``i`` can predict (YOLOv5: ``(-0.5, 1.5)``)."""
        return -0.5, 1.5

    def _grid(self, i: int, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets ``(1, na, H, W, 2)`` (minus 0.5) and anchor sizes in pixels, cached per shape."""
        ny, nx = raw.shape[2:4]
        key = (i, ny, nx, raw.device, raw.dtype)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or key not in self._grids:
            d, t = raw.device, raw.dtype
            shape = 1, self.na, ny, nx, 2
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t), indexing="ij"
            )
            grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
            anchor_grid = (self.anchors[i] * self.stride[i]).to(t).view(1, self.na, 1, 1, 2).expand(shape)
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                return grid, anchor_grid
            self._grids[key] = (grid, anchor_grid)
        return self._grids[key]

    def reset_grids(self) -> None:
        """Forget cached grids (after anchors or strides change)."""
        self._grids.clear()

    @torch.no_grad()
    def initialize_biases(self, class_frequency: torch.Tensor | None = None) -> None:
        """YOLOv5 prior: objectness for ~8 objects per 640 image, class probability ~0.6/nc."""
        for mi, s in zip(self.m, self.stride.tolist()):
            b = mi.bias.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            if class_frequency is None:
                b[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))
            else:
                b[:, 5 : 5 + self.nc] += torch.log(class_frequency / class_frequency.sum())

    def _apply(self, fn, recurse=True):
        self.reset_grids()
        return super()._apply(fn, recurse)
