"""Synchronized BatchNorm for DDP on any device: torch's SyncBatchNorm on CUDA, an all-reduce version on CPU.

``torch.nn.SyncBatchNorm`` runs only on GPU-like devices. ``GlooSyncBatchNorm2d`` computes the batch
statistics over the global batch with two differentiable all-reduces (the mean, then the centred
second moment), so a CPU run with ``torchrun`` + gloo normalizes exactly as a single process holding
the whole batch would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over all processes; the gradient of each input is the sum of the output gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over the process group (any shape, float)."""
    return _AllReduceSum.apply(tensor)


class GlooSyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all processes.

    Input and output: ``(B, C, H, W)``, any float dtype (statistics in float32, output in the input's
    dtype). In eval mode, or without an initialized process group, it is a plain ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"GlooSyncBatchNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}")
        channels = x.shape[1]
        xf = x.float()
        dims = (0, 2, 3)
        count = all_reduce_sum(xf.new_tensor([x.numel() / channels]))
        mean = all_reduce_sum(xf.sum(dims)) / count
        centred = xf - mean.view(1, -1, 1, 1)
        var = all_reduce_sum(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def _convert_gloo(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlooSyncBatchNorm2d):
        sync = GlooSyncBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:  # the same Parameter objects, so an optimizer built before keeps updating them
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, _convert_gloo(child))
    return module


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` (in place) by a synchronized one for ``device``.

    The new layers share the old ones' parameters and buffers, so optimizers, EMA and checkpoints
    built on ``model`` stay valid; state_dict keys do not change."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_gloo(model)


__all__ = ["GlooSyncBatchNorm2d", "all_reduce_sum", "convert_sync_batchnorm"]
