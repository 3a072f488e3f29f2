"""RT-DETR's convolutional blocks: the PP-HGNetV2 stem and stage block, the re-parametrizable conv of its
hybrid encoder, and the ResNet stages of ``rtdetr-resnet50``.

``HGStem`` / ``HGBlock`` / ``LightConv`` (PP-HGNetV2, from PaddleDetection), ``RepConv`` / ``RepC3`` (RepVGG's
three-branch conv, the encoder's CCFM fusion block) and ``ResNetBlock`` / ``ResNetLayer``. Attribute names and
layouts are the ``ultralytics`` package's (8.4), so its RT-DETR checkpoints load by name. Two differences:
``RepConv`` follows ``Conv.default_act`` (a YAML's ``activation:``) instead of a fixed SiLU, and its
:meth:`RepConv.fuse` builds the identity branch's kernel with ``torch.eye`` rather than a NumPy loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.nn.conv import Conv, DWConv, make_activation


class LightConv(nn.Module):
    """A 1x1 ``Conv`` without activation, then a ``k x k`` depthwise ``Conv`` with ``act`` (ReLU by default).
    ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, k: int = 1, act: nn.Module | None = None):
        super().__init__()
        self.conv1 = Conv(c1, c2, 1, act=False)
        self.conv2 = DWConv(c2, c2, k, act=nn.ReLU() if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class HGStem(nn.Module):
    """PP-HGNetV2's stem: stride 4 in two stride-2 convs, with a max-pool branch and a 2x2-conv branch
    concatenated between them. ``(B, c1, H, W) -> (B, c2, ceil(H/4), ceil(W/4))``; all activations ReLU.

    Args:
        c1: input channels; cm: the stem's middle width; c2: output channels.
    """

    def __init__(self, c1: int, cm: int, c2: int):
        super().__init__()
        relu = nn.ReLU
        self.stem1 = Conv(c1, cm, 3, 2, act=relu())
        self.stem2a = Conv(cm, cm // 2, 2, 1, 0, act=relu())
        self.stem2b = Conv(cm // 2, cm, 2, 1, 0, act=relu())
        self.stem3 = Conv(cm * 2, cm, 3, 2, act=relu())
        self.stem4 = Conv(cm, c2, 1, 1, act=relu())
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, padding=0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), [0, 1, 0, 1])  # (B, cm, H/2 + 1, W/2 + 1): the 2x2 kernels keep H/2
        conv_branch = self.stem2b(F.pad(self.stem2a(x), [0, 1, 0, 1]))
        return self.stem4(self.stem3(torch.cat((self.pool(x), conv_branch), 1)))


class HGBlock(nn.Module):
    """PP-HGNetV2's stage block: ``n`` chained convs (``LightConv`` when ``lightconv``), every intermediate
    map and the input concatenated, squeezed to ``c2 / 2`` and expanded to ``c2`` by 1x1 convs; a residual
    when ``shortcut`` and ``c1 == c2``. ``(B, c1, H, W) -> (B, c2, H, W)``.

    Args:
        c1, cm, c2: input, per-conv and output channels.
        k: kernel of the chained convs; n: their number.
        lightconv: use ``LightConv`` (1x1 + depthwise ``k x k``) instead of a dense ``k x k`` ``Conv``.
        shortcut: add the input (only when ``c1 == c2``).
        act: activation of every conv (ReLU by default).
    """

    def __init__(
        self,
        c1: int,
        cm: int,
        c2: int,
        k: int = 3,
        n: int = 6,
        lightconv: bool = False,
        shortcut: bool = False,
        act: nn.Module | None = None,
    ):
        super().__init__()
        act = nn.ReLU() if act is None else act
        block = LightConv if lightconv else Conv
        self.m = nn.ModuleList(block(c1 if i == 0 else cm, cm, k=k, act=act) for i in range(n))
        self.sc = Conv(c1 + n * cm, c2 // 2, 1, 1, act=act)
        self.ec = Conv(c2 // 2, c2, 1, 1, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for m in self.m:
            maps.append(m(maps[-1]))
        y = self.ec(self.sc(torch.cat(maps, 1)))
        return y + x if self.add else y


class RepConv(nn.Module):
    """RepVGG's conv: a 3x3 ``Conv`` and a 1x1 ``Conv`` (both without activation) and, with ``bn`` and equal
    widths at stride 1, a BatchNorm of the input, summed, then the activation. ``(B, c1, H, W) -> (B, c2, H/s,
    W/s)``. :meth:`fuse` folds the branches into one biased 3x3 ``conv`` for inference (same output).

    Args:
        c1, c2: channels; k, p: must be 3 and 1; s: stride; g: groups; d: dilation (kept for the signature).
        act: ``True`` the default activation (``Conv.default_act``), ``False``/``None`` none, or a module.
        bn: add the identity BatchNorm branch.
    """

    def __init__(self, c1, c2, k=3, s=1, p=1, g=1, d=1, act=True, bn=False, deploy=False):
        super().__init__()
        if k != 3 or p != 1:
            raise ValueError(f"RepConv needs k=3 and p=1, got k={k}, p={p}")
        self.g, self.c1, self.c2 = g, c1, c2
        self.act = make_activation(act, Conv.default_act)
        self.bn = nn.BatchNorm2d(c1) if bn and c2 == c1 and s == 1 else None
        self.conv1 = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2 = Conv(c1, c2, 1, s, p=p - k // 2, g=g, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):  # fused
            return self.act(self.conv(x))
        identity = 0 if self.bn is None else self.bn(x)
        return self.act(self.conv1(x) + self.conv2(x) + identity)

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward after :meth:`fuse`."""
        return self.act(self.conv(x))

    @staticmethod
    def _folded(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        return weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    @classmethod
    def _branch(cls, branch: Conv) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``Conv`` branch's kernel and bias, its BatchNorm folded (or already folded by the model's fuse)."""
        if hasattr(branch, "bn"):
            return cls._folded(branch.conv.weight, branch.bn)
        return branch.conv.weight, branch.conv.bias

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 kernel ``(c2, c1 / g, 3, 3)`` and bias ``(c2,)`` of the three branches with BatchNorm folded."""
        k3, b3 = self._branch(self.conv1)
        k1, b1 = self._branch(self.conv2)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.bn is not None:
            per_group = self.c1 // self.g
            identity = torch.zeros_like(k3)
            rows = torch.arange(self.c1, device=k3.device)
            identity[rows, rows % per_group, 1, 1] = 1.0
            ki, bi = self._folded(identity, self.bn)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the branches by one biased 3x3 ``nn.Conv2d`` named ``conv`` (eval use only)."""
        if hasattr(self, "conv"):
            return
        kernel, bias = self.equivalent_kernel_bias()
        ref = self.conv1.conv
        conv = nn.Conv2d(ref.in_channels, ref.out_channels, 3, ref.stride, ref.padding, ref.dilation, ref.groups)
        conv = conv.to(device=kernel.device, dtype=kernel.dtype).requires_grad_(False)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self.conv = conv
        del self.conv1, self.conv2
        self.bn = None


class RepC3(nn.Module):
    """CSP block of ``n`` ``RepConv``: ``cv3(m(cv1(x)) + cv2(x))`` (``cv3`` identity when the hidden width
    ``c2 * e`` equals ``c2``). ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.m = nn.Sequential(*(RepConv(c_, c_) for _ in range(n)))
        self.cv3 = Conv(c_, c2, 1, 1) if c_ != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(self.m(self.cv1(x)) + self.cv2(x))


class ResNetBlock(nn.Module):
    """ResNet's bottleneck: 1x1, 3x3 (stride ``s``), 1x1 to ``e * c2`` channels, plus a projected (or identity)
    shortcut, then ReLU. ``(B, c1, H, W) -> (B, e * c2, H/s, W/s)``; the inner convs use the default activation."""

    def __init__(self, c1: int, c2: int, s: int = 1, e: int = 4):
        super().__init__()
        c3 = e * c2
        self.cv1 = Conv(c1, c2, k=1, s=1, act=True)
        self.cv2 = Conv(c2, c2, k=3, s=s, p=1, act=True)
        self.cv3 = Conv(c2, c3, k=1, act=False)
        project = s != 1 or c1 != c3
        self.shortcut = nn.Sequential(Conv(c1, c3, k=1, s=s, act=False)) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.cv3(self.cv2(self.cv1(x))) + self.shortcut(x))


class ResNetLayer(nn.Module):
    """A ResNet stage. ``is_first``: the stem (7x7 stride-2 ``Conv`` to ``c2``, then a 3x3 stride-2 max-pool),
    ``(B, c1, H, W) -> (B, c2, H/4, W/4)``; otherwise ``n`` ``ResNetBlock`` (the first with stride ``s``),
    ``(B, c1, H, W) -> (B, e * c2, H/s, W/s)``.

    The YAML row names ``c1`` itself (the package's grammar); the builder checks it against the input.
    """

    def __init__(self, c1: int, c2: int, s: int = 1, is_first: bool = False, n: int = 1, e: int = 4):
        super().__init__()
        self.is_first = is_first
        if is_first:
            self.layer = nn.Sequential(
                Conv(c1, c2, k=7, s=2, p=3, act=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            )
        else:
            blocks = [ResNetBlock(c1, c2, s, e=e)]
            blocks += [ResNetBlock(e * c2, c2, 1, e=e) for _ in range(n - 1)]
            self.layer = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)
