"""The lines a user of the ``ultralytics`` package writes on day one: ``task``, ``device``, ``eval()``,
``YOLO("yolov8n.yaml").load("yolov8n.pt")``, ``boxes.id``, ``Results.new()``, ``str(model.export())``,
``predict(exist_ok=True)``, ``val(batch=, device=)``, a PIL image's file name, and the hints of refused settings."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from tests.engine.conftest import tiny_train_cfg
from yolotr import YOLO
from yolotr.engine import exporter, validator
from yolotr.engine.config import resolve_config
from yolotr.engine.export_check import ExportResult
from yolotr.engine.results import Boxes, Results
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def rule_pt():
    """A YOLOv8n checkpoint written by the package's own ``save()`` (80 classes)."""
    return shared_path("reference", "ultralytics", "yolov8n_rule.pt")


def test_task_device_and_eval_as_the_package():
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    assert model.task == "detect"
    assert model.device == torch.device("cpu")
    model.model.train()
    assert model.eval() is model and not model.model.training


def test_load_copies_the_checkpoint_into_a_yaml_model(rule_pt):
    model = YOLO("yolov8n.yaml", verbose=False)
    assert model.load(rule_pt) is model
    expected = YOLO(rule_pt, verbose=False).model.state_dict()
    got = model.model.state_dict()
    assert all(torch.equal(got[k].float(), v.float()) for k, v in expected.items())


def test_load_into_a_fused_model_builds_it_again_with_batchnorm(caplog):
    """``model.fuse()`` then ``model.load(pt)`` loaded each checkpoint convolution into a convolution with its
    BatchNorm folded in: yolov5n found nothing on bus.jpg, without a word."""
    weights, bus = shared_path("weights", "yolov5n.pt"), shared_path("images", "bus.jpg")
    want = YOLO(weights, verbose=False).predict(bus, backend="torch", verbose=False)[0]
    model = YOLO(weights, verbose=True).fuse()
    with caplog.at_level(logging.INFO, logger="yolotr"):
        model.load(weights)
    assert "the model was fused; built again from its YAML" in caplog.text and not model.model.is_fused
    assert model.model.names == want.names
    got = model.predict(bus, backend="torch", verbose=False)[0]
    assert len(want) == 5 and torch.allclose(got.boxes.data, want.boxes.data, atol=1e-3)


def test_save_is_fused_cpu_and_the_members_yolotr_lacks(tmp_path):
    """``model.save(path)``, ``is_fused()`` and ``cpu()`` as the package's; ``track``, ``tune``, ``benchmark``
    and the like say what yolotr has instead of a bare AttributeError."""
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    path = model.save(tmp_path / "m.pt")
    again = YOLO(path, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(model.model.state_dict().values(), again.model.state_dict().values()))
    assert again.names == model.names and model.cpu() is model and model.device == torch.device("cpu")
    assert not model.is_fused() and model.fuse().is_fused()
    with pytest.raises(AttributeError, match="'track': yolotr does not track objects"):
        model.track("video.mp4")
    with pytest.raises(AttributeError, match="'tune': yolotr has no hyperparameter tuner; `yolotr compare`"):
        model.tune()
    assert getattr(model, "no_such_member", None) is None


def test_load_then_train_on_other_classes_starts_from_the_loaded_weights(rule_pt, tiny_shapes, tmp_path):
    """``yaml.load(pt).train(data=<3 classes>)``: the model the trainer builds for 3 classes takes the loaded
    weights (every tensor but the class branch's), not the seeded initialization of the YAML (lr0=0: unchanged)."""
    model = YOLO("yolov8n.yaml", verbose=False).load(rule_pt)
    first = model.model.model[0].conv.weight.detach().clone()
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, lr0=1e-12, mosaic=0.0, seed=0)
    del cfg["model"]
    model.train(verbose=False, **cfg)
    assert model.model.nc == 3
    assert torch.allclose(model.model.model[0].conv.weight.float(), first.float(), atol=1e-6)


def test_boxes_id_is_none_and_new_keeps_the_image():
    image = np.zeros((8, 10, 3), np.uint8)
    boxes = Boxes(torch.tensor([[1.0, 2.0, 5.0, 6.0, 0.9, 0.0]]), (8, 10))
    result = Results(image, "a.jpg", boxes, ["cat"], speed={"inference": 1.0})
    assert result.boxes.id is None and not result.boxes.is_track
    empty = result.new()
    assert len(empty) == 0 and empty.boxes.data.shape == (0, 6) and empty.boxes.data.dtype == torch.float32
    assert empty.path == "a.jpg" and empty.orig_img is image and empty.speed == result.speed
    assert len(result) == 1  # unchanged
    empty_numpy = result.numpy().new()
    assert isinstance(empty_numpy.boxes.data, np.ndarray) and empty_numpy.boxes.data.shape == (0, 6)
    assert empty_numpy.boxes.data.dtype == np.float32
    on_meta = dataclasses.replace(result, boxes=Boxes(torch.zeros(1, 6, device="meta"), (8, 10)))
    assert on_meta.new().boxes.data.device.type == "meta"  # where the detections were, not the CPU


