"""fp16 convolutions on the CPU, computed by float32 kernels: what ``amp: fp16`` on the CPU runs its convolutions with.

fp16 autocast on the CPU exists here to reproduce CUDA's fp16 training in CI (GradScaler's calibration overflows,
the NaN guard under loss scaling). PyTorch's CPU convolution *backward* in float16 has no fast kernel: a 3x3,
128-channel convolution of a ``(2, 128, 16, 16)`` batch takes 400 ms forward and backward on one core, against
4 ms in float32 and 3 ms in bfloat16 (2-core Intel Xeon, torch 2.14). An RT-DETR Swin config took 7-9 s a step
at 64 px, 90% of it in ``convolution_backward``.

:class:`Fp16ConvolutionsInFloat32` computes what a CUDA fp16 convolution computes, in float32 kernels:
the input, weight and bias are rounded to float16, the convolution accumulates in float32 (as cuDNN's fp16
kernels do), and the output is rounded to float16. Backward goes through the same casts, so the gradient
of the input and of the weight are rounded to float16 too: a gradient beyond 65504 is ``inf`` exactly where
the float16 kernel gives ``inf``, and GradScaler sees the same overflows. Results differ from PyTorch's
float16 CPU kernel only by the order of the float32 sums (at most one float16 ulp of the output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

CONVOLUTIONS = frozenset((F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d))
TENSOR_ARGUMENTS = ("input", "weight", "bias")  # the leading arguments of every function in CONVOLUTIONS


def _rounded_to_fp16(value):
    """A floating tensor rounded to float16 and held in float32 (differentiable); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float16).float()
    return value


class Fp16ConvolutionsInFloat32(TorchFunctionMode):
    """While active, and while CPU autocast is on in float16, every ``torch.nn.functional`` convolution (and
    ``nn.Conv2d``, ``nn.ConvTranspose2d``, ... which call them) takes float16-rounded operands and returns a
    ``float16`` tensor of the output's shape, computed by the float32 kernels (see the module docstring).
    Other functions, and convolutions outside fp16 CPU autocast, run unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in CONVOLUTIONS or not _fp16_cpu_autocast() or not _on_cpu(args, kwargs):
            return func(*args, **kwargs)
        args = tuple(_rounded_to_fp16(a) if i < len(TENSOR_ARGUMENTS) else a for i, a in enumerate(args))
        kwargs = {k: _rounded_to_fp16(v) if k in TENSOR_ARGUMENTS else v for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False):
            return func(*args, **kwargs).to(torch.float16)


def _on_cpu(args, kwargs) -> bool:
    value = args[0] if args else kwargs.get("input")
    return isinstance(value, torch.Tensor) and value.device.type == "cpu"


def _fp16_cpu_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
