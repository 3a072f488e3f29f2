"""YOLOv5's less used modules (``MixConv2d``, ``CrossConv``, ``C3SPP``, ``Contract``, ``Expand``; ``C3x`` with
YOLOv5's ``CrossConv`` inside): a YOLOv5-grammar YAML using one builds in yolotr as official YOLOv5 builds it
(parameter count, ``state_dict`` keys and shapes, eval outputs with YOLOv5's weights), and a checkpoint pickled
as YOLOv5's ``train.py`` writes one loads without YOLOv5's code.

The first tests need only yolotr (the blocks' shapes and parameter counts by their arithmetic); the live half
is skipped without the official package (a bench extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from pathlib import Path

import pytest
import torch
import yaml

import yolotr
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model
from yolotr.nn.yolov5_extra import C3SPP, Contract, CrossConv, Expand, MixConv2d, mixconv_split

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

V5N = yaml.safe_load((Path(yolotr.__file__).parent / "cfg" / "models" / "yolov5n.yaml").read_text())


def _v5n(**rows: list) -> dict:
    """yolov5n.yaml (3 classes) with backbone rows replaced: ``_v5n(r1=[-1, 1, "Contract", [2]])``."""
    cfg = copy.deepcopy(V5N)
    cfg["nc"] = 3
    for key, row in rows.items():
        cfg["backbone"][int(key[1:])] = row
    return cfg


# rows of yolov5n's backbone replaced by each module (yolov5n's widths: 0.25, so 128 -> 32 channels)
VARIANTS = {
    "MixConv2d": {"r1": [-1, 1, "MixConv2d", [128, [3, 5], 2]]},
    "MixConv2d-equal-weights": {"r1": [-1, 1, "MixConv2d", [128, [1, 3], 2, False]]},
    "CrossConv-stride": {"r3": [-1, 1, "CrossConv", [256, 3, 2]]},
    "CrossConv-shortcut": {"r2": [-1, 3, "CrossConv", [128, 3, 1, 1, 1.0, True]]},
    "C3SPP": {"r9": [-1, 1, "C3SPP", [1024, [5, 9, 13]]]},
    "C3x": {"r2": [-1, 3, "C3x", [128]], "r4": [-1, 6, "C3x", [256]]},
    "Contract": {"r1": [-1, 1, "Contract", [2]]},
    "Contract-Expand": {"r1": [-1, 1, "Contract", [4]], "r2": [-1, 1, "Expand", [2]]},
}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mixconv2d_splits_and_counts_as_its_arithmetic():
    assert mixconv_split(32, (3, 5)) == [16, 16]
    assert mixconv_split(7, (1, 3, 5)) == [3, 2, 2]  # the first groups take the remainder
    assert mixconv_split(32, (1, 3), equal_ch=False) == [29, 3]  # 32 * (1/1) / (1 + 1/9) = 28.8 and 3.2
    m = MixConv2d(16, 32, [3, 5], 2).eval()
    # two depth-wise convs (groups = gcd(16, 16)): 16 * 3 * 3 + 16 * 5 * 5, and BatchNorm2d(32)'s weight and bias
    assert _params(m) == 16 * 9 + 16 * 25 + 2 * 32
    assert m(torch.rand(1, 16, 10, 12)).shape == (1, 32, 5, 6)
    with pytest.raises(ValueError, match="cannot split 15 channels"):
        MixConv2d(8, 15, (1, 3), equal_ch=False)  # 13.5 and 1.5: YOLOv5's solver rounds them to 13 + 1


def test_crossconv_and_c3spp_count_as_their_arithmetic():
    m = CrossConv(32, 32, 3, 1, 1, 1.0, True).eval()
    assert _params(m) == 2 * (32 * 32 * 3 + 2 * 32)  # a 1x3 and a 3x1 Conv, each with its BatchNorm
    x = torch.rand(1, 32, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), x + m.cv2(m.cv1(x)))  # the residual
    assert CrossConv(32, 64, 3, 2)(x).shape == (1, 64, 4, 4)
    c3spp = C3SPP(64, 64, [5, 9, 13])
    c3 = 2 * (64 * 32 + 64) + 64 * 64 + 128  # C3's cv1, cv2 (64 -> 32) and cv3 (64 -> 64)
    spp = (32 * 16 + 32) + (64 * 32 + 64)  # SPP(32, 32): cv1 32 -> 16, cv2 4 * 16 -> 32
    assert _params(c3spp) == c3 + spp
    assert c3spp(torch.rand(1, 64, 8, 8)).shape == (1, 64, 8, 8)


def test_contract_and_expand_move_pixels_as_yolov5():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    y = Contract(2)(x)
    assert y.shape == (2, 12, 2, 3)
    # channels by offset (dy, dx), then by channel: (0, 0), (0, 1), (1, 0), (1, 1)
    for block, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert torch.equal(y[:, 3 * block : 3 * block + 3], x[..., dy::2, dx::2])
    assert torch.equal(Expand(2)(y), x)
    assert Expand(2)(torch.rand(1, 16, 3, 5)).shape == (1, 4, 6, 10)


def test_a_yaml_with_contract_and_expand_keeps_yolov5n_strides_and_channels():
    model = DetectionModel(_v5n(**VARIANTS["Contract-Expand"]))
    rows = model.rows
    assert [r.args for r in rows[1:3]] == [[4], [2]]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y0 = model.model[0](x)
        y1 = model.model[1](y0)
        y2 = model.model[2](y1)
    # Contract(4) takes P1/2's 16 channels to 256 at P3/8, Expand(2) back to 64 at P2/4
    assert [tuple(y.shape) for y in (y0, y1, y2)] == [(1, 16, 32, 32), (1, 256, 8, 8), (1, 64, 16, 16)]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert rows[3].params == 64 * 64 * 9 + 2 * 64  # the next Conv [256, 3, 2] reads Expand's 64 channels


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([-1, 1, "Expand", [3]], r"layer 1 .*Expand\(3\) needs input channels divisible by 9, got 16"),
        # 6 x 0.33 repeats: 2
        ([-1, 6, "Expand", [4]], r"layer 1 .*Expand\(4\) 2 times needs input channels divisible by 256, got 16"),
        ([-1, 1, "Expand", [2]], None),  # 16 channels / 4: builds
        ([-1, 1, "Contract", [0]], r"layer 1 .*Contract's row is \[gain\]"),
        ([-1, 1, "Contract", ["two"]], r"layer 1 .*Contract's row is \[gain\]"),
        ([-1, 1, "MixConv2d", [64, [1, 3, 5], 1, False]], r"layer 1 .*cannot split 16 .* shares are \[14, 2, 1\]"),
        ([-1, 1, "MixConv2d", [32, [1, 5], 1, False]], r"layer 1 .*cannot split 8 .* shares are \[8, 0\]"),
    ],
)
def test_rows_yolov5_would_build_broken_are_config_errors(row, message):
    cfg = _v5n(r1=row)
    if message is None:
        assert DetectionModel(cfg).model[2].cv1.conv.in_channels == 4
        return
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)


def test_segment_in_yolov5_grammar_is_refused_naming_the_row():
    cfg = _v5n()
    cfg["head"][-1] = [[17, 20, 23], 1, "Segment", ["nc", "anchors", 32, 256]]
    with pytest.raises(ConfigError, match=r"layer 24 .*Segment.*segmentation"):
        DetectionModel(cfg)


# ---- live: official YOLOv5 (the pip package) ----


def _yolov5_model(cfg: dict):
    yolo = pytest.importorskip("yolov5.models.yolo", reason="the official YOLOv5 package is a bench extra")
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = yolo.Model(copy.deepcopy(cfg))
    generator = torch.Generator().manual_seed(1)
    state = theirs.state_dict()
    for key, value in state.items():  # every weight and BatchNorm statistic away from its initial value
        if value.is_floating_point() and not key.endswith(("anchors", "anchor_grid")):
            noise = torch.rand(value.shape, generator=generator)
            value.copy_(0.5 + noise if key.endswith("running_var") else (noise - 0.5) * 0.4 + value)
    return theirs


def _outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        decoded, raw = model(x)
    return [decoded, *raw]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_builds_as_official_yolov5(variant):
    cfg = _v5n(**VARIANTS[variant])
    theirs = _yolov5_model(cfg).eval()
    ours = DetectionModel(copy.deepcopy(cfg)).eval()
    assert _params(ours) == _params(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    assert torch.equal(ours.stride, theirs.stride)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for got, expected in zip(_outputs(ours, x), _outputs(theirs, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    ours.fuse()  # BatchNorms folded (MixConv2d keeps its own, as YOLOv5's fuse does)
    for got, expected in zip(_outputs(ours, x), _outputs(theirs, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("variant", ["MixConv2d", "CrossConv-stride", "C3SPP", "C3x", "Contract-Expand"])
def test_an_official_checkpoint_with_the_module_loads(variant, tmp_path, monkeypatch):
    cfg = _v5n(**VARIANTS[variant])
    theirs = _yolov5_model(cfg).eval()
    # official YOLOv5 runs from its repository: its classes pickle as models.yolo / models.common /
    # models.experimental (the pip package's as yolov5.models.*)
    import yolov5.models

    monkeypatch.setitem(sys.modules, "models", yolov5.models)
    for cls in {type(m) for m in theirs.modules()}:
        if cls.__module__.startswith("yolov5.models."):
            official = cls.__module__.removeprefix("yolov5.")
            monkeypatch.setitem(sys.modules, official, sys.modules[cls.__module__])
            monkeypatch.setattr(cls, "__module__", official)
    path = tmp_path / "last.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(theirs).half(), "optimizer": None}, path)
    monkeypatch.undo()
    assert (b"models.experimental" in path.read_bytes()) == (variant == "MixConv2d")

    ours = load_model(path)
    rounded = copy.deepcopy(theirs).half().float().eval()
    state = rounded.state_dict()
    assert ours.state_dict().keys() == state.keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for got, expected in zip(_outputs(ours, x), _outputs(rounded, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