def test_str_of_an_export_is_its_path(tmp_path):
    result = ExportResult(tmp_path / "m.onnx", 0.0, True)
    assert str(result) == str(tmp_path / "m.onnx") and f"{result}".endswith("m.onnx")


def test_predict_exist_ok_writes_into_the_same_folder(tmp_path):
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    image = np.full((64, 64, 3), 114, np.uint8)
    for _ in range(2):
        model.predict(image, imgsz=64, save_txt=True, project=tmp_path, name="p", exist_ok=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
    model.predict(image, imgsz=64, save_txt=True, project=tmp_path, name="p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "p2"]


def test_a_pil_image_keeps_its_file_name(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.full((64, 64, 3), 114, np.uint8)).save(path)
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    with Image.open(path) as image:
        assert model.predict(image, imgsz=64)[0].path == str(path)
    assert model.predict(Image.new("RGB", (64, 64)), imgsz=64)[0].path == "image0.jpg"


def test_val_takes_batch_and_device(monkeypatch):
    seen = {}
    monkeypatch.setattr(validator, "validate", lambda model, data, **kw: seen.update(kw))
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    model.val(data="shapes", batch=4, device="cpu")
    assert seen["batch_size"] == 4
    model.val(data="shapes")
    assert seen["batch_size"] == 16  # the default
    model.val(data="shapes", batch=8, batch_size=8)
    assert seen["batch_size"] == 8
    with pytest.raises(ConfigError, match="batch=4 and batch_size=32"):  # batch won, batch_size unread
        model.val(data="shapes", batch=4, batch_size=32)


def test_export_takes_device(monkeypatch, tmp_path, caplog):
    seen = {}
    monkeypatch.setattr(exporter, "export_model", lambda model, format, path, **kw: seen.update(kw) or path)
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    model.export(format="onnx", path=tmp_path / "m.onnx", imgsz=64, device="cpu")
    assert seen["imgsz"] == 64 and "device" not in seen


@pytest.mark.parametrize(
    "call, word, hint",
    [
        (lambda m, tmp: m.val(data="shapes", plots=False), "plots", "save_dir="),
        (lambda m, tmp: m.train(data="shapes", erasing=0.4, project=str(tmp)), "erasing", "classification training"),
        (lambda m, tmp: m.train(data="shapes", epochs=1, save=False, project=str(tmp)), "save", "last.pt"),
        (lambda m, tmp: m.train(data="shapes", epochs=1, pretrained=True, project=str(tmp)), "pretrained", "weights="),
        (lambda m, tmp: m.export(format="onnx", half=True), "half", "float32"),
        (lambda m, tmp: m.val(data="shapes", half=True), "half", "amp=True"),
        (lambda m, tmp: m.train(data="shapes", half=True, project=str(tmp)), "half", "amp's precision"),
        (lambda m, tmp: m.predict(np.zeros((64, 64, 3), np.uint8), tracker="bt.yaml"), "tracker", "does not track"),
    ],
)
def test_refused_package_settings_say_what_to_do_instead(call, word, hint, tmp_path, caplog):
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    with caplog.at_level(logging.CRITICAL, logger="yolotr"), pytest.raises(ConfigError) as info:
        call(model, tmp_path)
    assert f"'{word}'" in str(info.value) and hint in str(info.value)


def test_val_result_has_the_package_s_save_dir_and_confusion_matrix(tmp_path):
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    result = model.val(data="shapes", imgsz=64, workers=0, save_dir=tmp_path / "val", verbose=False)
    assert result.save_dir == tmp_path / "val" and (result.save_dir / "confusion_matrix.png").is_file()
    matrix = result.confusion_matrix.matrix
    assert matrix.shape == (4, 4)
    per_class = [c.instances for c in result.per_class]
    assert matrix[:, :3].sum(0).tolist() == per_class and sum(per_class) == result.metrics.instances > 0


def test_plots_false_draws_no_results_png_and_a_resume_takes_it(tiny_shapes, tmp_path):
    """The package's plots: a run draws results.png by default (and nothing else: no PR curve or confusion
    matrix, which val(save_dir=...) draws); plots=False draws nothing, and the CSV is written either way."""
    from yolotr.engine.trainer import Trainer

    drawn = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, val=True, plots=True, name="on"))
    drawn.train()
    assert {p.name for p in drawn.save_dir.iterdir() if p.suffix == ".png"} == {"results.png"}
    bare = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, val=True, plots=False, name="off"))
    bare.train()
    assert not list(bare.save_dir.glob("*.png")) and (bare.save_dir / "results.csv").is_file()
    resumed = Trainer.resume(bare.save_dir, epochs=2, plots=True)
    assert resumed.cfg["plots"] is True
    resumed.train()
    assert (bare.save_dir / "results.png").is_file()
    with pytest.raises(ConfigError, match="setting 'plots' must be true or false"):
        resolve_config({"plots": "sometimes"})
