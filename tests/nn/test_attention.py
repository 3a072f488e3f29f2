"""TransformerC3 (layout, batch independence, SDPA against nn.MultiheadAttention, AMP) and C3TR."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolotr.nn.attention import (
    C3TR,
    MultiheadSelfAttention,
    TransformerC3,
    TransformerC3Layer,
    to_map,
    to_tokens,
)

IMAGE_SIZES = [(320, 320), (352, 352), (416, 416), (384, 640), (640, 640)]


def distinct_map(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """Every (image, channel, row, column) holds a different value."""
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w) / (b * c * h * w)


def test_token_round_trip_is_the_identity_on_a_non_square_map():
    x = distinct_map(2, 5, 3, 7)
    tokens = to_tokens(x)
    assert tokens.shape == (2, 21, 5)
    assert torch.equal(tokens[1, 2 * 7 + 4], x[1, :, 2, 4])  # token i * W + j is position (i, j)
    assert torch.equal(to_map(tokens, 3, 7), x)


def identity_layers(block: TransformerC3) -> None:
    """Zero the output projections, so every Transformer layer is exactly the identity."""
    with torch.no_grad():
        for layer in block.transformer:
            for lin in (layer.attn.out_proj, layer.mlp[2]):
                lin.weight.zero_()
                lin.bias.zero_()


def test_distinct_values_keep_their_layout_through_every_transformer_layer():
    block = TransformerC3(8, 16, n=3, num_heads=2).eval()
    identity_layers(block)
    seen = []
    for layer in block.transformer:
        layer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    x = distinct_map(2, 8, 3, 5)
    path = {}
    block.cv2.register_forward_hook(lambda m, args, out: path.setdefault("cv2_in", args[0]))
    with torch.no_grad():
        block(x)
        expected = block.cv1(x)
    assert len(seen) == 3 and all(torch.equal(i, o) for i, o in seen)
    assert torch.equal(path["cv2_in"], expected)


def test_transformer_path_is_equivariant_to_moving_positions():
    """Without position encoding, moving pixels moves the transformer output the same way (no scrambling)."""
    torch.manual_seed(0)
    block = TransformerC3(8, 16, n=2, num_heads=2).eval()
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        y = block(x)
        y_moved = block(x.flip(-1).transpose(-1, -2))
    torch.testing.assert_close(y_moved, y.flip(-1).transpose(-1, -2), atol=1e-5, rtol=1e-5)


def test_no_image_depends_on_the_others_in_eval_mode():
    torch.manual_seed(0)
    block = TransformerC3(8, 16, n=2, num_heads=2, pos="conv").eval()
    x = torch.randn(4, 8, 5, 3)
    with torch.no_grad():
        batch = block(x)
        alone = torch.cat([block(x[i : i + 1]) for i in range(4)])
        other = block(torch.cat([x[:1], torch.randn(3, 8, 5, 3)]))
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other[:1], batch[:1], atol=1e-5, rtol=1e-5)


def test_sdpa_attention_equals_nn_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadSelfAttention(16, 4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_keys_follow_the_published_block():
    keys = set(TransformerC3(16, 32, n=2, num_heads=4).state_dict())
    for i in (0, 1):
        for k in (
            "attn.in_proj_weight",
            "attn.in_proj_bias",
            "attn.out_proj.weight",
            "attn.out_proj.bias",
            "norm1.weight",
            "norm1.bias",
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
            "norm2.weight",
            "norm2.bias",
        ):
            assert f"transformer.{i}.{k}" in keys
    block = TransformerC3(16, 32)
    assert block.cv1.conv.weight.shape == (16, 16, 1, 1)
    assert block.cv2.conv.weight.shape == (16, 16, 1, 1)
    assert block.cv3.conv.weight.shape == (32, 32, 1, 1)
    assert not any(k.startswith("pos") for k in keys)
    with pytest.raises(ValueError, match="divide"):
        TransformerC3(16, 32, num_heads=3)


def test_layer_is_pre_norm_and_xavier_initialized():
    layer = TransformerC3Layer(32, 4)
    bound = (6 / (32 + 96)) ** 0.5
    assert layer.attn.in_proj_weight.abs().max() <= bound
    assert layer.attn.in_proj_bias.abs().sum() == 0
    x = torch.randn(2, 5, 32) * 100
    layer.eval()
    with torch.no_grad():  # pre-norm: the residual stream keeps the input scale
        assert (layer(x) - x).abs().max() < x.abs().max()


@pytest.mark.parametrize("pos", ["conv", "learned"])
def test_position_encodings_work_at_any_size(pos):
    block = TransformerC3(8, 16, n=1, num_heads=2, pos=pos, size=4)
    for hw in ((4, 4), (3, 7), (9, 5)):
        y = block(torch.randn(2, 8, *hw))
        assert y.shape == (2, 16, *hw)
        y.mean().backward()
    assert torch.isfinite(block.pos.grad if pos == "learned" else block.pos.weight.grad).all()


def test_train_step_under_bf16_autocast_is_finite_and_close_to_fp32():
    torch.manual_seed(0)
    block = TransformerC3(16, 32, n=2, num_heads=4, pos="conv", dropout=0.1)
    x = torch.randn(2, 16, 5, 6)
    block.eval()
    with torch.no_grad():
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()  # stated tolerance: 5% of the range
    block.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = block(x).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)


@pytest.mark.parametrize("imgsz", IMAGE_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_block_shapes_at_detector_strides(imgsz):
    blocks = (TransformerC3(16, 32, n=1, num_heads=4, pos="conv").eval(), C3TR(16, 32, n=1).eval())
    with torch.no_grad():
        for block in blocks:
            for stride in (16, 32):
                h, w = imgsz[0] // stride, imgsz[1] // stride
                assert block(torch.randn(1, 16, h, w)).shape == (1, 32, h, w)


def test_c3tr_keeps_yolov5_layout():
    block = C3TR(64, 64, n=1)
    keys = set(block.state_dict())
    assert {"m.linear.weight", "m.tr.0.q.weight", "m.tr.0.ma.in_proj_weight", "m.tr.0.fc2.weight"} <= keys
    convs = 64 * 32 + 64 * 32 + 64 * 64 + 2 * (32 + 32 + 64)
    layer = 3 * 32 * 32 + (3 * 32 * 32 + 3 * 32) + (32 * 32 + 32) + 2 * 32 * 32  # q, k, v, ma, fc1, fc2
    assert sum(p.numel() for p in block.parameters()) == convs + (32 * 32 + 32) + layer
