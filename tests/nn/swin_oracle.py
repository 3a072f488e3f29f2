"""A plain, literal Swin V2 layer: the published maths step by step, with no caching and no SDPA.

It reads the weights of a :class:`yolotr.nn.swin.SwinV2Layer` and computes what the published
``SwinTransformerLayer_v2`` computes on a ``(B, C, H, W)`` map: zero-pad right/bottom to a multiple of
the window, flatten to tokens, build the shift mask for the padded size, roll, partition, cosine
attention with explicit matrices and softmax, merge, roll back, post-norm residuals, crop. Tests
compare the library against it; ``bench/blocks.py`` times it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def oracle_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def oracle_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C)."""
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def oracle_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, N, N): 0 within a region, -100 across regions, rebuilt on every call."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = oracle_partition(img, ws).view(-1, ws * ws)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def oracle_attention(attn, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Window attention of ``attn`` (a ``WindowAttentionV2``) on ``x`` (B * nW, N, C), literal maths."""
    bw, n, c = x.shape
    heads, ws = attn.num_heads, attn.window
    qkv_bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
    qkv = F.linear(x, attn.qkv.weight, qkv_bias).reshape(bw, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    logits = logits * torch.clamp(attn.logit_scale, max=math.log(1.0 / 0.01)).exp()

    span = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / (ws - 1) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    index = rel.sum(-1)

    bias_table = attn.cpb_mlp(table.to(x.device)).view(-1, heads)
    bias = bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
    logits = logits + 16 * torch.sigmoid(bias).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.view(bw // nw, nw, heads, n, n) + mask.to(x.device).unsqueeze(1).unsqueeze(0)
        logits = logits.view(-1, heads, n, n)
    weights = torch.softmax(logits, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(bw, n, c)
    return attn.proj(out)


def oracle_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (a ``SwinV2Layer``) applied the published way to ``x`` (B, C, H, W) -> (B, C, H, W)."""
    ws, shift = layer.window, layer.shift
    _, _, h0, w0 = x.shape
    pad_r, pad_b = (ws - w0 % ws) % ws, (ws - h0 % ws) % ws
    x = F.pad(x, (0, pad_r, 0, pad_b))
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).contiguous().view(b, h * w, c)
    mask = oracle_mask(h, w, ws, shift) if shift > 0 else None
    shortcut = x
    y = x.view(b, h, w, c)
    if shift > 0:
        y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
    windows = oracle_partition(y, ws).view(-1, ws * ws, c)
    windows = oracle_attention(layer.attn, windows, mask).view(-1, ws, ws, c)
    y = oracle_reverse(windows, ws, h, w)
    if shift > 0:
        y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + layer.norm1(y.reshape(b, h * w, c))
    x = x + layer.norm2(layer.mlp(x))
    x = x.permute(0, 2, 1).contiguous().view(-1, c, h, w)
    return x[:, :, :h0, :w0]
