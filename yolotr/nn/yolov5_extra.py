"""YOLOv5's less used modules: ``MixConv2d``, ``CrossConv``, ``C3SPP``, ``Contract`` and ``Expand``.

YOLOv5's ``parse_model`` builds them although no shipped YAML uses them; they are here with YOLOv5's
names, arguments and ``state_dict`` keys so that a YOLOv5-grammar YAML using one builds as YOLOv5 builds
it and an official checkpoint pickled with one loads. The argument rules are YOLOv5's
(:mod:`yolotr.nn.registry`): ``MixConv2d``, ``CrossConv`` and ``C3SPP`` take ``[c1, c2 * width, ...]``
(``C3SPP`` without the repeat count: a row's ``number`` repeats the whole block), ``Contract`` and
``Expand`` take ``[gain]`` and change the channel count by ``gain ** 2``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from yolotr.nn.blocks import C3, SPP
from yolotr.nn.conv import Conv


def mixconv_split(c2: int, k: tuple[int, ...], equal_ch: bool = True) -> list[int]:
    """Output channels of each of ``MixConv2d``'s kernels, as YOLOv5 splits ``c2``.

    ``equal_ch``: ``c2`` evenly, the first groups taking the remainder (``floor(linspace(0, n - 1e-6, c2))``
    labels each channel with its group, in float32 as YOLOv5 computes it). Otherwise channels in inverse
    proportion to ``k ** 2`` (equal weights per group): the least-squares solution of that system, rounded,
    which is how YOLOv5 gets it (an exact half can round either way, so the solver is the same one).
    """
    n = len(k)
    if equal_ch:
        group = torch.linspace(0, n - 1e-6, c2).floor()
        return [int((group == g).sum()) for g in range(n)]
    a = np.eye(n + 1, n, k=-1)
    a -= np.roll(a, 1, axis=1)
    a *= np.array(k) ** 2
    a[0] = 1
    return [int(c) for c in np.linalg.lstsq(a, [c2] + [0] * n, rcond=None)[0].round()]


class MixConv2d(nn.Module):
    """Mixed depth-wise convolution (MixNet): one bias-free conv per kernel size in ``k``, each to its share of
    ``c2`` (:func:`mixconv_split`) with ``groups = gcd(c1, share)``, concatenated, then BatchNorm2d and SiLU.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``. Unlike ``Conv``, the activation is always SiLU (a YAML's
    ``activation:`` does not change it), as in YOLOv5. Keys: ``m.{i}.weight``, ``bn.*``.
    """

    def __init__(self, c1: int, c2: int, k=(1, 3), s: int = 1, equal_ch: bool = True):
        super().__init__()
        k = tuple(k) if isinstance(k, list | tuple) else (k,)
        split = mixconv_split(c2, k, equal_ch)
        if sum(split) != c2 or min(split) < 1:
            kind = "equal" if equal_ch else "equal-weight"
            raise ValueError(
                f"MixConv2d cannot split {c2} channels into {kind} groups for kernels {k}: the shares are {split} "
                "(YOLOv5 builds this and fails at the first forward pass); choose other kernels or channels"
            )
        self.m = nn.ModuleList(
            nn.Conv2d(c1, c, ks, s, ks // 2, groups=math.gcd(c1, c), bias=False) for ks, c in zip(k, split)
        )
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([m(x) for m in self.m], 1)))


class CrossConv(nn.Module):
    """Cross convolution: a ``1 x k`` ``Conv`` (stride ``(1, s)``) then a ``k x 1`` one (stride ``(s, 1)``,
    groups ``g``), with a residual when ``shortcut`` and ``c1 == c2``; hidden width ``int(c2 * e)``.

    ``(B, c1, H, W) -> (B, c2, H/s, W/s)``. It is :class:`yolotr.nn.csp.KBottleneck` with kernels
    ``((1, k), (k, 1))`` plus a stride, and YOLOv5's argument order (``shortcut`` last, off by default).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, e: float = 1.0, shortcut: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, (1, k), (1, s))
        self.cv2 = Conv(c_, c2, (k, 1), (s, 1), g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3SPP(C3):
    """YOLOv5's ``C3`` whose inner branch ``m`` is one ``SPP(c_, c_, k)`` instead of bottlenecks.

    ``(B, c1, H, W) -> (B, c2, H, W)``; ``c_ = int(c2 * e)``. The pooling sizes come before ``n``, which
    only sizes the bottlenecks that ``C3`` builds and this block replaces (YOLOv5's builder does not pass
    the row's repeat count to it).
    """

    def __init__(self, c1: int, c2: int, k=(5, 9, 13), n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = SPP(int(c2 * e), int(c2 * e), tuple(k))


class _GainReshape(nn.Module):
    """A parameter-free move of pixels between space and channels by an integer ``gain`` (YOLOv5's row ``[gain]``)."""

    def __init__(self, gain: int = 2):
        super().__init__()
        self.gain = gain


class Contract(_GainReshape):
    """Space-to-depth by ``gain``: ``(B, C, H, W) -> (B, C * gain**2, H / gain, W / gain)``.

    Like ``Focus``'s slicing, but the output channels are ordered by offset ``(dy, dx)`` then channel, as
    YOLOv5 orders them, and there is no convolution. ``H`` and ``W`` must be multiples of ``gain``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(b, c * s * s, h // s, w // s)


class Expand(_GainReshape):
    """Depth-to-space by ``gain``, the inverse of :class:`Contract`:
    ``(B, C, H, W) -> (B, C / gain**2, H * gain, W * gain)``. ``C`` must be a multiple of ``gain ** 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.gain
        x = x.view(b, s, s, c // s**2, h, w).permute(0, 3, 4, 1, 5, 2).contiguous()
        return x.view(b, c // s**2, h * s, w * s)
