"""amp: fp16 on the CPU computes its convolutions in float32 kernels on float16-rounded operands: the float16
kernel's outputs, gradients and overflows, without its slow backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from yolotr.engine.amp import resolve_amp
from yolotr.engine.cpu_fp16_conv import Fp16ConvolutionsInFloat32

FP16_EPS = 2.0**-10  # float16's relative step: one ulp of a value in [1, 2)


class ConvolutionDtypes(TorchDispatchMode):
    """Records the dtype of the input of every aten convolution, forward and backward."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten.convolution_backward):
            self.dtypes.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def _layers():
    torch.manual_seed(0)
    return {
        "conv2d": (nn.Conv2d(16, 24, 3, padding=1), (2, 16, 10, 12)),
        "conv2d grouped, no bias": (nn.Conv2d(16, 16, 3, stride=2, groups=4, bias=False), (2, 16, 9, 9)),
        "conv_transpose2d": (nn.ConvTranspose2d(16, 8, 2, stride=2), (2, 16, 5, 6)),
        "conv1d": (nn.Conv1d(16, 8, 5), (2, 16, 20)),
    }


def _run(layer, x, grad_out, emulate: bool):
    x = x.clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.float16):
        if emulate:
            with Fp16ConvolutionsInFloat32():
                y = layer(x)
        else:
            y = layer(x)
    y.backward(grad_out)
    return y, x.grad, layer.weight.grad


@pytest.mark.parametrize("name", list(_layers()))
def test_outputs_and_gradients_are_the_float16_kernels(name):
    layer, shape = _layers()[name]
    x = torch.randn(shape)
    with torch.autocast("cpu", dtype=torch.float16):
        out_shape = layer(x).shape
    grad_out = torch.randn(out_shape, dtype=torch.float16)
    reference, ref_gx, ref_gw = _run(layer, x, grad_out, emulate=False)
    emulated, gx, gw = _run(layer, x, grad_out, emulate=True)
    assert emulated.dtype == reference.dtype == torch.float16 and emulated.shape == reference.shape
    assert gx.dtype == ref_gx.dtype == torch.float32 and gw.dtype == ref_gw.dtype == torch.float32
    ulp = FP16_EPS * reference.float().abs().clamp(min=1.0)  # one float16 step of each output (at least 2^-10)
    assert ((emulated.float() - reference.float()).abs() <= ulp).all()
    assert torch.allclose(gx, ref_gx, rtol=2 * FP16_EPS, atol=2 * FP16_EPS * ref_gx.abs().max())
    assert torch.allclose(gw, ref_gw, rtol=2 * FP16_EPS, atol=2 * FP16_EPS * ref_gw.abs().max())


def test_an_overflowing_gradient_is_inf_where_the_float16_kernels_give_inf():
    layer, shape = _layers()["conv2d"]
    x = torch.randn(shape)
    grad_out = torch.full((2, 24, 10, 12), 4000.0, dtype=torch.float16)  # weight gradients pass 65504, not inputs'
    _, ref_gx, ref_gw = _run(layer, x, grad_out, emulate=False)
    _, gx, gw = _run(layer, x, grad_out, emulate=True)
    assert torch.isinf(ref_gw).any() and torch.isfinite(ref_gx).all()  # the case is the one meant
    assert torch.equal(torch.isinf(gw), torch.isinf(ref_gw)) and torch.isfinite(gx).all()


def test_the_float32_kernels_run_forward_and_backward_and_other_precisions_pass_through():
    layer, shape = _layers()["conv2d"]
    x = torch.randn(shape, requires_grad=True)
    policy = resolve_amp("fp16", torch.device("cpu"))
    with ConvolutionDtypes() as seen:
        with policy.autocast():
            y = layer(x)
        y.float().sum().backward()
    assert y.dtype == torch.float16 and seen.dtypes == [torch.float32, torch.float32]

    for amp, dtype in (("bf16", torch.bfloat16), ("false", torch.float32)):
        with ConvolutionDtypes() as seen, resolve_amp(amp, torch.device("cpu")).autocast():
            y = layer(x)
        assert y.dtype == dtype and seen.dtypes == [dtype], amp
