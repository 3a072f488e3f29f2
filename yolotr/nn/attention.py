"""Self-attention blocks over feature maps.

``TransformerLayer``, ``TransformerBlock`` and ``C3TR`` reproduce YOLOv5's modules exactly (names,
parameters, sequence-first token layout), so the stock ``yolov5s-transformer.yaml`` keeps its
parameter count and official weights load by name.

``TransformerC3`` is the variant that trains: batch-first tokens ``(B, H*W, C)``, pre-LayerNorm layers
with ``F.scaled_dot_product_attention``, a GELU MLP, optional position encoding that works at any
input size, and the ``state_dict`` keys of the published TransformerC3 block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class MultiheadSelfAttention(nn.Module):
    """Batch-first multi-head self-attention: ``(B, L, C) -> (B, L, C)``.

    Parameters are named like ``nn.MultiheadAttention``'s (``in_proj_weight (3C, C)``, ``in_proj_bias``,
    ``out_proj``) so published checkpoints load, but the tokens are batch-first and the attention is
    ``F.scaled_dot_product_attention``: no image attends to another image of its batch.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        self.dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and zero biases (``nn.MultiheadAttention``'s init, plus Xavier on out_proj)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, d)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, dropout={self.dropout}"


class TransformerC3Layer(nn.Module):
    """Pre-LayerNorm Transformer encoder layer on ``(B, L, C)`` tokens.

    ``x + drop(attn(norm1(x)))`` then ``x + mlp(norm2(x))`` with a GELU MLP of ratio ``mlp_ratio``; the keys
    ``attn.*``, ``norm1``, ``mlp.0``, ``mlp.2``, ``norm2`` are the published block's.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attn = MultiheadSelfAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        for m in (self.mlp[0], self.mlp[2]):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H*W, C)``, row-major positions."""
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_tokens`: ``(B, H*W, C) -> (B, C, H, W)``."""
    b, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(b, c, h, w)


class TransformerC3(nn.Module):
    """CSP block with a Transformer path: ``(B, c1, H, W) -> (B, c2, H, W)``.

    ``cv3(cat(x, cv2(T(cv1(x)))))`` where ``cv1 = Conv(c1, c2 // 2)``, ``T`` is ``n`` pre-LayerNorm layers on
    the ``(B, H*W, c2 // 2)`` tokens, ``cv2 = Conv(c2 // 2, c2 // 2)`` and ``cv3 = Conv(c1 + c2 // 2, c2)``.
    Differs from the published block in that tokens are batch-first and restored with an explicit
    transpose (that block attends across the batch and scrambles positions with ``reshape_as``).

    Args:
        c1, c2, n: as C3 (the YAML row is read like C3's).
        num_heads: attention heads; must divide ``c2 // 2``.
        pos: position encoding: None (the published block), ``"conv"`` (a depthwise 3x3 convolution
            added to the map before the tokens, so any input size works) or ``"learned"`` (a learned
            ``(1, C, size, size)`` table, bicubically resized to the map).
        dropout: dropout in attention and MLP.
        size: the side of the ``"learned"`` table.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        num_heads: int = 8,
        pos: str | None = None,
        dropout: float = 0.0,
        size: int = 20,
    ):
        super().__init__()
        c_ = c2 // 2
        if pos not in (None, "conv", "learned"):
            raise ValueError(f"pos={pos!r}: expected None, 'conv' or 'learned'")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.transformer = nn.Sequential(*(TransformerC3Layer(c_, num_heads, 4.0, dropout) for _ in range(n)))
        self.cv2 = Conv(c_, c_, 1, 1)
        self.cv3 = Conv(c1 + c_, c2, 1, 1)
        self.pos_kind = pos
        if pos == "conv":
            self.pos = nn.Conv2d(c_, c_, 3, 1, 1, groups=c_)
            nn.init.zeros_(self.pos.weight)
            nn.init.zeros_(self.pos.bias)
        elif pos == "learned":
            self.pos = nn.Parameter(torch.zeros(1, c_, size, size))
            nn.init.trunc_normal_(self.pos, std=0.02)

    def position(self, y: torch.Tensor) -> torch.Tensor:
        """The position encoding to add to ``y`` ``(B, C, H, W)``, or 0 without one."""
        if self.pos_kind == "conv":
            return self.pos(y)
        if self.pos_kind == "learned":
            h, w = y.shape[-2:]
            pos = self.pos if self.pos.shape[-2:] == (h, w) else F.interpolate(self.pos, (h, w), mode="bicubic")
            return pos.to(y.dtype)
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        h, w = y.shape[-2:]
        y = to_map(self.transformer(to_tokens(y + self.position(y))), h, w)
        return self.cv3(torch.cat((x, self.cv2(y)), 1))
