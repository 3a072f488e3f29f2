"""The window geometry and hand-written autograd functions of the Swin V2 layer (:mod:`yolotr.nn.swin`).

- geometry: window partition / reverse, the log-spaced relative coordinates table and the relative
  position index, the shifted-window mask, and :func:`window_index`, the one gather that pads, rolls and
  partitions a ``(B, H*W, C)`` map into windows (and its inverse);
- autograd functions with backwards that allocate less than autograd's: the gathers to and from windows
  (each the other's gradient), splitting the packed ``qkv`` into heads, the unit-vector normalization and
  the scaled cosine attention with its ``(..., N, N)`` logits allocated once each way.
"""

from __future__ import annotations

import math

import torch

MASK_VALUE = -100.0  # the published value for logits across shifted-window region boundaries


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` promoted to at least float32: fp16/bf16 -> float32, float32 -> float32, float64 -> float64."""
    return torch.promote_types(dtype, torch.float32)


def unit_vectors(x: torch.Tensor, scale: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """``scale * x / ||x||`` along the last dim, like ``F.normalize``, but 0 with a zero gradient at ``||x|| <= eps``.

    ``scale`` broadcasts against ``x[..., :1]`` (the per-head logit scale ``(heads, 1, 1)``); it is folded
    into the per-vector factor, so the full-size tensor is multiplied once. ``F.normalize`` has a gradient
    of ``1 / eps`` at a zero vector. The keys of zero-padded tokens are exactly zero (k has no bias), and
    under fp16 autocast that gradient overflows to inf on its way back to the half-precision projection,
    where ``0 * inf`` turns the weight gradient into NaN.
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    factor = norm.clamp(min=eps).reciprocal()
    if scale is not None:
        factor = factor * scale
    return x * torch.where(norm > eps, factor, torch.zeros_like(norm))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B, nW, window*window, C)``, windows in row-major order; H, W multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, window*window, C) -> (B, H, W, C)``."""
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def relative_coords_table(window: int, pretrained_window: int = 0) -> torch.Tensor:
    """Log-spaced relative coordinates ``(1, 2*window-1, 2*window-1, 2)`` float32, in [-1, 1] * log2(9)/log2(8)."""
    span = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1).unsqueeze(0)
    table = table / ((pretrained_window if pretrained_window > 0 else window) - 1) * 8.0
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> torch.Tensor:
    """``(window**2, window**2)`` int64: row of the coordinate table for each (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """Additive mask ``(nW, window**2, window**2)`` float32 for a map of ``h x w`` rolled by ``-shift``.

    Tokens of a window that came from different regions of the unrolled map get :data:`MASK_VALUE`.
    """
    region = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (hs, ws) in enumerate((hs, ws) for hs in cuts for ws in cuts):
        region[:, hs, ws, :] = i
    ids = window_partition(region, window).view(-1, window * window)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


def window_index(
    h: int, w: int, window: int, shift: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token order of the padded, rolled and partitioned map, as indices into the ``h x w`` map.

    Returns ``(index, inverse, pads)``, int64:

    - ``index`` ``(P,)``, ``P = hp * wp`` (sides padded to multiples of ``window``): slot ``k`` of
      :func:`window_partition` (``torch.roll(padded_map, (-shift, -shift))``) holds token ``index[k]``
      of the row-major ``h x w`` map, or the padding zero where ``index[k]`` is ``-1``;
    - ``inverse`` ``(h * w,)``: the slot of every token (``index[inverse] == arange(h * w)``);
    - ``pads`` ``(P - h * w,)``: the padding slots.
    """
    hp, wp = h + (-h % window), w + (-w % window)
    rows = (torch.arange(hp, device=device) + shift) % hp  # torch.roll by -shift: slot row r shows row r + shift
    cols = (torch.arange(wp, device=device) + shift) % wp
    grid = torch.where((rows[:, None] < h) & (cols[None, :] < w), rows[:, None] * w + cols[None, :], -1)
    index = window_partition(grid.view(1, hp, wp, 1), window).reshape(-1)
    real = index >= 0
    inverse = torch.empty(h * w, dtype=torch.int64, device=device)
    inverse[index[real]] = torch.arange(index.numel(), device=device)[real]
    return index, inverse, torch.nonzero(~real).view(-1)


def _tracing() -> bool:
    """True while ONNX / TorchScript export traces the model: autograd functions do not export, so the
    layers then run the same arithmetic as plain tensor ops."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def _gather_windows(x: torch.Tensor, index: torch.Tensor, pads: torch.Tensor) -> torch.Tensor:
    """``(B, L, C) -> (B, P, C)``: ``x[:, index]`` with zeros in the ``pads`` slots (none when the sides are
    multiples of the window). No branch on ``pads``: a graph traced at such a size pads at the others."""
    return x.index_select(1, index.clamp(min=0)).index_fill_(1, pads, 0)


class _ToWindows(torch.autograd.Function):
    """Pad, roll and partition in one copy: ``(B, h*w, C) -> (B, P, C)``; the gradient is the inverse gather."""

    @staticmethod
    def forward(ctx, x, index, inverse, pads):
        ctx.save_for_backward(index, inverse, pads)
        return _gather_windows(x, index, pads)

    @staticmethod
    def backward(ctx, grad):
        index, inverse, pads = ctx.saved_tensors
        return _FromWindows.apply(grad, index, inverse, pads), None, None, None


class _FromWindows(torch.autograd.Function):
    """Reverse, roll back and crop in one copy: ``(B, P, C) -> (B, h*w, C)``; the gradient is the forward gather."""

    @staticmethod
    def forward(ctx, y, index, inverse, pads):
        ctx.save_for_backward(index, inverse, pads)
        return y.index_select(1, inverse)

    @staticmethod
    def backward(ctx, grad):
        index, inverse, pads = ctx.saved_tensors
        return _ToWindows.apply(grad, index, inverse, pads), None, None, None


class _SplitHeads(torch.autograd.Function):
    """``(B, nW, N, 3C)`` packed projections -> q, k, v, each ``(B, nW, heads, N, d)`` contiguous.

    One copy forward and one backward: the three gradients are written straight into the packed layout
    (autograd's ``unbind`` + ``permute`` would stack them and then copy again).
    """

    @staticmethod
    def forward(ctx, qkv, heads):
        b, nw, n, c3 = qkv.shape
        ctx.heads = heads
        out = qkv.view(b, nw, n, 3, heads, c3 // (3 * heads)).permute(3, 0, 1, 4, 2, 5).contiguous()
        return out[0], out[1], out[2]

    @staticmethod
    def backward(ctx, *grads):
        like = next(g for g in grads if g is not None)
        b, nw, heads, n, d = like.shape
        grad = like.new_empty(b, nw, n, 3, heads, d)
        for i, g in enumerate(grads):
            part = grad[:, :, :, i]  # (B, nW, N, heads, d)
            part.zero_() if g is None else part.copy_(g.transpose(2, 3))
        return grad.view(b, nw, n, 3 * heads * d), None


class _UnitVectors(torch.autograd.Function):
    """:func:`unit_vectors` (the same values as ``F.normalize``) with a backward that allocates one full-size
    tensor instead of four: ``dL/dx = (g - y * <y, g>) / ||x||``, 0 where ``||x|| <= eps``."""

    @staticmethod
    def forward(ctx, x, eps):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        y = x / norm.clamp(min=eps)
        ctx.save_for_backward(y, torch.where(norm > eps, norm.clamp(min=eps).reciprocal(), torch.zeros_like(norm)))
        return y

    @staticmethod
    def backward(ctx, grad):
        y, r = ctx.saved_tensors
        tmp = grad * y
        torch.mul(y, tmp.sum(-1, keepdim=True), out=tmp)
        return tmp.neg_().add_(grad).mul_(r), None


class _CosineAttention(torch.autograd.Function):
    """``softmax(scale * q @ k^T + bias) @ v`` with the ``(..., N, N)`` logits allocated once forward and
    once backward: scale, bias and softmax are applied in place, and the softmax gradient is formed in
    place in the gradient of the probabilities. ``scale`` ``(heads, 1, 1)`` and ``bias`` broadcast against
    the leading dims of the logits (their gradients are summed over them).
    """

    @staticmethod
    def forward(ctx, q, k, scale, bias, v):
        probs = q @ k.transpose(-2, -1)
        probs.mul_(scale)
        probs += bias
        torch.softmax(probs, dim=-1, out=probs)
        ctx.save_for_backward(q, k, scale, v, probs)
        ctx.bias_shape = bias.shape
        return probs @ v

    @staticmethod
    def backward(ctx, grad):
        q, k, scale, v, probs = ctx.saved_tensors
        grad_v = probs.transpose(-2, -1) @ grad
        g = grad @ v.transpose(-2, -1)  # dL/dprobs, then in place dL/dlogits = p * (g - <p, g>)
        g.mul_(probs)
        g.addcmul_(probs, g.sum(-1, keepdim=True), value=-1.0)
        grad_bias = g.sum_to_size(ctx.bias_shape) if ctx.needs_input_grad[3] else None
        grad_q = g @ k  # d/d(q) of (q @ k^T) before the scale; dL/dscale = sum q * (g @ k)
        grad_scale = (q * grad_q).sum_to_size(scale.shape) if ctx.needs_input_grad[2] else None
        return grad_q.mul_(scale), (g.transpose(-2, -1) @ q).mul_(scale), grad_scale, grad_bias, grad_v
