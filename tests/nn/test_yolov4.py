"""YOLOv4 modules and head: parameter count, shapes, the decode rule, fp16 safety, fuse, YAML errors."""

from __future__ import annotations

import math

import pytest
import torch

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn.yolov4 import CSPDarknetStage, SPPBlock, YOLOv4Detect

YOLOV4_PARAMS = 64_363_101  # bubbliiiing/yolov4-pytorch YoloBody at 80 classes
ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]


@pytest.fixture(scope="module")
def yolov4() -> DetectionModel:
    return DetectionModel("yolov4.yaml")


@pytest.fixture(scope="module")
def yolov4_s() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("yolov4-s.yaml", nc=3)


def make_head(scales=(1.0, 1.0, 1.0), nc: int = 2) -> YOLOv4Detect:
    """A stand-alone head set up as DetectionModel does: strides 8/16/32, anchors in grid units."""
    head = YOLOv4Detect(nc, ANCHORS, scales, (8, 16, 32))
    head.stride.copy_(torch.tensor([8.0, 16.0, 32.0]))
    head.anchors /= head.stride.view(-1, 1, 1)
    return head


def test_parameter_count(yolov4):
    assert sum(p.numel() for p in yolov4.parameters()) == YOLOV4_PARAMS
    assert yolov4.stride.tolist() == [8.0, 16.0, 32.0]
    head = yolov4.model[-1]
    assert torch.allclose(head.anchors * head.stride.view(-1, 1, 1), torch.tensor(ANCHORS).float().view(3, 3, 2))


def test_yolov4_s_shapes(yolov4_s):
    assert sum(p.numel() for p in yolov4_s.parameters()) < 5_000_000
    x = torch.rand(2, 3, 128, 96)
    yolov4_s.train()
    raw = yolov4_s(x)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 16, 12, 8), (2, 3, 8, 6, 8), (2, 3, 4, 3, 8)]
    yolov4_s.eval()
    with torch.no_grad():
        decoded, raw_eval = yolov4_s(x)
    assert decoded.shape == (2, 3 * (16 * 12 + 8 * 6 + 4 * 3), 8)
    assert decoded.dtype == torch.float32 and torch.isfinite(decoded).all()
    assert len(raw_eval) == 3


def test_csp_stage_widths():
    first, other = CSPDarknetStage(32, 64, 1, first=True), CSPDarknetStage(64, 128, 2)
    assert first.cv_main.conv.out_channels == 64 and first.m[0].cv1.conv.out_channels == 32
    assert other.cv_main.conv.out_channels == 64 and other.m[1].cv1.conv.out_channels == 64
    assert first(torch.rand(1, 32, 16, 16)).shape == (1, 64, 8, 8)
    assert other(torch.rand(1, 64, 16, 16)).shape == (1, 128, 8, 8)


