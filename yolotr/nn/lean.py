"""Memory-lean training of ``Conv`` (conv -> BatchNorm2d -> SiLU): keep the conv output, recompute the rest.

In a plain ``Conv`` autograd keeps three tensors of the output's size for the backward pass: the
conv output (BatchNorm's input), the BatchNorm output (SiLU's input) and the SiLU output (the
next convolution's input). Inside :func:`lean_activations` an eligible ``Conv`` keeps only the
first:

- BatchNorm and SiLU run as one autograd node (:func:`batchnorm_silu`) that saves the conv output
  and the batch statistics; its backward recomputes the BatchNorm output (one multiply-add per
  element) before SiLU's and BatchNorm's own backward kernels;
- the SiLU output, when a later op saves it (the next convolution, a max-pool), is stored as a
  recipe (that conv output, the per-channel scale and shift) by a ``saved_tensors_hooks`` pack hook
  and recomputed when that op's backward needs it.

For yolov5n at batch 16 x 320 x 320 the tensors kept for backward fall from 588 to 276 MiB (figures
in ``docs/troubleshooting.md``, "Training memory on the CPU"); the recomputation is elementwise. The
forward values, the running statistics and ``num_batches_tracked`` are those of ``F.silu(bn(x))``;
gradients are equal up to float rounding (a recomputed value may differ from the forward's in the
last bit).

A ``Conv`` takes this path while :func:`lean_activations` is on (the trainer turns it on for its
forward pass, config key ``lean_activations``), the module is training, its BatchNorm is a plain
training-mode ``BatchNorm2d`` with affine parameters, running statistics and a momentum, its
activation is exactly ``nn.SiLU``, neither has hooks (the non-finite guard's hooks see every module),
and the tensor is on the CPU (the CUDA path keeps cuDNN's BatchNorm kernels).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_RECIPES: dict[int, _Recipe] | None = None  # id(SiLU output) -> how to recompute it; None: lean path off
# ``lean_activations: auto`` turns the path on from this many input pixels a batch (16 images at 256 px).
# At 16 x 320 x 320 it saves 312 MiB and a bare step is ~10% faster (less memory written and read); at
# 16 x 128 x 128 it saves ~50 MiB and costs ~20% of a yolov8n step (bench/step.py, no-lean variant).
AUTO_LEAN_PIXELS = 2**20


def lean_wanted(setting, batch: int, imgsz: int) -> bool:
    """Whether a training run uses the lean path: ``setting`` true or false, or ``"auto"`` (on when a
    batch of ``batch`` images of ``imgsz`` x ``imgsz`` has at least :data:`AUTO_LEAN_PIXELS` pixels)."""
    if setting == "auto":
        return batch * imgsz * imgsz >= AUTO_LEAN_PIXELS
    return bool(setting)


@dataclass
class _Recipe:
    """``silu(x * scale + shift)``: a SiLU output kept as the conv output ``x`` it came from."""

    x: torch.Tensor  # (B, C, H, W), the conv output (already saved by the BatchNorm + SiLU node)
    scale: torch.Tensor  # (1, C, 1, 1) float32
    shift: torch.Tensor  # (1, C, 1, 1) float32
    output: weakref.ref  # the SiLU output, while it is alive
    version: int  # its version counter when made (a later in-place change makes the recipe stale)

    def matches(self, t: torch.Tensor) -> bool:
        return self.output() is t and t._version == self.version

    def recompute(self) -> torch.Tensor:
        return F.silu(_affine(self.x, self.scale, self.shift), inplace=True)


def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` in float32 (BatchNorm's own arithmetic), returned in ``x``'s dtype and layout."""
    if x.dtype == torch.float32:
        return torch.addcmul(shift, x, scale)
    return torch.addcmul(shift, x.float(), scale).to(x.dtype)


def _pack(t: torch.Tensor):
    recipe = _RECIPES.get(id(t)) if _RECIPES is not None else None
    return recipe if recipe is not None and recipe.matches(t) else t


def _unpack(packed):
    return packed.recompute() if isinstance(packed, _Recipe) else packed


@contextlib.contextmanager
def lean_activations(enabled: bool = True) -> Iterator[None]:
    """Within the block, eligible ``Conv`` layers keep one activation for backward (see the module doc)."""
    global _RECIPES
    if not enabled:
        previous, _RECIPES = _RECIPES, None
        try:
            yield
        finally:
            _RECIPES = previous
        return
    previous, _RECIPES = _RECIPES, {}
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _RECIPES = previous


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def lean_eligible(x: torch.Tensor, bn: nn.Module, act: nn.Module) -> bool:
    """Whether ``act(bn(x))`` may run as :func:`batchnorm_silu` now."""
    return (
        _RECIPES is not None
        and x.device.type == "cpu"
        and type(act) is nn.SiLU
        and type(bn) is nn.BatchNorm2d
        and bn.training
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and torch.is_grad_enabled()
        and not _has_hooks(bn)
        and not _has_hooks(act)
    )


class _BatchNormSiLU(torch.autograd.Function):
    """``silu(batch_norm(x))`` in training mode; saves ``x`` and the batch mean / inverse std only.

    Returns the output and the batch mean and inverse std ``(C,)`` (not differentiable).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, invstd)
        return F.silu(y, inplace=True), mean, invstd

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_invstd):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        y = _affine(x, *_scale_shift(weight, bias, mean, invstd))
        grad_y = torch.ops.aten.silu_backward.grad_input(grad_out, y, grad_input=y)  # written over y
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_x, grad_w, grad_b, None, None, None, None


def _scale_shift(weight, bias, mean, invstd) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm as ``x * scale + shift``: two ``(1, C, 1, 1)`` float32 tensors."""
    scale = invstd.float() * weight.float()
    shift = bias.float() - mean.float() * scale
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


def batchnorm_silu(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``F.silu(bn(x))`` for a training-mode ``bn`` inside :func:`lean_activations`. ``(B, C, H, W)``.

    Updates ``bn``'s running statistics and ``num_batches_tracked`` as ``bn(x)`` does, and leaves a
    recipe of the output for the ops that save it.
    """
    bn.num_batches_tracked.add_(1)
    out, mean, invstd = _BatchNormSiLU.apply(
        x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps
    )
    recipes, key = _RECIPES, id(out)
    if recipes is not None:
        scale, shift = _scale_shift(bn.weight.detach(), bn.bias.detach(), mean, invstd)
        output = weakref.ref(out, lambda _: recipes.pop(key, None))  # the entry goes when the output does
        recipes[key] = _Recipe(x.detach(), scale, shift, output, out._version)
    return out
