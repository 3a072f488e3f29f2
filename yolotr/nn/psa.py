"""YOLO11's position-sensitive attention (``C2PSA``) and YOLO12's area attention (``A2C2f``).

Both keep the ``ultralytics`` package's attribute names (``qkv``, ``proj``, ``pe``, ``ffn``/``mlp``,
``cv1``, ``cv2``, ``m``, ``gamma``) so its checkpoints load by name. They differ from the package's
code in that the attention itself goes through ``F.scaled_dot_product_attention`` (fused kernels,
no materialised ``(N, N)`` matrix where the backend has a memory-efficient kernel); the result is the
same softmax attention with scale ``key_dim ** -0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.conv import Conv
from yolotr.nn.csp import C2f, C3k


class PSAAttention(nn.Module):
    """Multi-head self-attention over a feature map with a depthwise-conv position term (the package's
    ``Attention``): ``(B, C, H, W) -> (B, C, H, W)``.

    ``qkv`` is a 1x1 conv to ``heads * (2 * key_dim + head_dim)`` channels laid out per head as
    ``[q (key_dim), k (key_dim), v (head_dim)]``; ``pe`` is a 3x3 depthwise conv on ``v``.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim**-0.5
        h = dim + self.key_dim * num_heads * 2
        self.qkv = Conv(dim, h, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        n = H * W
        q, k, v = (
            self.qkv(x)
            .view(B, self.num_heads, self.key_dim * 2 + self.head_dim, n)
            .split([self.key_dim, self.key_dim, self.head_dim], dim=2)
        )
        out = F.scaled_dot_product_attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1))
        out = out.transpose(-2, -1).reshape(B, C, H, W) + self.pe(v.reshape(B, C, H, W))
        return self.proj(out)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``(B, heads, N, N)`` (queries x keys, ``N = H * W``) for ``explain``."""
        B, _, H, W = x.shape
        q, k, _ = (
            self.qkv(x)
            .view(B, self.num_heads, self.key_dim * 2 + self.head_dim, H * W)
            .split([self.key_dim, self.key_dim, self.head_dim], dim=2)
        )
        return ((q * self.scale).transpose(-2, -1) @ k).softmax(-1)


class PSABlock(nn.Module):
    """Attention then a 2x MLP of 1x1 convs, each with a residual: ``(B, c, H, W) -> (B, c, H, W)``."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True):
        super().__init__()
        self.attn = PSAAttention(c, attn_ratio=attn_ratio, num_heads=num_heads)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2fPSA(C2f):
    """``C2f`` whose inner blocks are ``PSABlock`` (the package's ``C2fPSA``): ``(B, c1, H, W) -> (B, c1, H, W)``;
    ``c2`` must equal ``c1``, heads ``max(c // 64, 1)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        if c1 != c2:
            raise ValueError(f"C2fPSA keeps its width: input channels {c1} != output channels {c2}")
        super().__init__(c1, c2, n=n, e=e)
        self.m = nn.ModuleList(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n))


class C2PSA(nn.Module):
    """YOLO11's CSP block with ``n`` ``PSABlock`` on one half: ``(B, c1, H, W) -> (B, c1, H, W)``.

    ``c2`` must equal ``c1``; heads ``max(c // 64, 1)`` with ``c = int(c1 * e)``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps its width: input channels {c1} != output channels {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class AreaAttention(nn.Module):
    """YOLO12's area attention (the package's ``AAttn``): ``(B, C, H, W) -> (B, C, H, W)``.

    The ``H * W`` tokens (row-major) are cut into ``area`` consecutive groups (horizontal stripes)
    and each attends within itself; ``pe`` is a 7x7 depthwise conv on ``v``. ``H * W`` must be
    divisible by ``area`` (it is at any input size that is a multiple of 32 for the shipped YAMLs).
    """

    def __init__(self, dim: int, num_heads: int, area: int = 1):
        super().__init__()
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.all_head_dim = self.head_dim * num_heads
        self.qkv = Conv(dim, self.all_head_dim * 3, 1, act=False)
        self.proj = Conv(self.all_head_dim, dim, 1, act=False)
        self.pe = Conv(self.all_head_dim, self.all_head_dim, 7, 1, 3, g=self.all_head_dim, act=False)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v`` each ``(B * area, heads, N / area, head_dim)``."""
        B, _, H, W = x.shape
        n = H * W
        if n % self.area:
            raise ValueError(f"area attention: {H}x{W} = {n} tokens do not split into {self.area} areas")
        qkv = self.qkv(x).flatten(2).transpose(1, 2).reshape(B * self.area, n // self.area, self.num_heads, -1)
        q, k, v = qkv.permute(0, 2, 1, 3).split([self.head_dim] * 3, dim=3)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)

        def to_map(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 2, 1, 3).reshape(B, H, W, self.all_head_dim).permute(0, 3, 1, 2)

        return self.proj(to_map(out) + self.pe(to_map(v)))

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``(B * area, heads, N / area, N / area)`` for ``explain``."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(-1)


class ABlock(nn.Module):
    """Area attention then an MLP of 1x1 convs, each with a residual: ``(B, dim, H, W) -> same``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 1.2, area: int = 1):
        super().__init__()
        self.attn = AreaAttention(dim, num_heads=num_heads, area=area)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1), Conv(hidden, dim, 1, act=False))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class A2C2f(nn.Module):
    """YOLO12's block: ``C2f``-style chain of pairs of ``ABlock`` (``a2=True``) or ``C3k`` blocks.

    ``(B, c1, H, W) -> (B, c2, H, W)``; hidden width ``int(c2 * e)`` must be a multiple of 32 (one head
    per 32 channels). With ``residual`` the output is ``x + gamma * y`` (gamma starts at 0.01).
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        a2: bool = True,
        area: int = 1,
        residual: bool = False,
        mlp_ratio: float = 2.0,
        e: float = 0.5,
        g: int = 1,
        shortcut: bool = True,
    ):
        super().__init__()
        c_ = int(c2 * e)
        if c_ % 32:
            raise ValueError(f"A2C2f hidden width {c_} must be a multiple of 32")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv((1 + n) * c_, c2, 1)
        self.gamma = nn.Parameter(0.01 * torch.ones(c2)) if a2 and residual else None
        self.m = nn.ModuleList(
            nn.Sequential(*(ABlock(c_, c_ // 32, mlp_ratio, area) for _ in range(2)))
            if a2
            else C3k(c_, c_, 2, shortcut, g)
            for _ in range(n)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for m in self.m:
            y.append(m(y[-1]))
        out = self.cv2(torch.cat(y, 1))
        if self.gamma is not None:
            return x + self.gamma.view(1, -1, 1, 1) * out
        return out
