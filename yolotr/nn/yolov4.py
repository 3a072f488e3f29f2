"""YOLOv4 modules: CSPDarknet53 stages with Mish, the SPP block, PANet conv stacks and the YOLOv4 head.

Derived from YOLOv4 (Bochkovskiy, Wang and Liao, 2020) as the widely used PyTorch port lays it out
(``YoloBody`` of bubbliiiing/yolov4-pytorch, the layout of its ``yolo4_weights.pth``): the same
convolutions, channel counts, activations and arithmetic, so that a model built from
``cfg/models/yolov4.yaml`` has the published 64,363,101 parameters at 80 classes and its weights load
through :mod:`yolotr.models.yolov4_import`. How it differs:

- The modules are YAML rows of the YOLOv5 grammar, so ``depth_multiple`` and ``width_multiple`` give
  smaller YOLOv4s; a CSP stage includes its stride-2 downsampling convolution.
- The head is a :class:`~yolotr.nn.head.Detect` (anchors buffer in grid units, raw heads
  ``(B, na, H, W, 5 + nc)`` in stride order 8, 16, 32) whose :meth:`YOLOv4Detect.decode` is YOLOv4's:
  ``sigmoid`` offsets with a per-head grid-sensitivity scale for x/y, ``exp`` for w/h.
- The neck and head convolutions take ``Conv``'s default activation, which ``yolov4.yaml`` sets to
  ``nn.LeakyReLU(0.1)`` through its ``activation:`` key; the backbone always uses Mish.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from yolotr.nn.conv import Conv
from yolotr.nn.head import Detect

# exp(tw) is evaluated in float32 and its argument clamped here: exp(20) * 459 px is still finite and
# far larger than any image, while an fp16 exp would overflow for tw > 11.
WH_LOGIT_MAX = 20.0


class MishConv(Conv):
    """Conv2d (no bias) -> BatchNorm2d -> Mish, whatever the model's default activation.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``; padding ``k // 2``. The published ``BasicConv`` of
    CSPDarknet53 (keys ``conv``, ``bn``).
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__(c1, c2, k, s, act=nn.Mish())