def test_spp_block_concatenates_13_9_5_then_identity():
    spp = SPPBlock(16, 8, (13, 9, 5)).eval()
    captured = {}
    spp.cv2.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    x = torch.rand(1, 16, 12, 12)
    with torch.no_grad():
        spp(x)
        y = spp.cv1(x)
    pooled = [torch.nn.functional.max_pool2d(y, k, 1, k // 2) for k in (13, 9, 5)]
    assert torch.equal(captured["x"], torch.cat(pooled + [y], 1))


def test_decode_width_from_tw_height_from_th():
    head = make_head()
    raw = torch.zeros(1, 3, 2, 2, 7)
    raw[..., 2] = math.log(2.0)  # tw: width doubles
    raw[..., 3] = math.log(0.5)  # th: height halves
    out = head.decode(0, raw)
    anchors = torch.tensor(ANCHORS[0]).float().view(3, 2)
    torch.testing.assert_close(out[0, :, 0, 0, 2], anchors[:, 0] * 2)
    torch.testing.assert_close(out[0, :, 0, 0, 3], anchors[:, 1] * 0.5)


def test_decode_each_head_uses_its_own_anchors():
    head = make_head()
    for i, (s, size) in enumerate(zip((8, 16, 32), (4, 2, 1))):
        out = head.decode(i, torch.zeros(1, 3, size, size, 7))
        expected = torch.tensor(ANCHORS[i]).float().view(3, 2)
        torch.testing.assert_close(out[0, :, 0, 0, 2:4], expected)
        # tx = ty = 0: the centre of each cell
        torch.testing.assert_close(out[0, 0, -1, -1, :2], torch.tensor([(size - 0.5) * s] * 2))


def test_decode_scale_moves_xy_not_wh():
    scales = (1.2, 1.1, 1.05)
    head = make_head(scales)
    torch.manual_seed(0)
    for i, (stride, size) in enumerate(zip((8, 16, 32), (4, 2, 1))):
        raw = torch.randn(2, 3, size, size, 7) * 3
        out = head.decode(i, raw)
        s = scales[i]
        gy, gx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
        cx = (raw[..., 0].sigmoid() * s - (s - 1) / 2 + gx) * stride
        cy = (raw[..., 1].sigmoid() * s - (s - 1) / 2 + gy) * stride
        anchors = torch.tensor(ANCHORS[i]).float().view(1, 3, 1, 1, 2)
        wh = raw[..., 2:4].exp() * anchors
        torch.testing.assert_close(out[..., 0], cx)
        torch.testing.assert_close(out[..., 1], cy)
        torch.testing.assert_close(out[..., 2:4], wh)
        torch.testing.assert_close(out[..., 4:], raw[..., 4:].sigmoid())
    # a saturated offset reaches (s + 1) / 2 of a cell past the corner
    raw = torch.zeros(1, 3, 4, 4, 7)
    raw[..., 0] = 30.0
    assert head.decode(0, raw)[0, 0, 0, 0, 0].item() == pytest.approx((1.2 + 1) / 2 * 8)
    assert head.xy_range(0) == pytest.approx((-0.1, 1.1))


def test_decode_fp16_does_not_overflow():
    head = make_head().half()
    raw = torch.zeros(1, 3, 4, 4, 7, dtype=torch.float16)
    raw[..., 2:4] = 12.0  # exp(12) * 40 px overflows float16
    out = head.decode(0, raw)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out[0, 2, 0, 0, 2].item() == pytest.approx(math.exp(12) * 40, rel=1e-3)


def test_autocast_forward_is_finite(yolov4_s):
    yolov4_s.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        decoded, raw = yolov4_s(torch.rand(1, 3, 64, 64))
    assert decoded.dtype == torch.float32 and torch.isfinite(decoded).all()


def test_train_step_has_finite_gradients(yolov4_s):
    yolov4_s.train()
    raw = yolov4_s(torch.rand(2, 3, 64, 64))
    loss = sum(r.float().pow(2).mean() for r in raw)
    loss.backward()
    grads = [p.grad for p in yolov4_s.parameters() if p.grad is not None]
    assert len(grads) == len(list(yolov4_s.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    yolov4_s.zero_grad(set_to_none=True)


def test_fuse_keeps_outputs():
    torch.manual_seed(1)
    model = DetectionModel("yolov4-s.yaml", nc=3)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 96, 96))  # non-trivial BatchNorm statistics
    model.eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before, _ = model(x)
        after, _ = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_head_without_scales_is_a_config_error():
    cfg = {
        "nc": 2,
        "anchors": ANCHORS,
        "backbone": [[-1, 1, "MishConv", [8, 3, 2]], [-1, 1, "MishConv", [8, 3, 2]], [-1, 1, "MishConv", [8, 3, 2]]],
        "head": [[[0, 1, 2], 1, "YOLOv4Detect", ["nc", "anchors"]]],
    }
    with pytest.raises(ConfigError, match="YOLOv4Detect"):
        DetectionModel(cfg)
