"""Divergences from the ``ultralytics`` package that fuzzing the YAML builder with random configs found: each
config builds in yolotr as in the package (same ``state_dict`` keys and shapes, same outputs with its weights).
The package half is skipped without the package (a bench extra: ``pip install -e .[bench]``)."""

from __future__ import annotations

import copy

import pytest
import torch

from yolotr.models.detection import DetectionModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny(rows: list, scale: list) -> dict:
    """A two-level anchor-free model: a stem, two stride-2 convs, ``rows`` at P4, a Detect on P3 and P4."""
    backbone = [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]]
    backbone += [[-1, 1, "Conv", [128, 3, 2]], *rows]
    return {"nc": 2, "scales": {"n": scale}, "backbone": backbone, "head": [[[2, -1], 1, "Detect", ["nc"]]]}


def _same_as_package(cfg: dict, size: tuple[int, int] = (64, 96)) -> None:
    ultralytics = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is a bench extra")
    torch.manual_seed(0)
    theirs = ultralytics.DetectionModel(copy.deepcopy(cfg), verbose=False)
    ours = DetectionModel(copy.deepcopy(cfg))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        expected, got = theirs(x)[0], ours(x)[0]
    got = got if got.shape == expected.shape else got.transpose(1, 2)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_psa_below_128_channels_has_one_head_as_in_the_package():
    """PSA at 64 channels (``[-1, 1, PSA, [128]]`` at width 0.5) was refused ("needs at least 128 channels");
    the package builds it with one attention head (``max(c // 64, 1)``)."""
    cfg = _tiny([[-1, 1, "PSA", [128]]], [1.0, 0.5, 1024])
    model = DetectionModel(copy.deepcopy(cfg))
    assert model.model[4].attn.num_heads == 1
    _same_as_package(cfg)


def test_v10detect_keeps_reg_max_16_as_the_package(caplog):
    """``reg_max: 8`` with a v10Detect head built 8-bin box branches; the package's v10Detect is not given the
    YAML's reg_max and always has 16 (keys' shapes differed, its checkpoints would not load)."""
    cfg = _tiny([], [1.0, 0.25, 1024])
    cfg["head"][-1][2], cfg["reg_max"] = "v10Detect", 8
    model = DetectionModel(copy.deepcopy(cfg))
    assert model.model[-1].reg_max == 16
    assert "v10Detect ignores 'reg_max: 8'" in caplog.text
    ultralytics = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is a bench extra")
    theirs = ultralytics.DetectionModel(copy.deepcopy(cfg), verbose=False)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_rtdetr_with_a_p6_level_builds_as_in_the_package():
    """An RT-DETR whose neck joins an upsampled P6 to P5 was refused: its strides were measured on a 32x32 image,
    where P6 (1x1, upsampled to 2x2) does not fit P5 (1x1). The package does not measure and builds it."""
    backbone = [[-1, 1, "Conv", [c, 3, 2]] for c in (16, 32, 32, 64, 64, 64)]  # P1 .. P6
    head = [
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 1, "Conv", [64, 1, 1]],
        [[8, 5], 1, "RTDETRDecoder", ["nc", 32, 10, 4, 4, 1, 64]],
    ]
    cfg = {"nc": 2, "scales": {"n": [1.0, 1.0, 1024]}, "backbone": backbone, "head": head}
    model = DetectionModel(copy.deepcopy(cfg))
    assert model.model[-1].stride.tolist() == [32.0, 64.0]
    ultralytics = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is a bench extra")
    theirs = ultralytics.RTDETRDetectionModel(copy.deepcopy(cfg), verbose=False)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
