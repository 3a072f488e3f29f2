"""Swin V2 layer and CSP block: the SDPA implementation against a literal oracle, caches, AMP, shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.nn.swin_oracle import oracle_layer, oracle_mask
from yolotr.nn.swin import (
    SwinV2_CSPB,
    SwinV2Block,
    SwinV2Layer,
    WindowAttentionV2,
    relative_coords_table,
    relative_position_index,
    shift_mask,
    window_index,
    window_partition,
    window_reverse,
)

IMAGE_SIZES = [(320, 320), (352, 352), (416, 416), (384, 640), (640, 640)]


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights: logit scales above the clamp for some heads, biases, LayerNorm affine."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(2.0 + torch.rand(p.shape, generator=g) * 3.0)  # exp 7..150: the clamp at 100 matters
            elif "cpb_mlp" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (12, 8), (7, 5), (11, 3), (3, 2), (4, 9)])
def test_layer_matches_literal_oracle(shift, hw):
    torch.manual_seed(0)
    layer = randomize(SwinV2Layer(32, 2, window=4, shift=shift)).eval()
    x = torch.randn(2, 32, *hw)
    with torch.no_grad():
        ours = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        ref = oracle_layer(layer, x)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_layer_gradients_match_oracle():
    torch.manual_seed(1)
    layer = randomize(SwinV2Layer(16, 2, window=4, shift=2), seed=1)
    x = torch.randn(2, 16, 6, 5)
    ours = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    (ours * torch.linspace(-1, 1, ours.numel()).view_as(ours)).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    ref = oracle_layer(layer, x)
    (ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum().backward()
    for n, p in layer.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-5 * p.grad.abs().max().item(), rtol=1e-4, msg=n)


def test_tables_and_mask_match_the_published_construction():
    idx = relative_position_index(7)
    assert idx.shape == (49, 49) and idx.dtype == torch.int64
    assert idx.min() == 0 and idx.max() == 13 * 13 - 1 and idx[0, 0] == idx[48, 48] == 6 * 13 + 6
    table = relative_coords_table(7)
    assert table.shape == (1, 13, 13, 2)
    assert abs(table.abs().max().item() - math.log2(9) / 3) < 1e-6  # log-spaced, 8 * (w - 1) / (w - 1) at the edge
    torch.testing.assert_close(shift_mask(14, 21, 7, 3), oracle_mask(14, 21, 7, 3), atol=0, rtol=0)


def test_window_partition_round_trip_keeps_layout():
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2, 6, 16, 3)
    assert torch.equal(windows[1, 4, 5], x[1, 5, 4 + 1])  # window (1, 1), row 1 col 1
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_shift_mask_is_cached_per_size_and_device():
    layer = SwinV2Layer(16, 2, window=4, shift=2).eval()
    with torch.no_grad():
        layer(torch.randn(1, 8, 8, 16))
        first = layer.attn_mask(8, 8, torch.device("cpu"))
        layer(torch.randn(3, 7, 5, 16))  # pads to 8 x 8: same mask
        assert layer.attn_mask(8, 8, torch.device("cpu")) is first
        layer(torch.randn(1, 12, 8, 16))
    assert set(layer._mask_cache) == {(8, 8, torch.device("cpu")), (12, 8, torch.device("cpu"))}
    assert SwinV2Layer(16, 2, window=4, shift=0).attn_mask(8, 8, torch.device("cpu")) is None


def test_position_bias_cached_in_eval_and_refreshed_when_weights_change():
    attn = WindowAttentionV2(16, 2, window=4)
    with torch.no_grad():
        first = attn.position_bias()
        assert attn.position_bias() is first
        attn.cpb_mlp[2].weight.add_(1.0)
        second = attn.position_bias()
    assert second is not first and not torch.equal(first, second)
    assert first.shape == (2, 16, 16) and first.dtype == torch.float32
    assert ((first > 0) & (first < 16)).all()
    bias = attn.position_bias()  # grad enabled: recomputed and differentiable
    assert bias.requires_grad


def test_constant_tables_are_not_persistent_and_published_dicts_load_strictly():
    block = SwinV2_CSPB(64, 64, n=2, num_heads=2)
    sd = block.state_dict()
    assert not any("relative_" in k for k in sd)
    published = dict(sd)
    for i in range(2):
        published[f"m.blocks.{i}.attn.relative_coords_table"] = relative_coords_table(7)
        published[f"m.blocks.{i}.attn.relative_position_index"] = relative_position_index(7)
    block.load_state_dict(published, strict=True)
    block.m.blocks[0].attn.set_window_size(5)
    assert block.m.blocks[0].attn.relative_position_index.shape == (25, 25)


def test_block_keys_follow_the_published_names():
    block = SwinV2_CSPB(64, 32, n=2)
    keys = set(block.state_dict())
    for k in (
        "cv1.conv.weight",
        "cv2.conv.weight",
        "cv3.conv.weight",
        "m.blocks.0.attn.logit_scale",
        "m.blocks.0.attn.q_bias",
        "m.blocks.0.attn.v_bias",
        "m.blocks.0.attn.cpb_mlp.0.weight",
        "m.blocks.0.attn.cpb_mlp.2.weight",
        "m.blocks.1.attn.qkv.weight",
        "m.blocks.1.attn.proj.bias",
        "m.blocks.1.mlp.fc1.weight",
        "m.blocks.1.mlp.fc2.bias",
        "m.blocks.1.norm1.weight",
        "m.blocks.1.norm2.bias",
    ):
        assert k in keys, k
    assert "m.blocks.0.attn.qkv.bias" not in keys and "m.blocks.0.attn.cpb_mlp.2.bias" not in keys
    assert block.m.blocks[0].shift == 0 and block.m.blocks[1].shift == 3
    assert block.m.blocks[0].attn.num_heads == 1  # c2 // 32
    with pytest.raises(ValueError, match="heads"):
        SwinV2_CSPB(16, 16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_train_step_under_autocast_is_finite_and_close_to_fp32(dtype):
    """9 x 11 pads to 14 x 14: the zero-padded keys must not give NaN gradients (fp16 overflowed there)."""
    torch.manual_seed(0)
    block = randomize(SwinV2_CSPB(32, 32, n=2, num_heads=2), seed=3)
    with torch.no_grad():  # logit scales as trained blocks have them (the oracle files: 5..30); at the clamp
        for layer in block.m.blocks:  # (100) a bf16 q alone moves logits by ~0.4
            layer.attn.logit_scale.uniform_(math.log(5.0), math.log(30.0))
    x = torch.randn(2, 32, 9, 11)
    ref = block(x)
    ref.square().mean().backward()
    ref_grad = block.m.blocks[1].attn.logit_scale.grad.clone()
    block.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        out = block(x)
        loss = out.float().square().mean()
    loss.backward()
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
    # bf16 has 8 mantissa bits, fp16 11; the stated tolerance is 5% of the output range
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()
    assert torch.isfinite(block.m.blocks[1].attn.logit_scale.grad).all() and ref_grad.abs().sum() > 0


def test_half_precision_module_keeps_constants_in_its_dtype():
    block = SwinV2Block(16, 2, n=2, window=4).to(torch.bfloat16).eval()
    with torch.no_grad():
        y = block(torch.randn(1, 16, 6, 6, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


@pytest.mark.parametrize("imgsz", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_block_shapes_at_detector_strides(imgsz):
    block = SwinV2_CSPB(32, 32, n=2, num_heads=2).eval()
    with torch.no_grad():
        for stride in (16, 32):
            h, w = imgsz[0] // stride, imgsz[1] // stride
            assert block(torch.randn(1, 32, h, w)).shape == (1, 32, h, w)


@pytest.mark.parametrize("shift", [0, 2], ids=["no-shift", "shift-mask"])
def test_window_attention_matches_timm_in_float64(shift):
    """Same weights in timm's Swin V2 ``WindowAttention``: float64 must stay float64 (no float32 inside)."""
    swin_v2 = pytest.importorskip("timm.models.swin_transformer_v2", reason="timm is a dev dependency")
    dim, heads, window, hw = 32, 4, 4, (8, 12)
    ours = randomize(WindowAttentionV2(dim, heads, window), seed=5).double().eval()
    ref = swin_v2.WindowAttention(dim, (window, window), heads, qkv_bias=True).double().eval()
    # the parameter names are the same (timm's k_bias is a zero, non-persistent buffer); strict catches drift
    ref.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(ref.relative_coords_table, ours.relative_coords_table, atol=0, rtol=0)
    torch.testing.assert_close(ref.relative_position_index, ours.relative_position_index, atol=0, rtol=0)

    b = 2
    x = torch.randn(b, hw[0] // window * (hw[1] // window), window * window, dim, dtype=torch.float64)
    mask = shift_mask(*hw, window, shift) if shift else None
    with torch.no_grad():
        got = ours(x, mask)
        # timm takes (B * nW, N, C) windows, batch-major, and a (nW, N, N) mask
        want = ref(x.reshape(-1, window * window, dim), None if mask is None else mask.double())
    assert got.dtype == torch.float64
    if shift:
        assert (mask != 0).any()  # the mask does cut some windows
    # float32 arithmetic anywhere inside would be ~1e-6 off: the bar is far below that
    torch.testing.assert_close(got.reshape_as(want), want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (3, 10)])
