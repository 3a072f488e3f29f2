"""The class branch's width across a fine-tune to another class count, as the ``ultralytics`` package (8.4)
keeps it: an 80-class checkpoint fine-tuned to 1 class keeps the branch's 80 hidden channels (a head built for
1 class has 64). yolotr refused the package's fine-tuned checkpoints ("shape mismatches 33"), and its own
fine-tune from a COCO checkpoint started the branch's hidden layers from scratch where the package's
transfers them."""

from __future__ import annotations

import pytest
import torch

from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model
from yolotr.models.weights import model_checkpoint, save_checkpoint, transfer_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _batchnorm_settings(model: torch.nn.Module) -> set[tuple[float, float]]:
    return {(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov10n.yaml"])
def test_a_fine_tune_keeps_the_checkpoints_class_width_and_reloads(name, tmp_path):
    torch.manual_seed(0)
    source = DetectionModel(name, nc=80)
    model = DetectionModel(name, nc=1)
    assert model.model[-1].class_width == 64
    report = transfer_weights(model, source.state_dict())
    head, i = model.model[-1], len(model.model) - 1
    assert head.class_width == 80
    assert _batchnorm_settings(model) == {(1e-3, 0.03)}  # the model's, also in the rebuilt branch
    hidden = [k for k in source.state_dict() if k.startswith(f"model.{i}.cv3.") and ".2." not in k]
    assert set(hidden) <= set(report.loaded)  # the branch's hidden layers came from the checkpoint
    assert f"model.{i}.cv3.0.2.weight" not in report.loaded  # the 1-class output is new
    if hasattr(head, "one2one_cv3"):
        assert head.one2one_cv3[0][-1].in_channels == 80
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(x)[0]
    path = save_checkpoint(model_checkpoint(model, names=["a"]), tmp_path / "tuned.pt")
    again = load_model(path)  # rebuilt from its YAML at the built width, then widened by its weights
    assert again.model[-1].class_width == 80
    assert _batchnorm_settings(again) == {(1e-3, 0.03)}
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], expected)


def test_another_scale_keeps_its_own_width():
    """The package widens only when the head's inputs match the checkpoint's (a branch of another scale cannot
    run on this neck); yolov8s weights given to a yolov8n keep the built width."""
    model = DetectionModel("yolov8n.yaml", nc=1)
    transfer_weights(model, DetectionModel("yolov8s.yaml", nc=80).state_dict())
    assert model.model[-1].class_width == 64


def test_the_package_keeps_the_same_width(tmp_path):
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics.nn.tasks import DetectionModel as PackageModel

    torch.manual_seed(0)
    source = PackageModel("yolov8n.yaml", nc=80, verbose=False)
    theirs = PackageModel("yolov8n.yaml", nc=1, verbose=False)
    theirs.load(source, verbose=False)
    ours = DetectionModel("yolov8n.yaml", nc=1)
    transfer_weights(ours, source.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_a_checkpoint_of_yolov5s_bottleneck_in_the_package_grammar_says_why_it_does_not_fit(tmp_path):
    """Saved before a Bottleneck row of a YAML without anchors built the package's 3x3-3x3 block."""
    from yolotr.errors import CheckpointError
    from yolotr.models.detection import load_model_yaml

    cfg = load_model_yaml("yolov8n.yaml")
    cfg["backbone"][2] = [-1, 1, "Bottleneck", [128]]
    model = DetectionModel(cfg)
    checkpoint = model_checkpoint(model, names=[str(i) for i in range(80)])
    key = "model.2.cv1.conv.weight"
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:, :, 1:2, 1:2].clone()  # YOLOv5's 1x1
    path = save_checkpoint(checkpoint, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="Bottleneck and BottleneckCSP now build the package's blocks"):
        load_model(path)


def test_a_fused_head_widens_too():
    model = DetectionModel("yolov8n.yaml", nc=1).fuse()
    model.model[-1].widen_class_branch(80)
    assert model.model[-1].class_width == 80
