"""Swin Transformer V2 blocks for YOLO feature maps.

``SwinV2_CSPB`` is the CSP block of the published YOLOv5 + Swin V2 tutorials (its ``state_dict`` keys
are theirs, so checkpoints trained with that code load by name). Inside, ``SwinV2Block`` stacks
``SwinV2Layer``: scaled cosine window attention with a continuous position bias, post-norm residuals
and shifted windows on every second layer.

How it differs from the published code (on the CPU in fp32 the forward does the published arithmetic in
the published order, and reproduces the literal code's outputs exactly in our tests; it agrees to 1e-10
in float64 with timm's ``WindowAttention`` of Swin V2):

- in fp32/fp64 on the CPU the attention is the published order of operations (normalize q and k,
  ``q @ k^T``, times the clamped logit scale, plus ``16 * sigmoid(cpb_mlp(...))`` and the shift mask,
  softmax, ``@ v``) in autograd functions with hand-written backwards: the ``(B, nW, heads, N, N)``
  logits are allocated once forward and once backward (scale, bias and softmax in place; the softmax
  gradient formed in place), the normalization's backward allocates one tensor instead of four, and
  the three head gradients are written straight into the packed ``qkv`` layout. A zero vector (the key
  of a padded token) normalizes to 0 with a zero gradient instead of ``1 / eps`` (which overflows fp16);
- in bf16/fp16 (autocast), with attention dropout, and on CUDA the attention runs through
  ``F.scaled_dot_product_attention``: q and k are normalized in at least float32, the logit scale is
  folded into q, ``scale=1.0``, bias plus shift mask is the float ``attn_mask``, windows and heads share
  one dimension so the mask broadcasts over the batch;
- the shift mask is built once per padded feature-map size and device and cached, and in eval mode
  without autograd the position bias is cached until the ``cpb_mlp`` weights change;
- the layers keep the map as ``(B, H, W, C)`` between them (one permute in, one out); zero-padding,
  the roll and the window partition are one gather (:func:`window_index`, cached per map size), and
  the way back (reverse, roll back, crop) another, each the other's gradient; the MLP and norms run on
  the cropped map only;
- ``relative_coords_table`` and ``relative_position_index`` are non-persistent buffers rebuilt by
  :meth:`WindowAttentionV2.set_window_size`; published checkpoints that contain them still load with
  ``strict=True`` (the stored copies are dropped, and a mismatch with ours is logged).

As in the published layer, a map whose sides are not multiples of the window is zero-padded on the
right and bottom, the padded zeros take part in attention (they are not masked), the shift mask is
computed on the padded size, and the result is cropped back. Masked logits get ``-100``, not
``-inf``, as published.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.conv import Conv
from yolotr.nn.swin_ops import (
    MASK_VALUE,
    _CosineAttention,
    _FromWindows,
    _gather_windows,
    _SplitHeads,
    _ToWindows,
    _tracing,
    _UnitVectors,
    at_least_float32,
    relative_coords_table,
    relative_position_index,
    shift_mask,
    unit_vectors,
    window_index,
    window_partition,
    window_reverse,
)

__all__ = [
    "LOGIT_SCALE_MAX",
    "MASK_VALUE",
    "SwinMlp",
    "SwinV2Block",
    "SwinV2Layer",
    "SwinV2_CSPB",
    "WindowAttentionV2",
    "relative_coords_table",
    "relative_position_index",
    "shift_mask",
    "unit_vectors",
    "window_index",
    "window_partition",
    "window_reverse",
]
LOGGER = logging.getLogger("yolotr")

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)


class WindowAttentionV2(nn.Module):
    """Scaled cosine multi-head attention inside windows with a continuous position bias (Swin V2).

    ``(B, nW, N, C) -> (B, nW, N, C)`` with ``N = window**2`` tokens per window. Same parameter names
    as the published ``WindowAttention_v2``: ``logit_scale (heads, 1, 1)``, ``q_bias``, ``v_bias``,
    ``qkv`` (no bias; k has none), ``proj``, ``cpb_mlp`` (2 -> 512 -> heads).

    Args:
        dim: channels C.
        num_heads: heads; must divide ``dim``.
        window: window side.
        pretrained_window: window side the coordinate table is normalized by (0: ``window``).
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int = 7,
        pretrained_window: int = 0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must be >= 1 and divide dim={dim}")
        if window < 2:
            raise ValueError(f"window={window} must be >= 2")
        self.dim, self.num_heads, self.attn_drop = dim, num_heads, attn_drop
        self.logit_scale = nn.Parameter(torch.empty(num_heads, 1, 1))
        self.q_bias = nn.Parameter(torch.empty(dim))
        self.v_bias = nn.Parameter(torch.empty(dim))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.set_window_size(window, pretrained_window)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None
        self.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters kept out of weight decay, as the published Swin V2 and timm do: the logit
        scale and the position-bias MLP (``cpb_mlp``) besides biases."""
        return {name for name, _ in self.named_parameters() if name == "logit_scale" or name.startswith("cpb_mlp.")}

    def set_window_size(self, window: int, pretrained_window: int = 0) -> None:
        """(Re)build the constant tables for ``window`` (non-persistent buffers, on the current device)."""
        device = self.qkv.weight.device
        self.window, self.pretrained_window = window, pretrained_window
        self.register_buffer(
            "relative_coords_table", relative_coords_table(window, pretrained_window).to(device), persistent=False
        )
        self.register_buffer("relative_position_index", relative_position_index(window).to(device), persistent=False)
        self._bias_cache = None

    def reset_parameters(self) -> None:
        """Linear weights ~ truncated normal(0.02), biases 0, logit scale log(10), as Swin V2 initializes them."""
        for m in (*self.cpb_mlp, self.qkv, self.proj):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.logit_scale.fill_(math.log(10.0))
        nn.init.zeros_(self.q_bias)
        nn.init.zeros_(self.v_bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors):
        for name in ("relative_coords_table", "relative_position_index"):
            stored = state_dict.pop(prefix + name, None)
            ours = getattr(self, name)
            if stored is not None and (stored.shape != ours.shape or not torch.allclose(stored.to(ours), ours)):
                LOGGER.warning(
                    "%s%s in the checkpoint differs from the one rebuilt for window %d; using ours",
                    prefix,
                    name,
                    self.window,
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected, errors)

    def position_bias(self) -> torch.Tensor:
        """``16 * sigmoid(cpb_mlp(table))`` gathered to ``(heads, N, N)``, float32 or float64 with float64 weights.

        Cached when no gradient is needed (eval, ``no_grad``) until the ``cpb_mlp`` weights change; not while an
        export traces the layer (TorchScript's trace check traces twice: a cache filled by the first run made the
        second graph differ, and every Swin V2 model failed to export).
        """
        params = tuple(self.cpb_mlp.parameters())
        cacheable = not _tracing() and not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
        key = tuple((p.data_ptr(), p._version, p.device) for p in params)
        if cacheable and self._bias_cache is not None and self._bias_cache[0] == key:
            return self._bias_cache[1]
        with torch.autocast(self.relative_coords_table.device.type, enabled=False):
            # at least float32 whatever the module dtype: 16 * sigmoid saturates, and the bias adds to
            # logits up to 100; a float64 module stays float64
            dtype = at_least_float32(params[0].dtype)
            w0, b0, w2 = (p.to(dtype) for p in params)
            hidden = F.relu(F.linear(self.relative_coords_table.to(dtype), w0, b0))
            table = F.linear(hidden, w2).view(-1, self.num_heads)
        n = self.window * self.window
        bias = 16.0 * torch.sigmoid(table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1))
        bias = bias.contiguous()
        self._bias_cache = (key, bias) if cacheable else None
        return bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, nW, N, C)``; ``mask`` ``(nW, N, N)`` additive float or None. Returns ``(B, nW, N, C)``."""
        b, nw, n, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        tracing = _tracing()
        if tracing:
            q, k, v = qkv.view(b, nw, n, 3, heads, d).permute(3, 0, 1, 4, 2, 5).unbind(0)
        else:
            q, k, v = _SplitHeads.apply(qkv, heads)  # each (B, nW, heads, N, d)
        # at least float32 for the cosine: the norms of bf16/fp16 vectors lose digits, and the logit scale
        # reaches 100; float64 inputs stay float64 (gradcheck, oracles)
        dtype = at_least_float32(v.dtype)
        scale = torch.clamp(self.logit_scale.to(dtype), max=LOGIT_SCALE_MAX).exp()
        attn_mask = self.position_bias()  # (heads, N, N)
        if mask is not None:
            attn_mask = attn_mask + mask.unsqueeze(1)  # (nW, heads, N, N)
        dropout = self.attn_drop if self.training else 0.0
        if tracing and v.dtype in (torch.float32, torch.float64):
            # the published order as plain ops, for export (the same values as the branch below)
            logits = unit_vectors(q) @ unit_vectors(k).transpose(-2, -1) * scale + attn_mask
            out = torch.softmax(logits, dim=-1) @ v
        elif v.dtype in (torch.float32, torch.float64) and not dropout and v.device.type == "cpu":
            # the published order (normalize, q @ k^T, times the scale, plus the bias), without SDPA: on the
            # CPU a float mask sends SDPA to its math path, which allocates the logits several times over
            # (on CUDA its fused kernels never hold them; bf16/fp16 keep SDPA's float32 softmax statistics)
            q, k = _UnitVectors.apply(q, 1e-12), _UnitVectors.apply(k, 1e-12)
            out = _CosineAttention.apply(q, k, scale, attn_mask, v)
        else:
            q = unit_vectors(q.to(dtype), scale).to(v.dtype)
            k = unit_vectors(k.to(dtype)).to(v.dtype)
            # windows and heads share one dimension, (B, nW * heads, N, d), so the (1, nW * heads, N, N)
            # mask broadcasts over the batch and SDPA can use its fused kernel
            out = F.scaled_dot_product_attention(
                q.view(b, nw * heads, n, d),
                k.view(b, nw * heads, n, d),
                v.view(b, nw * heads, n, d),
                attn_mask=attn_mask.expand(nw, heads, n, n).reshape(1, nw * heads, n, n).to(v.dtype),
                dropout_p=dropout,
                scale=1.0,
            )
        return self.proj_drop(self.proj(out.view(b, nw, heads, n, d).transpose(2, 3).reshape(b, nw, n, c)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}"


class SwinMlp(nn.Module):
    """``fc1 -> act -> drop -> fc2 -> drop`` on ``(..., C)`` tokens (published ``Mlp_v2`` names)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.SiLU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinV2Layer(nn.Module):
    """One Swin V2 layer on a channels-last map: ``(B, H, W, C) -> (B, H, W, C)``, any H, W >= 1.

    ``x = x + norm1(attn(x))`` then ``x = x + norm2(mlp(x))`` (post-norm), windows shifted by
    ``shift`` when it is positive.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int = 7,
        shift: int = 0,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        act: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift={shift} must be in [0, window={window})")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionV2(dim, num_heads, window, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio), act, drop)
        self._mask_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}
        self._index_cache: dict[tuple[int, int, torch.device], tuple[torch.Tensor, ...]] = {}

    def attn_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        """The cached shift mask ``(nW, N, N)`` float32 for a padded ``h x w`` map, or None without shift."""
        if self.shift == 0:
            return None
        if _tracing():  # computed in the graph, so that a dynamic-size export follows the input size
            return shift_mask(h, w, self.window, self.shift, device)
        key = (h, w, device)
        if key not in self._mask_cache:
            self._mask_cache[key] = shift_mask(h, w, self.window, self.shift, device)
        return self._mask_cache[key]

    def window_index(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The cached :func:`window_index` of an (unpadded) ``h x w`` map for this layer's window and shift."""
        if _tracing():
            return window_index(h, w, self.window, self.shift, device)
        key = (h, w, device)
        if key not in self._index_cache:
            self._index_cache[key] = window_index(h, w, self.window, self.shift, device)
        return self._index_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()  # a permuted (B, C, H, W) map would make every token-wise op strided
        b, h, w, c = x.shape
        ws = self.window
        hp, wp = h + (-h % ws), w + (-w % ws)
        index, inverse, pads = self.window_index(h, w, x.device)
        # zero-pad, roll by -shift and partition in one gather, then the way back in one (crops too)
        tracing = _tracing()
        tokens = x.view(b, h * w, c)
        if tracing:
            y = _gather_windows(tokens, index, pads)
        else:
            y = _ToWindows.apply(tokens, index, inverse, pads)
        y = self.attn(y.view(b, -1, ws * ws, c), self.attn_mask(hp, wp, x.device)).view(b, -1, c)
        y = y.index_select(1, inverse) if tracing else _FromWindows.apply(y, index, inverse, pads)
        y = y.view(b, h, w, c)
        x = x + self.norm1(y)
        return x + self.norm2(self.mlp(x))

    def extra_repr(self) -> str:
        return f"window={self.window}, shift={self.shift}"


class SwinV2Block(nn.Module):
    """``n`` Swin V2 layers, shift ``window // 2`` on every second one: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, num_heads: int, n: int = 1, window: int = 7):
        super().__init__()
        self.blocks = nn.Sequential(
            *(SwinV2Layer(dim, num_heads, window, 0 if i % 2 == 0 else window // 2) for i in range(n))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SwinV2_CSPB(nn.Module):  # noqa: N801 (the published name, used in YAMLs)
    """CSP block around a Swin V2 stack: ``(B, c1, H, W) -> (B, c2, H, W)``.

    ``cv3(cat(m(cv1(x)), cv2(cv1(x))))`` with hidden width ``c_ = c2``, ``num_heads = c_ // 32`` and
    window 7 unless given. ``shortcut`` is accepted for the published signature and unused.
    Registered with YOLOv5's rule for unknown modules: YAML args are ``[c1, c2]`` verbatim.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = False,
        num_heads: int | None = None,
        window: int = 7,
    ):
        super().__init__()
        c_ = c2
        heads = num_heads if num_heads is not None else c_ // 32
        if heads < 1 or c_ % heads:
            raise ValueError(f"SwinV2_CSPB: {heads} heads (c2 // 32 by default) must be >= 1 and divide c2={c2}")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1, 1)
        self.m = SwinV2Block(c_, heads, n, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return self.cv3(torch.cat((self.m(y), self.cv2(y)), 1))
