"""YOLOv9's GELAN blocks, with the ``ultralytics`` package's attribute names so its checkpoints load by name.

GELAN (generalised efficient layer aggregation) is a CSP block whose two branches are chained:
``RepNCSPELAN4`` splits ``cv1``'s output in halves, runs the second half through two stages
(``cv2``, then ``cv3`` on ``cv2``'s output) and joins the halves and both stage outputs in ``cv4``.
It differs from ``C2f`` in that each stage is a whole ``RepCSP`` block (a YOLOv5 ``C3`` whose
bottlenecks start with a ``RepConv``) followed by a 3x3 ``Conv``, not a single bottleneck.
``ELAN1`` is the same join with a plain 3x3 ``Conv`` per stage (YOLOv9-t/s).

The down-sampling blocks average-pool by 2x2 with stride 1 first: ``AConv`` then a stride-2 3x3
``Conv``; ``ADown`` splits the channels and takes one half through a stride-2 3x3 ``Conv``, the other
through a stride-2 3x3 max-pool and a 1x1 ``Conv``. ``SPPELAN`` is ``SPPF`` whose three pools are
all kept and joined. ``CBLinear`` / ``CBFuse`` are YOLOv9-e's auxiliary reversible branch: one 1x1
conv split into several outputs, and a sum of those outputs resized to one target map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.blocks import C3
from yolotr.nn.conv import Conv, autopad
from yolotr.nn.csp import KBottleneck
from yolotr.nn.hgnet import RepConv


class RepBottleneck(KBottleneck):
    """``KBottleneck`` whose first conv is a ``RepConv`` (3x3 + 1x1 branches, folded by ``fuse()``):
    ``(B, c1, H, W) -> (B, c2, H, W)``. Keys: ``cv1.conv1``, ``cv1.conv2``, ``cv2``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k=(3, 3), e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, k, e)
        self.cv1 = RepConv(c1, int(c2 * e), k[0], 1)


class RepCSP(C3):
    """YOLOv5's ``C3`` with ``RepBottleneck`` inner blocks: ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(RepBottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))


class RepNCSPELAN4(nn.Module):
    """GELAN block: ``(B, c1, H, W) -> (B, c2, H, W)`` through ``c3`` hidden channels (split in two halves)
    and two ``RepCSP`` stages of ``c4`` channels with ``n`` bottlenecks each; ``cv4`` joins
    ``c3 + 2 * c4`` channels."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 1):
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(RepCSP(c3 // 2, c4, n), Conv(c4, c4, 3, 1))
        self.cv3 = nn.Sequential(RepCSP(c4, c4, n), Conv(c4, c4, 3, 1))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


class ELAN1(RepNCSPELAN4):
    """``RepNCSPELAN4`` whose two stages are single 3x3 ``Conv`` layers (``c4`` channels each):
    ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int):
        nn.Module.__init__(self)
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = Conv(c3 // 2, c4, 3, 1)
        self.cv3 = Conv(c4, c4, 3, 1)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pool with stride 1 (no padding, ``count_include_pad``): ``(B, C, H, W) -> (B, C, H-1, W-1)``."""
    return F.avg_pool2d(x, 2, 1, 0, False, True)


class AConv(nn.Module):
    """Down-sampling by 2: 2x2 average pool (stride 1), then a stride-2 3x3 ``Conv``:
    ``(B, c1, H, W) -> (B, c2, ceil((H-1)/2), ceil((W-1)/2))`` (``H/2`` for even ``H``)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv1(_smooth(x))


class ADown(nn.Module):
    """Down-sampling by 2 in two channel halves, after a 2x2 average pool (stride 1): a stride-2 3x3 ``Conv``
    on one, a stride-2 3x3 max-pool and a 1x1 ``Conv`` on the other, joined: ``(B, c1, H, W) -> (B, c2, H/2,
    W/2)`` (``c2 // 2`` channels from each half)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1)
        self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = _smooth(x).chunk(2, 1)
        return torch.cat((self.cv1(x1), self.cv2(F.max_pool2d(x2, 3, 2, 1))), 1)


class SPPELAN(nn.Module):
    """``cv1`` to ``c3`` channels, three chained ``k x k`` max-pools (stride 1), all four maps joined in ``cv5``:
    ``(B, c1, H, W) -> (B, c2, H, W)``. Differs from ``SPPF`` in its attribute names (``cv2..cv4`` are the
    pools) and in the hidden width being an argument."""

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5):
        super().__init__()
        self.c = c3
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2, self.cv3, self.cv4 = (nn.MaxPool2d(k, 1, k // 2) for _ in range(3))
        self.cv5 = Conv(4 * c3, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(pool(y[-1]) for pool in (self.cv2, self.cv3, self.cv4))
        return self.cv5(torch.cat(y, 1))


class CBLinear(nn.Module):
    """One biased conv whose output is split by channels: ``(B, c1, H, W) -> tuple of (B, c, H, W)`` for each
    ``c`` in ``c2s``. Its output is a tuple; only ``CBFuse`` reads it."""

    def __init__(self, c1: int, c2s: list[int], k: int = 1, s: int = 1, p: int | None = None, g: int = 1):
        super().__init__()
        self.c2s = list(c2s)
        self.conv = nn.Conv2d(c1, sum(self.c2s), k, s, autopad(k, p), groups=g, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.conv(x).split(self.c2s, dim=1)


class CBFuse(nn.Module):
    """Sum of chosen ``CBLinear`` outputs, each resized (nearest) to the last input's size, and that input:
    inputs ``[tuple, ..., (B, C, H, W)]`` with ``idx[i]`` picking from the ``i``-th tuple -> ``(B, C, H, W)``."""

    def __init__(self, idx: list[int]):
        super().__init__()
        self.idx = list(idx)

    def forward(self, xs: list) -> torch.Tensor:
        size = xs[-1].shape[2:]
        resized = [F.interpolate(x[self.idx[i]], size=size, mode="nearest") for i, x in enumerate(xs[:-1])]
        return torch.stack([*resized, xs[-1]]).sum(0)
