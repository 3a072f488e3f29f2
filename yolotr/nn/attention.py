"""Self-attention blocks over feature maps.

``TransformerLayer``, ``TransformerBlock`` and ``C3TR`` reproduce YOLOv5's modules exactly (names,
parameters, sequence-first token layout), so the stock ``yolov5s-transformer.yaml`` keeps its
parameter count and official weights load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from yolotr.nn.blocks import C3
from yolotr.nn.conv import Conv


class TransformerLayer(nn.Module):
    """YOLOv5's Transformer layer (no LayerNorm): ``(L, B, C) -> (L, B, C)``, sequence first."""

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ma(self.q(x), self.k(x), self.v(x), need_weights=False)[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """YOLOv5's Vision Transformer block: ``(B, c1, H, W) -> (B, c2, H, W)``.

    Tokens are ``(H*W, B, c2)``; a linear layer adds a learned position embedding.
    """

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int):
        super().__init__()
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        p = x.flatten(2).permute(2, 0, 1)
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, h, w)


class C3TR(C3):
    """C3 whose bottleneck stack is one ``TransformerBlock`` of ``n`` layers with 4 heads."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)