@pytest.mark.parametrize("shift", [0, 2])
def test_window_index_is_pad_roll_partition(hw, shift):
    """The one-gather token order equals zero-pad + roll(-shift) + window_partition, and its inverse crops back."""
    h, w = hw
    ws = 4
    x = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w, 1)  # 0 only where padded
    hp, wp = h + (-h % ws), w + (-w % ws)
    padded = torch.nn.functional.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    want = window_partition(torch.roll(padded, shifts=(-shift, -shift), dims=(1, 2)), ws).reshape(-1)
    index, inverse, pads = window_index(h, w, ws, shift)
    got = torch.where(index >= 0, x.reshape(-1)[index.clamp(min=0)], torch.zeros(()))
    assert torch.equal(got, want)
    assert torch.equal(index[inverse], torch.arange(h * w))
    assert torch.equal(pads, torch.nonzero(want == 0).view(-1)) and len(pads) == hp * wp - h * w


def test_layer_gradients_are_exact_in_float64():
    """gradcheck through the hand-written backwards (gather, head split, cosine, softmax in place), with padding."""
    torch.manual_seed(2)
    layer = randomize(SwinV2Layer(8, 2, window=4, shift=2), seed=2).double()
    x = torch.randn(1, 5, 6, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)


def test_attention_functions_have_exact_gradients():
    """Each hand-written backward against finite differences, including the scale and bias gradients."""
    from yolotr.nn.swin import _CosineAttention, _FromWindows, _SplitHeads, _ToWindows, _UnitVectors

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    q, k, v = rand(2, 3, 2, 4, 5), rand(2, 3, 2, 4, 5), rand(2, 3, 2, 4, 5)
    scale = (torch.rand(2, 1, 1, generator=g, dtype=torch.float64) * 10 + 1).requires_grad_()
    bias = rand(3, 2, 4, 4)  # per window and head, broadcast over the batch
    assert torch.autograd.gradcheck(_CosineAttention.apply, (q, k, scale, bias, v), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: _UnitVectors.apply(t, 1e-12), (rand(2, 3, 4, 5),))
    assert torch.autograd.gradcheck(lambda t: _SplitHeads.apply(t, 2), (rand(2, 3, 4, 3 * 2 * 5),))
    index, inverse, pads = window_index(5, 6, 4, 2)
    assert len(pads) == 64 - 30
    assert torch.autograd.gradcheck(lambda t: _ToWindows.apply(t, index, inverse, pads), (rand(2, 30, 3),))
    assert torch.autograd.gradcheck(lambda t: _FromWindows.apply(t, index, inverse, pads), (rand(2, 64, 3),))


