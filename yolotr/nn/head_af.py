"""The anchor-free detection head of YOLOv8 / YOLO11 / YOLO12 and its distribution decoder (DFL).

Per level, a box branch ``cv2`` predicts for each side (left, top, right, bottom) a distribution over
``reg_max`` distances (in cells) and a class branch ``cv3`` predicts class logits; there is no
objectness. The YOLOv8 head's class branch is two 3x3 ``Conv`` (``legacy=True``); YOLO11/12 use
depthwise 3x3 + pointwise pairs, as the ``ultralytics`` package builds them. Attribute names are the
package's, so its checkpoints load by name. It differs from the package's ``Detect`` in its eval output
layout: ``(B, anchors, 4 + nc)`` (anchors last in the package), one row per anchor as yolotr's YOLOv5 head
gives and NMS reads. Its export layout (``export_layout``) is the package's ``(B, 4 + nc, anchors)``: the
exporter transposes, so deployment code written for the package's ONNX files reads ours.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from yolotr.nn.conv import Conv, DWConv
from yolotr.nn.head import reset_grids_after_load
from yolotr.ops.anchors import dist2bbox, make_anchors
from yolotr.ops.boxes import COLUMNS


class DFL(nn.Module):
    """Expected distance of a ``reg_max``-bin distribution: ``(B, 4 * reg_max, A) -> (B, 4, A)``.

    The bin values ``0 .. reg_max - 1`` are a frozen 1x1 conv weight (as in the package, so the
    checkpoint key ``dfl.conv.weight`` exists and counts as a parameter).
    """

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float32).view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class AnchorFreeDetect(nn.Module):
    """Anchor-free head.

    Input: ``nl`` feature maps ``(B, ch[i], H_i, W_i)``.
    Training output: list of maps ``(B, 4 * reg_max + nc, H_i, W_i)``, box distribution first, then
    class logits.
    Eval output: ``(decoded, raw)`` with ``decoded`` ``(B, sum(H_i * W_i), 4 + nc)`` float: ``cx, cy, w,
    h`` in input pixels and sigmoid class scores (levels in stride order, each row-major); with
    ``export = True`` only ``decoded``, which the exporter writes as ``(B, 4 + nc, anchors)``
    (``export_layout``). The output needs NMS (``end2end`` False).

    Args:
        nc: classes.
        reg_max: bins of each side's distance distribution.
        ch: input channels of each level.
        legacy: YOLOv8's class branch (plain 3x3 convs) instead of YOLO11's depthwise one.
    """

    anchor_free = True
    export_layout = COLUMNS  # exported as (B, 4 + nc, anchors), as the ultralytics package does
    nms_iou = (0.7, 0.7)  # default NMS IoU (predict, val): the ultralytics package's (engine/head_mode.py)
    end2end = False  # the decoded output needs NMS

    def __init__(self, nc: int = 80, reg_max: int = 16, ch: tuple[int, ...] = (), legacy: bool = False):
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.legacy = legacy
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        c2 = max(16, ch[0] // 4, 4 * reg_max)
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
        )
        self.cv3 = self._class_branch(tuple(ch), max(ch[0], min(nc, 100)))
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.export = False
        self._anchor_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.register_load_state_dict_post_hook(reset_grids_after_load)

    def _class_branch(self, ch: tuple[int, ...], c3: int) -> nn.ModuleList:
        """The class branch of each level, ``c3`` hidden channels: two 3x3 convs (``legacy``) or two depthwise
        3x3 + 1x1 pairs, then a 1x1 conv to ``nc`` logits."""
        if self.legacy:
            return nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, self.nc, 1)) for x in ch)
        return nn.ModuleList(
            nn.Sequential(
                nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                nn.Conv2d(c3, self.nc, 1),
            )
            for x in ch
        )

    @property
    def class_width(self) -> int:
        """The class branch's hidden channels (``max(ch[0], min(nc, 100))`` when built)."""
        return self.cv3[0][-1].in_channels

    def widen_class_branch(self, c3: int) -> None:
        """Rebuild the class branch with ``c3`` hidden channels (new weights, the class priors set). The package
        keeps a checkpoint's width when it fine-tunes to another class count (80-class yolov8n to 1 class: 80,
        where a built head has 64), so its fine-tuned checkpoints load, and a fine-tune starts, only at that
        width (:func:`yolotr.models.weights.match_class_width`)."""
        self._rebuild_class_branch(c3)
        if bool((self.stride > 0).all()):
            self.initialize_biases()

    def _rebuild_class_branch(self, c3: int) -> None:
        """New class branches at ``c3``, whose BatchNorms keep the old ones' ``eps`` and ``momentum`` (the model's,
        set after it was built; PyTorch's defaults 1e-5 and 0.1 moved every score of a fine-tuned package
        checkpoint by up to 2e-3)."""
        ch = tuple(m[0].conv.in_channels for m in self.cv2)
        device, dtype = self.cv3[0][-1].weight.device, self.cv3[0][-1].weight.dtype
        old = next((m for m in self.cv3.modules() if isinstance(m, nn.BatchNorm2d)), None)  # None once fused
        self.cv3 = self._class_branch(ch, c3).to(device, dtype).train(self.training)
        for m in self.cv3.modules():
            if isinstance(m, nn.BatchNorm2d) and old is not None:
                m.eps, m.momentum = old.eps, old.momentum

    def forward(self, x: list[torch.Tensor]):
        raw = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        if self.training:
            return raw
        decoded = self.decode(raw)
        return decoded if self.export else (decoded, raw)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Training-form maps -> ``(B, anchors, 4 + nc)``: boxes ``cxcywh`` in pixels, sigmoid scores."""
        b = raw[0].shape[0]
        flat = torch.cat([r.view(b, self.no, -1) for r in raw], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        points, strides = self._anchors(raw)
        boxes = dist2bbox(self.dfl(box), points.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((boxes, cls.sigmoid()), 1).transpose(1, 2)

    def _anchors(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points ``(2, A)`` in grid units and strides ``(1, A)``, cached per input shape."""
        key = (tuple(tuple(r.shape[2:4]) for r in raw), raw[0].device, raw[0].dtype)
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if tracing or key not in self._anchor_cache:
            points, strides = (a.transpose(0, 1) for a in make_anchors(raw, self.stride.tolist()))
            if tracing:
                return points, strides
            self._anchor_cache[key] = (points, strides)
        return self._anchor_cache[key]

    def reset_grids(self) -> None:
        """Forget cached anchor points (after strides change or weights load)."""
        self._anchor_cache.clear()

    @torch.no_grad()
    def initialize_biases(self, class_frequency: torch.Tensor | None = None) -> None:
        """The package's priors: box logits 2.0; class logits for ~5 objects per 640 image over ``nc``
        classes at each stride (or the log class frequency when given)."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride.tolist()):
            a[-1].bias.fill_(2.0)
            prior = math.log(5 / self.nc / (640 / s) ** 2)
            if class_frequency is None:
                b[-1].bias[: self.nc] = prior
            else:
                b[-1].bias[: self.nc] = prior + torch.log(class_frequency / class_frequency.mean())

    def _apply(self, fn, recurse=True):
        self.reset_grids()
        return super()._apply(fn, recurse)