class DarknetResidual(nn.Module):
    """Darknet residual unit with Mish: ``x + cv2(cv1(x))``, ``(B, c, H, W) -> (B, c, H, W)``.

    ``cv1`` is a 1x1 ``MishConv`` to ``hidden`` channels, ``cv2`` a 3x3 ``MishConv`` back to ``c``.
    """

    def __init__(self, c: int, hidden: int | None = None):
        super().__init__()
        hidden = c if hidden is None else hidden
        self.cv1 = MishConv(c, hidden, 1)
        self.cv2 = MishConv(hidden, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class CSPDarknetStage(nn.Module):
    """One CSPDarknet53 stage: stride-2 downsampling, then a cross-stage-partial residual stack.

    ``(B, c1, H, W) -> (B, c2, H/2, W/2)``::

        y = cv_down(x)                                   # 3x3 stride 2, c1 -> c2
        main = cv_transition(m(cv_main(y)))              # n residual units
        out = cv_out(cat(main, cv_bypass(y)))            # main branch first, as published

    Args:
        c1: input channels.
        c2: output channels.
        n: residual units.
        first: the first stage of CSPDarknet53, whose split and residual convolutions keep the full
            width ``c2`` (residual hidden width ``c2 // 2``); every other stage splits to ``c2 // 2``
            with residual units at that width.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, first: bool = False):
        super().__init__()
        if n < 1:
            raise ValueError(f"CSPDarknetStage needs n >= 1 residual units, got {n}")
        c_ = c2 if first else c2 // 2
        hidden = c2 // 2 if first else c_
        self.cv_down = MishConv(c1, c2, 3, 2)
        self.cv_bypass = MishConv(c2, c_, 1)
        self.cv_main = MishConv(c2, c_, 1)
        self.m = nn.Sequential(*(DarknetResidual(c_, hidden) for _ in range(n)))
        self.cv_transition = MishConv(c_, c_, 1)
        self.cv_out = MishConv(2 * c_, c2, 1)
        self.n, self.first = n, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv_down(x)
        main = self.cv_transition(self.m(self.cv_main(y)))
        return self.cv_out(torch.cat((main, self.cv_bypass(y)), 1))

    def extra_repr(self) -> str:
        return f"n={self.n}, first={self.first}"


class ConvStack(nn.Sequential):
    """YOLOv4's neck stack: ``n`` convolutions alternating 1x1 to ``c2`` and 3x3 to ``2 * c2``.

    ``(B, c1, H, W) -> (B, c2, H, W)``; ``n`` is odd (3 is ``make_three_conv``, 5 ``make_five_conv``),
    so the stack ends on a 1x1 convolution to ``c2``. Activation: ``Conv``'s default (LeakyReLU(0.1)
    in ``yolov4.yaml``).
    """

    def __init__(self, c1: int, c2: int, n: int = 5):
        if n < 1 or n % 2 == 0:
            raise ValueError(f"ConvStack needs an odd number of convolutions, got {n}")
        layers, c = [], c1
        for j in range(n):
            c_next, k = (c2, 1) if j % 2 == 0 else (2 * c2, 3)
            layers.append(Conv(c, c_next, k))
            c = c_next
        super().__init__(*layers)


class SPPBlock(nn.Module):
    """YOLOv4's SPP block: three convolutions, stride-1 max-pools concatenated with the identity, three
    convolutions.

    ``(B, c1, H, W) -> (B, c2, H, W)``::

        y = cv1(x)                                        # ConvStack(c1, c2, 3)
        out = cv2(cat(pool_k[0](y), pool_k[1](y), ..., y))  # ConvStack((len(k) + 1) * c2, c2, 3)

    ``k`` is the pooling kernels in concatenation order; YOLOv4 concatenates 13, 9, 5, then the
    identity.
    """

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (13, 9, 5)):
        super().__init__()
        if any(int(x) % 2 == 0 for x in k):
            raise ValueError(f"SPPBlock pooling kernels must be odd, got {list(k)}")
        self.k = tuple(int(x) for x in k)
        self.cv1 = ConvStack(c1, c2, 3)
        self.pools = nn.ModuleList(nn.MaxPool2d(x, 1, x // 2) for x in self.k)
        self.cv2 = ConvStack((len(self.k) + 1) * c2, c2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return self.cv2(torch.cat([pool(y) for pool in self.pools] + [y], 1))

    def extra_repr(self) -> str:
        return f"k={self.k}"


class YOLOv4Detect(Detect):
    """YOLOv4 head: per scale a 3x3 Conv-BN-act to twice the input width, then a 1x1 conv with bias.

    Input: ``nl`` feature maps ``(B, ch[i], H_i, W_i)`` in stride order (8, 16, 32 in ``yolov4.yaml``).
    Outputs follow :class:`~yolotr.nn.head.Detect`: training, the raw heads ``(B, na, H_i, W_i, 5 + nc)``;
    eval, ``(decoded (B, sum(na * H_i * W_i), 5 + nc), raw)`` with ``decoded`` in float32 whatever the
    input dtype (see :meth:`decode`).

    Args:
        nc: number of classes.
        anchors: per head, ``[w0, h0, w1, h1, ...]`` in pixels; each head has its own anchors.
        scales: grid-sensitivity scale ``s`` of x/y per head (1.0 in the published PyTorch YOLOv4,
            1.2, 1.1, 1.05 in AlexeyAB's ``yolov4.cfg``).
        ch: input channels per head (appended by the builder).

    Keys: ``cv.{i}`` are the 3x3 convolutions, ``m.{i}`` the 1x1 output convolutions (Detect's).
    """

    def __init__(self, nc: int = 80, anchors=(), scales: Sequence[float] = (), ch: Sequence[int] = ()):
        ch = tuple(ch)
        if not ch or not all(isinstance(c, int) for c in ch):
            raise ValueError(
                "YOLOv4Detect takes [nc, anchors, scales] in the YAML, e.g. [nc, anchors, [1.0, 1.0, 1.0]]"
            )
        if len(scales) != len(anchors) or len(ch) != len(anchors):
            raise ValueError(
                f"YOLOv4Detect needs one scale and one input per anchor set: {len(anchors)} anchor sets, "
                f"{len(scales)} scales, {len(ch)} inputs"
            )
        if any(float(s) < 1.0 for s in scales):
            raise ValueError(f"YOLOv4Detect scales must be >= 1.0, got {list(scales)}")
        super().__init__(nc, anchors, tuple(2 * c for c in ch))
        self.cv = nn.ModuleList(Conv(c, 2 * c, 3) for c in ch)
        self.scales = tuple(float(s) for s in scales)

    def forward(self, x: list[torch.Tensor]):
        return super().forward([cv(xi) for cv, xi in zip(self.cv, x)])

    def decode(self, i: int, raw: torch.Tensor) -> torch.Tensor:
        """Raw head ``(B, na, H, W, 5 + nc)`` -> boxes in input pixels, same shape, float32.

        ``cx = (sigmoid(tx) * s - (s - 1) / 2 + grid_x) * stride``, likewise ``cy`` with ``ty``;
        ``w = exp(tw) * anchor_w`` and ``h = exp(th) * anchor_h`` with head ``i``'s own anchors in pixels;
        objectness and classes through ``sigmoid``. Computed in float32 with ``tw, th`` clamped at
        :data:`WH_LOGIT_MAX`, so ``exp`` cannot overflow under fp16 autocast.
        """
        raw = raw.float()
        grid, anchor_grid = self._grid(i, raw)  # Detect's grid is the cell index minus 0.5
        xy, wh = self.cell_boxes(i, raw[..., :4], anchor_grid).split((2, 2), -1)
        xy = (xy + grid + 0.5) * self.stride[i]
        return torch.cat((xy, wh, raw[..., 4:].sigmoid()), -1)

    def cell_boxes(self, i: int, twh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Boxes relative to their cell, in the units of ``anchors``: ``(..., 4)`` raw -> ``(..., 4)``.

        ``x, y`` are offsets from the cell's top-left corner, in ``(-(s - 1) / 2, (s + 1) / 2)`` for head
        ``i``'s scale ``s``; ``w, h = exp(tw, th) * anchors``. The loss uses this with anchors in grid
        units, the decoder with anchors in pixels, so that what is learned is what is predicted.

        Args:
            i: head index.
            twh: raw ``tx, ty, tw, th`` ``(..., 4)``.
            anchors: anchor sizes ``(..., 2)`` broadcastable against ``twh[..., 2:]``.
        """
        s = self.scales[i]
        xy = twh[..., :2].sigmoid() * s - (s - 1) / 2
        wh = torch.exp(twh[..., 2:4].float().clamp(max=WH_LOGIT_MAX)) * anchors
        return torch.cat((xy.to(wh.dtype), wh), -1)

    def xy_range(self, i: int) -> tuple[float, float]:
        """Offsets from the cell corner that head ``i`` can predict: ``(-(s - 1) / 2, (s + 1) / 2)``.

        A target assigner may use a neighbouring cell only if the target's centre lies inside this range
        from that cell (with ``s = 1``, only the cell that holds the centre).
        """
        s = self.scales[i]
        return -(s - 1) / 2, (s + 1) / 2

    def extra_repr(self) -> str:
        return f"nc={self.nc}, na={self.na}, scales={self.scales}"
