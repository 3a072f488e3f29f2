"""YOLOv10's blocks: ``SCDown``, ``RepVGGDW``, ``CIB``, ``C2fCIB`` and ``PSA``.

Attribute names and layouts are the ``ultralytics`` package's (8.4), so its YOLOv10 checkpoints load by
name. ``PSA`` differs from the package's only in running its attention through
:class:`~yolotr.nn.psa.PSAAttention` (``F.scaled_dot_product_attention``, same result).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.conv import Conv, fuse_conv_and_bn
from yolotr.nn.csp import C2f
from yolotr.nn.psa import PSAAttention


class SCDown(nn.Module):
    """Spatial-channel decoupled downsampling: a 1x1 ``Conv`` to ``c2`` channels, then a depthwise
    ``k x k`` stride-``s`` conv without activation. ``(B, c1, H, W) -> (B, c2, H/s, W/s)``."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, k, s, g=c2, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class RepVGGDW(nn.Module):
    """Depthwise 7x7 plus depthwise 3x3 branch, summed, then SiLU: ``(B, ed, H, W) -> (B, ed, H, W)``.

    :meth:`fuse` re-parametrizes both branches into the one 7x7 conv (after their BatchNorms are folded),
    as the package's ``fuse`` does.
    """

    def __init__(self, ed: int):
        super().__init__()
        self.conv = Conv(ed, ed, 7, 1, 3, g=ed, act=False)
        self.conv1 = Conv(ed, ed, 3, 1, 1, g=ed, act=False)
        self.dim = ed
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "conv1"):  # fused
            return self.act(self.conv(x))
        return self.act(self.conv(x) + self.conv1(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold both branches and their BatchNorms into one biased 7x7 depthwise ``nn.Conv2d``."""
        if not hasattr(self, "conv1"):
            return
        conv = _folded(self.conv)
        conv1 = _folded(self.conv1)
        conv.weight.add_(F.pad(conv1.weight, [2, 2, 2, 2]))
        conv.bias.add_(conv1.bias)
        self.conv = conv
        del self.conv1


def _folded(m: Conv) -> nn.Conv2d:
    """The ``nn.Conv2d`` of a ``Conv`` with its BatchNorm folded in (whether or not already fused)."""
    return fuse_conv_and_bn(m.conv, m.bn) if hasattr(m, "bn") else m.conv


class CIB(nn.Module):
    """Compact inverted block: depthwise 3x3, pointwise to ``2 * c_``, depthwise 3x3 (or ``RepVGGDW`` with
    ``lk``), pointwise to ``c2``, depthwise 3x3; a residual when ``shortcut`` and ``c1 == c2``.
    ``(B, c1, H, W) -> (B, c2, H, W)``, ``c_ = int(c2 * e)``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, lk: bool = False):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = nn.Sequential(
            Conv(c1, c1, 3, g=c1),
            Conv(c1, 2 * c_, 1),
            RepVGGDW(2 * c_) if lk else Conv(2 * c_, 2 * c_, 3, g=2 * c_),
            Conv(2 * c_, c2, 1),
            Conv(c2, c2, 3, g=c2),
        )
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv1(x) if self.add else self.cv1(x)


class C2fCIB(C2f):
    """``C2f`` whose inner blocks are ``CIB`` (``lk``: with a large-kernel ``RepVGGDW``).
    ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = False, lk: bool = False, g: int = 1, e: float = 0.5
    ):
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(CIB(self.c, self.c, shortcut, e=1.0, lk=lk) for _ in range(n))


class PSA(nn.Module):
    """YOLOv10's partial self-attention: one half of ``cv1``'s output goes through attention and a 2x MLP
    (each with a residual), then both halves are joined by ``cv2``. ``(B, c1, H, W) -> (B, c1, H, W)``.

    ``c2`` must equal ``c1``; ``c = int(c1 * e)`` and ``max(c // 64, 1)`` heads (the package's rule: one head
    below 128 channels).
    """

    def __init__(self, c1: int, c2: int, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"PSA keeps its width: input channels {c1} != output channels {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.attn = PSAAttention(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1))
        self.ffn = nn.Sequential(Conv(self.c, self.c * 2, 1), Conv(self.c * 2, self.c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((a, b), 1))
