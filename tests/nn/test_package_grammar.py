"""The rest of the ``ultralytics`` package's detection YAMLs (YOLOv3, YOLOv6, YOLOv9, the Ghost and P2/P6
variants, RT-DETR on ResNet-101 and on YOLOv8) build from the shipped copies with the package's parameter
counts, and the grammar rules they rely on hold: in a YAML without ``anchors`` ``Bottleneck`` and
``BottleneckCSP`` are the package's (3x3 then 3x3), in YOLOv5's grammar YOLOv5's (1x1 then 3x3).

The counts were read from the package (ultralytics 8.4.190) at 80 classes;
``tests/nn/test_package_yamls_live.py`` compares weights and outputs with the package itself.
"""

from __future__ import annotations

import pytest
import torch

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn.gelan import AConv, ADown, CBFuse, CBLinear

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PACKAGE_COUNTS = {
    "yolov9t.yaml": 2_128_720,
    "yolov9s.yaml": 7_318_368,
    "yolov9e.yaml": 58_206_592,
    "yolov3.yaml": 103_754_144,
    "yolov3-tiny.yaml": 12_173_248,
    "yolov6n.yaml": 4_500_080,
    "yolov8n-ghost.yaml": 1_865_316,
    "yolov8n-ghost-p6.yaml": 2_901_100,
    "yolo26n-p2.yaml": 2_662_400,
    "yolov8n-rtdetr.yaml": 9_643_868,
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "count"), sorted(PACKAGE_COUNTS.items()))
def test_package_yaml_builds_with_the_package_count_and_runs(name, count):
    model = DetectionModel(name)
    assert _count(model) == count
    if count < 20_000_000:
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(1, 3, 128, 192))  # P6 models need multiples of 64
        out = out[0] if isinstance(out, tuple | list) else out
        assert torch.isfinite(out).all()


def _one_block(row: list, anchors: bool) -> DetectionModel:
    cfg = {
        "nc": 2,
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], row],
        "head": [[[-1], 1, "Detect", ["nc", "anchors"] if anchors else ["nc"]]],
    }
    if anchors:
        cfg["anchors"] = [[10, 13, 16, 30, 33, 23]]
    return DetectionModel(cfg)


@pytest.mark.parametrize("block", ["Bottleneck", "BottleneckCSP"])
def test_bottlenecks_follow_the_grammar_of_their_yaml(block):
    """YOLOv3's 103.8M parameters came out 68.6M: its ``Bottleneck`` rows built YOLOv5's 1x1-3x3 block."""
    row = [-1, 1, block, [32]]
    package = _one_block(row, anchors=False).model[1]
    yolov5 = _one_block(row, anchors=True).model[1]
    first = (lambda m: m.cv1) if block == "Bottleneck" else (lambda m: m.m[0].cv1)
    assert first(package).conv.kernel_size == (3, 3)
    assert first(yolov5).conv.kernel_size == (1, 1)


def test_the_activation_key_takes_torch_nn_as_the_package_writes_it():
    cfg = {
        "nc": 2,
        "activation": "torch.nn.ReLU()",
        "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
        "head": [[[-1], 1, "Detect", ["nc"]]],
    }
    assert isinstance(DetectionModel(cfg).model[0].act, torch.nn.ReLU)
    for bad in ("os.system('x')", "torch.load('x')", "torch.nn.functional.relu"):
        with pytest.raises(ConfigError, match="activation"):
            DetectionModel({**cfg, "activation": bad})


def test_gelan_down_sampling_and_the_auxiliary_branch_shapes():
    x = torch.rand(2, 8, 20, 30)
    assert ADown(8, 12)(x).shape == (2, 12, 10, 15)
    assert AConv(8, 12)(x).shape == (2, 12, 10, 15)
    parts = CBLinear(8, [4, 6])(x)
    assert [p.shape[1] for p in parts] == [4, 6]
    target = torch.rand(2, 6, 40, 60)
    fused = CBFuse([1])([parts, target])
    assert fused.shape == target.shape
    assert torch.allclose(fused, target + parts[1].repeat_interleave(2, 2).repeat_interleave(2, 3))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[-1, 1, "CBLinear", [16]]], r"CBLinear's row is \[\[c, \.\.\.\], k, s, \.\.\.\]"),
        ([[-1, 1, "CBLinear", [[8, 8]]], [[-1, 0], 1, "CBFuse", [[0, 1]]]], r"CBFuse takes \[\[i, \.\.\.\]\]"),
    ],
)
def test_malformed_auxiliary_rows_are_named(rows, message):
    cfg = {"nc": 2, "backbone": [[-1, 1, "Conv", [16, 3, 2]], *rows], "head": [[[-1], 1, "Detect", ["nc"]]]}
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)


def test_a_c2fcib_row_makes_the_detect_head_modern_as_in_the_package():
    """The package makes the class branch depthwise after a C2fCIB row (as after C3k2 / A2C2f): a YOLOv8n whose
    last C2f is a C2fCIB has 2,480,361 parameters there (yolotr built 2,801,001)."""
    from yolotr.models.detection import load_model_yaml

    cfg = load_model_yaml("yolov8n.yaml")
    cfg["head"][-2] = [-1, 3, "C2fCIB", [1024, True, True]]
    assert _count(DetectionModel(cfg, nc=3)) == 2_480_361
