"""The ``ultralytics`` package's ``Conv2`` and ``RepVGGDW`` rows, which its ``parse_model`` builds with
arguments verbatim (as ``nn`` modules): yolotr builds them as the package does (parameter count, ``state_dict``
keys and shapes, eval outputs with the package's weights, also after ``fuse()``) and loads them from a pickled
package checkpoint; every other module its ``parse_model`` accepts is either built by yolotr or refused naming
the row and what the module is for (segmentation, pose, ...).

The first tests need only yolotr; the live half is skipped without the package (a bench extra).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model
from yolotr.nn import registry
from yolotr.nn.builder import _registry_name
from yolotr.nn.conv import Conv2
from yolotr.nn.v10_blocks import RepVGGDW

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _tiny(rows: list) -> dict:
    """A two-level anchor-free model at width 0.5 (P4 has 64 channels), ``rows`` at P4."""
    backbone = [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]]
    backbone += [[-1, 1, "Conv", [128, 3, 2]], *rows]
    head = [[[2, -1], 1, "Detect", ["nc"]]]
    return {"nc": 2, "scales": {"n": [1.0, 0.5, 1024]}, "scale": "n", "backbone": backbone, "head": head}


ROWS = [[-1, 1, "Conv2", [64, 64, 3]], [-1, 1, "RepVGGDW", [64]], [-1, 1, "Conv2", [64, 64, 5, 1]]]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_conv2_counts_as_its_arithmetic_and_fuses_to_a_conv():
    torch.manual_seed(0)
    m = Conv2(16, 32, 3, 2)
    assert _params(m) == 32 * 16 * 9 + 32 * 16 + 2 * 32  # the 3x3, the parallel 1x1, one BatchNorm
    for p in m.bn.parameters():
        nn.init.uniform_(p, 0.5, 1.5)
    m.eval()
    x = torch.rand(1, 16, 10, 12)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (1, 32, 5, 6)
        assert torch.allclose(y, m.act(m.bn(m.conv(x) + m.cv2(x))))
        m.fuse()
        assert m.cv2 is None and "cv2.weight" not in m.state_dict()
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)


def test_rows_read_verbatim_and_checked_against_their_input():
    model = DetectionModel(_tiny(ROWS))
    assert [type(m) for m in model.model[4:7]] == [Conv2, RepVGGDW, Conv2]
    assert _params(model.model[5]) == (64 * 49 + 2 * 64) + (64 * 9 + 2 * 64)  # depth-wise 7x7 and 3x3 + BatchNorms
    x = torch.rand(1, 3, 64, 96)
    model.eval()
    with torch.no_grad():
        y = model(x)[0]
        model.fuse()
        assert model.model[4].cv2 is None and not hasattr(model.model[5], "conv1")
        torch.testing.assert_close(model(x)[0], y, rtol=1e-4, atol=1e-3)
    for row, message in [
        ([-1, 1, "Conv2", [64, 32]], r"layer 4 .*Conv2's c2 \(args\[1\]\) is 32 but its input has 64 channels"),
        ([-1, 1, "Conv2", [128, 128]], r"layer 4 .*Conv2's c1 \(args\[0\]\) is 128"),
        ([-1, 1, "RepVGGDW", [32]], r"layer 4 .*RepVGGDW's ed \(args\[0\]\) is 32 but its input has 64"),
    ]:
        with pytest.raises(ConfigError, match=message):
            DetectionModel(_tiny([row]))


OTHER_TASKS = {
    "Classify": "classification",
    "Segment": "segmentation",
    "Segment26": "segmentation",
    "Pose": "pose estimation",
    "Pose26": "pose estimation",
    "OBB": "oriented boxes",
    "OBB26": "oriented boxes",
    "WorldDetect": "YOLO-World",
    "C2fAttn": "YOLO-World",
    "ImagePoolingAttn": "YOLO-World",
    "YOLOEDetect": "YOLOE",
    "YOLOESegment": "YOLOE",
    "YOLOESegment26": "YOLOE",
    "LRPCHead": "YOLOE",
    "TorchVision": "torchvision backbones",
    "Index": "torchvision backbones",
    "SemanticSegment": "semantic segmentation",
    "Depth": "depth estimation",
}


@pytest.mark.parametrize(("name", "task"), list(OTHER_TASKS.items()))
def test_other_tasks_modules_are_refused_naming_the_row_and_the_task(name, task):
    cfg = _tiny([])
    cfg["head"][-1] = [[2, -1], 1, name, ["nc"]]
    message = rf"layer 4 \[\[2, -1\], 1, '{name}', .*'{name}': an ultralytics module of {task}"
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)


# ---- live: the ultralytics package ----


def test_every_module_the_package_builds_is_built_or_refused_by_task():
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is a bench extra")
    names = sorted(
        n
        for n, v in vars(tasks).items()
        if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__.startswith("ultralytics.nn.modules")
    )
    assert "Conv2" in names and "RepVGGDW" in names and len(names) > 50
    unknown = []
    for name in names:
        try:
            registry.lookup(_registry_name(name, anchor_free=True, end2end=False))
        except KeyError as e:
            if name not in registry.PACKAGE_ONLY or "which yolotr does not build" not in e.args[0]:
                unknown.append(name)
    assert unknown == []


def _package_model(cfg: dict):
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="the ultralytics package is a bench extra")
    torch.manual_seed(0)
    theirs = tasks.DetectionModel(copy.deepcopy(cfg), verbose=False)
    generator = torch.Generator().manual_seed(1)
    for key, value in theirs.state_dict().items():  # every weight and BatchNorm statistic off its initial value
        if value.is_floating_point():
            noise = torch.rand(value.shape, generator=generator)
            value.copy_(0.5 + noise if key.endswith("running_var") else (noise - 0.5) * 0.4 + value)
    return theirs.eval()


def _output(model, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)[0]
    return y if like is None or y.shape == like.shape else y.transpose(1, 2)


def test_builds_as_the_package():
    cfg = _tiny(ROWS)
    theirs = _package_model(cfg)
    ours = DetectionModel(copy.deepcopy(cfg)).eval()
    assert _params(ours) == _params(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expected = _output(theirs, x)
    torch.testing.assert_close(_output(ours, x, expected), expected, rtol=1e-4, atol=1e-4)
    ours.fuse(), theirs.fuse()
    fused = _output(theirs, x)
    torch.testing.assert_close(_output(ours, x, fused), fused, rtol=1e-4, atol=1e-3)


def test_a_package_checkpoint_with_them_loads(tmp_path):
    theirs = _package_model(_tiny(ROWS))
    path = tmp_path / "last.pt"
    torch.save({"model": copy.deepcopy(theirs).half(), "train_args": {}, "version": "8.4"}, path)
    ours = load_model(path)
    rounded = copy.deepcopy(theirs).half().float().eval()
    assert {k: v for k, v in ours.state_dict().items()}.keys() == rounded.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, rounded.state_dict()[key]), key
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = _output(rounded, x)
    torch.testing.assert_close(_output(ours, x, expected), expected, rtol=1e-4, atol=1e-4)
