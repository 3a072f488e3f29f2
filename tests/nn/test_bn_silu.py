"""BatchNorm + SiLU with the normalized tensor recomputed in backward: the same values, less memory."""

import copy

import pytest
import torch
from torch import nn

from yolotr.nn.bn_silu import recomputable
from yolotr.nn.conv import Conv


def _pair(memory_format=torch.contiguous_format):
    torch.manual_seed(0)
    conv = Conv(6, 8, 3).train().to(memory_format=memory_format)
    with torch.no_grad():
        conv.bn.weight.uniform_(0.5, 1.5)
        conv.bn.bias.uniform_(-0.5, 0.5)
    plain = copy.deepcopy(conv)
    plain.bn.register_forward_hook(lambda *_: None)  # a hook sends it down the usual path
    return conv, plain


def _run(module, x):
    x = x.clone().requires_grad_(True)
    y = module(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_values_gradients_and_running_statistics_match_the_usual_path(memory_format):
    conv, plain = _pair(memory_format)
    assert recomputable(conv.bn, conv.act, torch.zeros(1, requires_grad=True))
    assert not recomputable(plain.bn, plain.act, torch.zeros(1, requires_grad=True))
    for step in range(2):
        x = (torch.randn(4, 6, 10, 12) * 3 + step).contiguous(memory_format=memory_format)
        y, gx = _run(conv, x)
        y_ref, gx_ref = _run(plain, x)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-6)
    for name in ("conv.weight", "bn.weight", "bn.bias"):
        got, want = conv.get_parameter(name).grad, plain.get_parameter(name).grad
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(conv.bn, name), getattr(plain.bn, name))


def test_keeps_one_activation_instead_of_two():
    def saved_bytes(module):
        sizes = {}

        def pack(t):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(torch.randn(4, 6, 32, 32, requires_grad=True))
        return sum(sizes.values())

    conv, plain = _pair()
    activation = 4 * 8 * 32 * 32 * 4  # one (B, C2, H, W) float32 map
    assert saved_bytes(plain) - saved_bytes(conv) >= 0.99 * activation  # less a few per-channel vectors


def test_eval_half_precision_and_other_activations_take_the_usual_path():
    conv, _ = _pair()
    x = torch.randn(1, 6, 8, 8, requires_grad=True)
    assert not recomputable(conv.bn, conv.act, x.half())
    assert not recomputable(conv.bn, nn.ReLU(), x)
    with torch.no_grad():
        assert not recomputable(conv.bn, conv.act, x)
    conv.eval()
    assert not recomputable(conv.bn, conv.act, x)
