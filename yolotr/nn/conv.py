"""Convolution building blocks with YOLOv5's names and parameter layout.

``Conv`` is conv + BatchNorm + activation. ``Conv.default_act`` is a factory of the activation used
when ``act=True``; the builder swaps it only while it builds a model whose YAML has an
``activation:`` key (see :func:`yolotr.nn.builder.build_layers`) and restores it afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from yolotr.nn.lean import batchnorm_silu, lean_eligible


def autopad(k: int | tuple[int, ...], p: int | None = None, d: int = 1) -> int | list[int]:
    """Padding that keeps the spatial size for stride 1 ('same'), given kernel ``k`` and dilation ``d``."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. ``(B, c1, H, W) -> (B, c2, H/s, W/s)``.

    ``act=True`` uses ``Conv.default_act`` (SiLU unless a model YAML says otherwise), ``False`` or
    ``None`` gives identity, an ``nn.Module`` is used as given.
    """

    default_act: Callable[[], nn.Module] = nn.SiLU

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, d: int = 1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = make_activation(act, Conv.default_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._bn_act(self.conv(x))

    def _bn_act(self, y: torch.Tensor) -> torch.Tensor:
        """BatchNorm then activation of the convolution's output ``y``."""
        if lean_eligible(y, self.bn, self.act):  # training under lean_activations(): see yolotr.nn.lean
            return contiguous_grad_at_batch_one(batchnorm_silu(y, self.bn))
        return self.act(contiguous_grad_at_batch_one(self.bn(y)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward after :func:`fuse_conv_and_bn` folded ``bn`` into ``conv``."""
        return self.act(self.conv(x))


class _ContiguousGrad(torch.autograd.Function):
    """Identity forward; the backward passes on a contiguous copy of the gradient. A Function, not a tensor
    hook, and a copy, not ``contiguous()``: ``torch.compile``'s traced backward dropped both of those."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone(memory_format=torch.contiguous_format)


def contiguous_grad_at_batch_one(t: torch.Tensor) -> torch.Tensor:
    """``t`` (a BatchNorm2d output ``(1, C, H, W)``), whose gradient is made contiguous before the BatchNorm's
    backward gets it, when a batch of one trains.

    PyTorch's CPU BatchNorm2d backward (2.14) is wrong at batch 1 when the incoming gradient is laid out
    channels-last and the input is not: a token-major consumer (``flatten(2).transpose(1, 2)``: area
    attention's qkv, a Transformer stage, RT-DETR's input projections) sends exactly that, and the weights'
    gradients came out up to 4.6x off (finite differences agree with the contiguous gradient). A last partial
    batch of one image met it in training. Larger batches and inference are untouched."""
    if t.shape[0] == 1 and t.requires_grad:
        return _ContiguousGrad.apply(t)
    return t


def make_activation(act, default: Callable[[], nn.Module]) -> nn.Module:
    """``True`` -> ``default()``, ``False``/``None`` -> identity, an ``nn.Module`` -> itself."""
    if act is True:
        return default()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class Conv2(Conv):
    """``Conv`` plus a parallel bias-free 1x1 conv ``cv2`` (same stride, groups and padding argument), summed
    before the shared BatchNorm and activation: ``(B, c1, H, W) -> (B, c2, H/s, W/s)``; the package's ``Conv2``
    (a RepConv without its identity branch and second BatchNorm), default kernel 3.

    :meth:`fuse` adds ``cv2``'s kernel to the centre of ``conv``'s, leaving a plain ``Conv`` (same output), before
    :meth:`yolotr.models.detection.DetectionModel.fuse` folds the BatchNorm. In the package's grammar it is read
    like ``nn`` modules (rule ``same``): its row is ``[c1, c2, ...]`` written out, and ``c2`` must equal ``c1``.
    """

    def __init__(self, c1: int, c2: int, k=3, s=1, p=None, g: int = 1, d: int = 1, act=True):
        super().__init__(c1, c2, k, s, p, g=g, d=d, act=act)
        self.cv2 = nn.Conv2d(c1, c2, 1, s, autopad(1, p, d), groups=g, dilation=d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cv2 is None:  # fused
            return super().forward(x)
        return self._bn_act(self.conv(x) + self.cv2(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold ``cv2`` into the centre tap of ``conv`` (eval use only); ``cv2`` becomes None."""
        if self.cv2 is None:
            return
        h, w = (k // 2 for k in self.conv.weight.shape[2:])
        self.conv.weight[:, :, h : h + 1, w : w + 1] += self.cv2.weight
        self.cv2 = None


class DWConv(Conv):
    """Depth-wise convolution: ``Conv`` with ``groups = gcd(c1, c2)``."""

    def __init__(self, c1: int, c2: int, k=1, s=1, d: int = 1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class ConvTranspose(nn.Module):
    """ConvTranspose2d -> BatchNorm2d (``bn=True``; else the conv has a bias) -> activation:
    ``(B, c1, H, W) -> (B, c2, (H-1)*s - 2p + k, ...)``. ``act=True`` is SiLU: unlike ``Conv``, a YAML's
    ``activation:`` does not change it (as in the package)."""

    def __init__(self, c1: int, c2: int, k=2, s=2, p=0, bn: bool = True, act=True):
        super().__init__()
        self.conv_transpose = nn.ConvTranspose2d(c1, c2, k, s, p, bias=not bn)
        self.bn = nn.BatchNorm2d(c2) if bn else nn.Identity()
        self.act = make_activation(act, nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_transpose(x)))


class DWConvTranspose2d(nn.ConvTranspose2d):
    """Depth-wise transposed convolution (``groups = gcd(c1, c2)``, with bias), the package's: ``(B, c1, H, W) ->
    (B, c2, (H-1)*s - p1 - p1 + k + p2, ...)``."""

    def __init__(self, c1: int, c2: int, k=1, s=1, p1=0, p2=0):
        super().__init__(c1, c2, k, s, p1, p2, groups=math.gcd(c1, c2))


class Focus(nn.Module):
    """Space-to-depth then ``Conv``: ``(B, c1, H, W) -> (B, c2, H/2, W/2)`` (YOLOv5 <= v5)."""

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class GhostConv(nn.Module):
    """Ghost convolution: half the channels from a conv, half from a cheap 5x5 depth-wise conv of those."""

    def __init__(self, c1: int, c2: int, k=1, s=1, g: int = 1, act=True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


@torch.no_grad()
def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode BatchNorm into the preceding convolution; returns a new conv with bias."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)
    return fused
