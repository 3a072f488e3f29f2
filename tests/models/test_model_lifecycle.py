"""A model after it is built: fusing for inference (every re-parameterizable block), training refused once
fused, pickling whole, and the names the shipped configs answer to."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from tests.head_inputs import head_inputs
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, resolve_model_yaml
from yolotr.models.model_names import shipped_model_names
from yolotr.nn.hgnet import RepConv
from yolotr.nn.v10_blocks import RepVGGDW


def _randomize_bn(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)


@pytest.mark.parametrize(("name", "fused_params"), [("rtdetr-l.yaml", 32_148_140), ("yolov10n.yaml", None)])
def test_fuse_folds_repconv_and_repvggdw_branches(name, fused_params):
    """``fuse()`` folded only Conv's BatchNorm: rtdetr-l kept 12 RepConv and yolov10n a RepVGGDW with their
    branches. 32,148,140 is the package's rtdetr-l parameter count after its fuse()."""
    model = DetectionModel(name).eval()
    _randomize_bn(model)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = head_inputs(model, x)
        fused = copy.deepcopy(model).fuse()
        after = head_inputs(fused, x)
    reps = [m for m in fused.modules() if isinstance(m, RepConv | RepVGGDW)]
    assert reps and not any(hasattr(m, "conv1") for m in reps)
    if fused_params is not None:
        assert sum(p.numel() for p in fused.parameters()) == fused_params
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(before, after, strict=True))


def test_a_fused_model_is_refused_for_training_before_the_run_folder(tmp_path):
    """Training after fuse() ran without BatchNorm (loss rising) and ended in a best.pt that did not load."""
    from yolotr.engine.trainer import Trainer

    model = DetectionModel("yolov8n.yaml", nc=3)
    assert not model.is_fused
    model.fuse()
    assert model.is_fused
    with pytest.raises(ConfigError, match=r"the model is fused .*cannot train"):
        Trainer({"data": "shapes", "epochs": 1, "project": str(tmp_path), "name": "run"}, model=model)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["yolov5n.yaml", "yolov8n.yaml"])
def test_a_model_pickles_whole(name):
    """The heads' load_state_dict hook was a lambda: torch.save(model) and pickle failed with
    "Can't pickle local object"."""
    model = DetectionModel(name).eval()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    again = pickle.loads(pickle.dumps(model))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)[0]
        assert torch.equal(restored(x)[0], want) and torch.equal(again(x)[0], want)
    restored.load_state_dict(model.state_dict())  # the hook still runs after unpickling
    assert not restored.model[-1].__dict__.get("_grids", restored.model[-1].__dict__.get("_anchor_cache"))


def test_every_listed_shipped_name_resolves():
    """The list (and its did-you-mean) offered rtdetr-resnet50l.yaml and rtdetr-swinv2l.yaml, names that do not
    resolve: single-scale files whose scale is not in their name are listed as they are."""
    names = shipped_model_names()
    assert {"rtdetr-resnet50.yaml", "rtdetr-swinv2.yaml", "rtdetr-l.yaml", "yolov8s.yaml"} <= set(names)
    for name in names:
        resolve_model_yaml(name)
