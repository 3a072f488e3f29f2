"""Multi-scale deformable attention (Deformable DETR), written with ``F.grid_sample``.

Each query looks at ``n_points`` sampling locations per head and per feature level, placed around its
reference box by learned offsets, and averages the bilinearly interpolated values with learned softmax
weights. No custom CUDA kernel: :func:`deformable_sample` samples each level with one ``grid_sample`` call
(bilinear, zero padding, ``align_corners=False``, so location ``(0, 0)`` is the top-left corner of the map
and ``(1, 1)`` the bottom-right one), which runs on every device and exports to ONNX (opset 16+).

Attribute names are the ``ultralytics`` package's ``MSDeformAttn`` (8.4), so its checkpoints load by name.
It differs in the interface: the reference boxes come in as ``(B, Q, 4)`` (or points ``(B, Q, 2)``) without
the package's extra level axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def deformable_sample(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted sum of bilinear samples of every level.

    Args:
        value: ``(B, sum(H_l * W_l), n_heads, head_dim)``, the levels' tokens one after the other, each row-major.
        shapes: ``[(H_l, W_l), ...]`` of the ``L`` levels.
        locations: ``(B, Q, n_heads, L * P, 2)`` ``(x, y)`` in ``[0, 1]`` of each level's map, level-major
            (points ``l * P .. l * P + P - 1`` sample level ``l``); outside ``[0, 1]`` samples zeros.
        weights: ``(B, Q, n_heads, L * P)`` attention weights (softmax over the ``L * P`` axis).

    Returns:
        ``(B, Q, n_heads * head_dim)`` in ``value``'s dtype.
    """
    b, _, n_heads, head_dim = value.shape
    _, q, _, total_points, _ = locations.shape
    points = total_points // len(shapes)
    # (B * n_heads, head_dim, sum(H_l * W_l)) split per level; grid_sample wants coordinates in [-1, 1]
    per_level = value.permute(0, 2, 3, 1).flatten(0, 1).split([h * w for h, w in shapes], dim=-1)
    if value.device.type == "cpu" and value.dtype in (torch.float16, torch.bfloat16):
        # the CPU's fp16 / bf16 grid_sample returns NaN and garbage for these strided views (torch 2.14);
        # contiguous copies sample right. float32 and CUDA read the views correctly and skip the copies.
        per_level = [level.contiguous() for level in per_level]
    grids = (2 * locations - 1).permute(0, 2, 1, 3, 4).flatten(0, 1).split(points, dim=-2)  # (B * nh, Q, P, 2)
    samples = [
        F.grid_sample(
            level.reshape(b * n_heads, head_dim, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B * nh, head_dim, Q, P)
        for level, grid, (h, w) in zip(per_level, grids, shapes)
    ]
    weights = weights.permute(0, 2, 1, 3).reshape(b * n_heads, 1, q, total_points)
    out = (torch.cat(samples, dim=-1) * weights).sum(-1)  # (B * nh, head_dim, Q)
    return out.view(b, n_heads * head_dim, q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: ``(B, Q, d_model)`` queries over ``(B, sum(H_l * W_l), d_model)``
    flattened multi-level features -> ``(B, Q, d_model)``.

    Args:
        d_model: channels (divisible by ``n_heads``).
        n_levels: feature levels ``L``; n_heads: heads; n_points: sampling points ``P`` per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.im2col_step = 64  # the package's attribute (CUDA kernel chunking); unused here
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR's init: zero offset weights, offset biases pointing each head in its own direction
        (``1..P`` steps along it), uniform attention (zero weights), Xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack((angles.cos(), angles.sin()), -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values  # on the unit square
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1) * steps
        self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def sampling(
        self, query: torch.Tensor, reference: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling locations ``(B, Q, n_heads, L * P, 2)`` in ``[0, 1]`` coordinates and softmax weights
        ``(B, Q, n_heads, L * P)`` of ``query`` ``(B, Q, d_model)`` around ``reference``.

        ``reference`` ``(B, Q, 4)``: normalized ``cx, cy, w, h`` boxes; the offsets are in units of the box's
        half size divided by ``P``. ``(B, Q, 2)``: points; the offsets are in cells of each level.
        """
        b, q = query.shape[:2]
        total = self.n_levels * self.n_points
        offsets = self.sampling_offsets(query).view(b, q, self.n_heads, total, 2)
        weights = F.softmax(self.attention_weights(query).view(b, q, self.n_heads, total), -1)
        ref = reference[:, :, None, None, :]  # (B, Q, 1, 1, 2 or 4)
        if reference.shape[-1] == 4:
            locations = ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5
        elif reference.shape[-1] == 2:
            cells = torch.as_tensor(shapes, dtype=query.dtype, device=query.device).flip(-1)  # (L, 2) as (W, H)
            cells = cells.repeat_interleave(self.n_points, 0)  # (L * P, 2)
            locations = ref + offsets / cells
        else:
            raise ValueError(f"reference must end in 2 (points) or 4 (boxes), got shape {tuple(reference.shape)}")
        return locations, weights

    def forward(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        value: torch.Tensor,
        shapes: list[tuple[int, int]],
        value_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``query`` ``(B, Q, d_model)``, ``reference`` ``(B, Q, 4 or 2)`` (see :meth:`sampling`), ``value``
        ``(B, sum(H_l * W_l), d_model)``, ``shapes`` ``[(H_l, W_l)] * L``, ``value_mask`` ``(B, sum(H_l * W_l))``
        True at padding -> ``(B, Q, d_model)``."""
        b, len_v = value.shape[:2]
        if sum(h * w for h, w in shapes) != len_v:
            raise ValueError(
                f"value has {len_v} tokens but the level shapes {shapes} give {sum(h * w for h, w in shapes)}"
            )
        value = self.value_proj(value)
        if value_mask is not None:
            value = value.masked_fill(value_mask[..., None], 0.0)
        value = value.view(b, len_v, self.n_heads, self.d_model // self.n_heads)
        locations, weights = self.sampling(query, reference, shapes)
        return self.output_proj(deformable_sample(value, shapes, locations, weights))
