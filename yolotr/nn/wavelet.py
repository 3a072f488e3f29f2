"""Haar wavelet downsampling (HWD): a lossless stride-2 reduction followed by a 1x1 Conv.

The one-level Haar transform is a fixed depthwise 2x2 convolution with stride 2 whose weight is a
registered buffer, so it follows the module's device and the input dtype (autocast, ``.half()``),
runs in ``channels_last`` and exports to ONNX as a plain ``Conv``. Its bands and their order are
``pytorch_wavelets.DWTForward(J=1, wave="haar", mode="zero")``'s: ``cat([LL, D0, D1, D2])`` with
``D0..D2 = yH[0][:, :, 0..2]``.

Odd sizes: the map is zero-padded by one row at the bottom and/or one column at the right, so the
output is ``ceil(H / 2) x ceil(W / 2)`` and equals ``DWTForward(mode="zero")`` there too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.conv import Conv


def haar_filters() -> torch.Tensor:
    """The four 2x2 analysis filters ``(4, 2, 2)`` float32 in the order LL, D0, D1, D2.

    Built as outer products of ``[1, 1] / sqrt(2)`` and ``[1, -1] / sqrt(2)`` (rows x columns), in float32
    like ``pytorch_wavelets``, so both round the same way.
    """
    s = torch.tensor(1.0 / math.sqrt(2.0), dtype=torch.float32)
    lo, hi = torch.stack((s, s)), torch.stack((s, -s))
    return torch.stack((torch.outer(lo, lo), torch.outer(hi, lo), torch.outer(lo, hi), torch.outer(hi, hi)))


class HaarDWT(nn.Module):
    """One-level 2-D Haar transform: ``(B, C, H, W) -> (B, 4C, ceil(H/2), ceil(W/2))``, bands ``[LL, D0, D1, D2]``.

    Each band holds C channels in the input's channel order. Output dtype is the input's.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", haar_filters().repeat(channels, 1, 1).unsqueeze(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"HaarDWT expects {self.channels} channels, got {c}")
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        y = F.conv2d(x, self.weight.to(x.dtype), stride=2, groups=c)  # (B, C*4, h, w): channel-major
        return y.unflatten(1, (c, 4)).transpose(1, 2).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class HWD(nn.Module):
    """Haar wavelet downsampling: ``(B, c1, H, W) -> (B, c2, ceil(H/2), ceil(W/2))``.

    ``conv(cat([LL, D0, D1, D2]))`` with ``conv = Conv(4 * c1, c2, 1, 1)`` (1x1 Conv-BN-act); its keys are the
    published module's (``conv.conv.weight``, ``conv.bn.*``). Read like ``Conv`` in YAML rows:
    ``[-1, 1, HWD, [c2]]`` with ``c2`` width-scaled.

    Both steps are linear before the BatchNorm, so the forward folds the fixed Haar filters into the 1x1
    weight and runs one ``c1 -> c2`` 2x2 stride-2 convolution: the same result as ``conv(dwt(x))``
    without the ``4 * c1``-channel intermediate map. :meth:`transform` gives the bands themselves.
    """

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.c1, self.c2 = c1, c2
        self.dwt = HaarDWT(c1)
        self.conv = Conv(4 * c1, c2, 1, 1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The Haar bands ``(B, 4 * c1, ceil(H/2), ceil(W/2))`` that the 1x1 Conv reads."""
        return self.dwt(x)

    def folded_weight(self) -> torch.Tensor:
        """``(c2, c1, 2, 2)``: the 1x1 weight over the bands composed with the Haar filters."""
        w = self.conv.conv.weight.view(self.c2, 4, self.c1)
        filters = self.dwt.weight.view(self.c1, 4, 2, 2)[0].to(w.dtype)  # (4, 2, 2), the same for every channel
        return torch.einsum("obc,bkl->ockl", w, filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        y = F.conv2d(x, self.folded_weight(), self.conv.conv.bias, stride=2)
        if hasattr(self.conv, "bn"):  # absent after DetectionModel.fuse() folded it into conv.conv
            y = self.conv.bn(y)
        return self.conv.act(y)

    def extra_repr(self) -> str:
        return f"c1={self.c1}, c2={self.c2}"
