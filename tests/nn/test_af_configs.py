"""Our blocks in the anchor-free line: the shipped YOLOv8 / YOLO11 configs with SwinV2_CSPB,
TransformerC3 and HWD build at any multiple of 32, train under bf16 autocast, and resolve by scale.

ONNX parity of these configs (and of yolov8n / yolo11n / yolo12n) at 320 is checked by
``tests/engine/test_exporter.py::test_onnx_parity_at_320``, parametrized over every shipped YAML.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolotr.engine.config import default_config
from yolotr.engine.optim import build_optimizer
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, resolve_model_yaml
from yolotr.nn.attention import TransformerC3
from yolotr.nn.head_af import AnchorFreeDetect
from yolotr.nn.swin import SwinV2_CSPB
from yolotr.nn.wavelet import HWD
from yolotr.ops.loss import build_loss

# name -> (class of our block, the layers that hold it, (c1, c2) of those layers in order)
OURS = {
    "yolov8n-swinv2.yaml": (SwinV2_CSPB, (6, 8), ((128, 128), (256, 256))),
    "yolov8s-swinv2.yaml": (SwinV2_CSPB, (6, 8), ((256, 256), (512, 512))),
    "yolo11n-transformerc3.yaml": (TransformerC3, (10,), ((256, 256),)),
    "yolov8n-hwd.yaml": (HWD, (1, 3, 5, 7), ((16, 32), (32, 64), (64, 128), (128, 256))),
}
NC = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _blocks(model: DetectionModel, cls: type[nn.Module], index: int) -> list[nn.Module]:
    """The instances of ``cls`` that make up YAML layer ``index`` (one, or an ``nn.Sequential`` of copies)."""
    layer = model.model[index]
    return [layer] if isinstance(layer, cls) else [m for m in layer if isinstance(m, cls)]


def _channels(block: nn.Module) -> tuple[int, int]:
    if isinstance(block, HWD):
        return block.conv.conv.in_channels // 4, block.conv.conv.out_channels
    return block.cv1.conv.in_channels, block.cv3.conv.out_channels


@pytest.mark.parametrize("name", sorted(OURS))
def test_config_puts_our_block_into_the_anchor_free_line(name):
    cls, layers, channels = OURS[name]
    model = DetectionModel(name, nc=NC)
    assert isinstance(model.model[-1], AnchorFreeDetect) and model.model[-1].nc == NC
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert [_channels(b) for i in layers for b in _blocks(model, cls, i)[:1]] == list(channels)
    assert sum(isinstance(m, cls) for m in model.modules()) >= len(layers)
    if cls is SwinV2_CSPB:  # the row's number 6 at depth 0.33 repeats the whole block twice
        assert len(_blocks(model, cls, 6)) == 2 and len(_blocks(model, cls, 8)) == 1
    assert model.yaml["yaml_file"] == name


def test_width_scaled_blocks_share_one_file_per_family():
    """HWD and TransformerC3 rows are width-scaled, so one unified YAML serves every scale; SwinV2_CSPB's
    channels are verbatim, so it ships one file per scale and other letters are not found."""
    assert resolve_model_yaml("yolov8s-hwd.yaml")[0].name == "yolov8-hwd.yaml"
    assert resolve_model_yaml("yolo11s-transformerc3")[0].name == "yolo11-transformerc3.yaml"
    s = DetectionModel("yolov8s-hwd.yaml", nc=NC)
    assert [_channels(s.model[i]) for i in (1, 3, 5, 7)] == [(32, 64), (64, 128), (128, 256), (256, 512)]
    t = DetectionModel("yolo11s-transformerc3.yaml", nc=NC).model[10]
    assert _channels(t) == (512, 512) and t.transformer[0].attn.num_heads == 4
    path, scale = resolve_model_yaml("yolov8s-swinv2.yaml")
    assert (path.name, scale) == ("yolov8s-swinv2.yaml", "s")
    with pytest.raises(ConfigError, match="yolov8m-swinv2.yaml: no such model YAML"):
        DetectionModel("yolov8m-swinv2.yaml")


@pytest.fixture(scope="module")
def models() -> dict[str, DetectionModel]:
    out = {}
    for name in OURS:
        torch.manual_seed(0)
        out[name] = DetectionModel(name, nc=NC)
    return out


@pytest.mark.parametrize("name", sorted(OURS))
def test_builds_at_any_multiple_of_32(name, models):
    model = models[name].eval()
    for h, w in ((320, 320), (352, 352), (384, 640)):
        with torch.no_grad():
            decoded, raw = model(torch.rand(1, 3, h, w))
        assert [tuple(r.shape) for r in raw] == [(1, 16 * 4 + NC, h // s, w // s) for s in (8, 16, 32)]
        assert decoded.shape == (1, sum((h // s) * (w // s) for s in (8, 16, 32)), 4 + NC)
        assert torch.isfinite(decoded).all()
        boxes = decoded[0, :, :4]
        assert 0 <= boxes[:, 0].min() and boxes[:, 0].max() <= w and boxes[:, 1].max() <= h


def _targets() -> torch.Tensor:
    """``(N, 6)`` ``[image, class, cx, cy, w, h]`` normalized: two boxes in image 0, one in image 1."""
    return torch.tensor(
        [[0, 0, 0.30, 0.40, 0.25, 0.30], [0, 2, 0.70, 0.60, 0.40, 0.35], [1, 1, 0.50, 0.50, 0.60, 0.50]]
    )


@pytest.mark.parametrize("name", sorted(OURS))
def test_trains_under_bf16_autocast(name, models):
    """Three SGD steps with forward and loss under CPU bf16 autocast (what ``amp=True`` gives on CPU):
    the maps are bf16, every loss item and gradient finite, our block gets a gradient and moves."""
    torch.manual_seed(1)
    model = models[name].train()
    cls, layers, _ = OURS[name]
    ours = [p for i in layers for b in _blocks(model, cls, i) for p in b.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in ours]
    loss_fn = build_loss(model, default_config(), 96)
    optimizer = build_optimizer(model, "SGD", 0.01, 0.9, 5e-4, 0.5)
    x, targets = torch.rand(2, 3, 96, 128), _targets()
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            maps = model(x)
            loss, items = loss_fn(maps, targets)
        assert all(m.dtype == torch.bfloat16 for m in maps)
        assert torch.isfinite(loss) and torch.isfinite(items).all() and (items > 0).all()
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        assert sum(float(p.grad.abs().sum()) for p in ours if p.grad is not None) > 0
        optimizer.step()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, ours))
    model.eval()