def test_padded_keys_get_a_zero_gradient_not_one_over_eps():
    """A zero vector (the key of a padded token) normalizes to 0 with a zero gradient, as unit_vectors promises."""
    attn = randomize(WindowAttentionV2(8, 2, window=2), seed=4)
    x = torch.randn(1, 1, 4, 8)
    x[0, 0, 3] = 0.0  # k has no bias: this token's key is exactly zero
    x.requires_grad_(True)
    attn(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() < 1e3
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_cached_position_bias_equals_the_recomputed_one_and_is_computed_once_per_forward(monkeypatch):
    attn = randomize(WindowAttentionV2(16, 2, window=4), seed=6)
    fresh = attn.position_bias()  # grad enabled: recomputed, not cached
    assert fresh.requires_grad and attn._bias_cache is None
    with torch.no_grad():
        cached = attn.position_bias()
        assert attn.position_bias() is cached
    torch.testing.assert_close(cached, fresh.detach(), atol=0, rtol=0)

    calls = []
    original = WindowAttentionV2.position_bias
    monkeypatch.setattr(WindowAttentionV2, "position_bias", lambda self: calls.append(1) or original(self))
    layer = SwinV2Layer(16, 2, window=4, shift=2)
    layer(torch.randn(2, 12, 8, 16)).sum().backward()  # 2 images x 6 windows, training
    assert len(calls) == 1


def test_float32_forward_is_the_literal_arithmetic():
    """fp32 follows the published order of operations (normalize, q @ k^T, scale, bias, softmax): same bits."""
    torch.manual_seed(3)
    layer = randomize(SwinV2Layer(32, 4, window=7, shift=3), seed=3).eval()
    x = torch.randn(2, 32, 10, 9)  # pads to 14 x 14, window 7: 49 tokens per window
    with torch.no_grad():
        ours = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        ref = oracle_layer(layer, x)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    layer.train()  # the autograd path computes the same forward
    torch.testing.assert_close(layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), ref, atol=0, rtol=0)


@pytest.mark.parametrize("traced_hw", [(14, 14), (10, 13)])
def test_onnx_traced_at_any_size_pads_at_the_others(traced_hw, tmp_path):
    """A block exported at a map whose sides are multiples of the window (no padding slots) pads correctly at
    other sizes, as one traced at a padded size does (the padding is not a branch fixed at trace time)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    torch.manual_seed(0)
    block = SwinV2_CSPB(64, 64, 2, False, 2, 7).eval()  # two layers: the second one shifted
    path = tmp_path / "swin.onnx"
    torch.onnx.export(
        block, (torch.randn(1, 64, *traced_hw),), str(path), opset_version=17, input_names=["x"],
        dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for hw in ((14, 14), (9, 12), (10, 13)):
        x = torch.randn(1, 64, *hw)
        with torch.no_grad():
            want = block(x).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, atol=1e-4, rtol=1e-4)
