"""``YOLO("best.torchscript")`` and ``yolotr predict --model best.torchscript``: an exported TorchScript file
predicts as the weights it came from (its ``config.txt`` says what it is), at the size it was traced at; the
``ultralytics`` package's TorchScript exports are read too. Before, every such file was called damaged."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.conftest import shared_path
from tests.head_inputs import calibrate_batch_norm
from yolotr import YOLO
from yolotr.cli import main
from yolotr.errors import ConfigError


@pytest.mark.parametrize("weights", [("weights", "yolov5n.pt"), ("reference", "ultralytics-next", "yolo26n_rule.pt")])
def test_a_torchscript_export_predicts_as_its_weights(weights, tmp_path, capsys):
    model, image = YOLO(str(shared_path(*weights))), str(shared_path("images", "bus.jpg"))
    path = model.export("torchscript", tmp_path / "m.torchscript", imgsz=256, verbose=False).path
    exported = YOLO(str(path))
    assert exported.is_exported and not exported.is_onnx and exported.names == model.names
    assert exported.model.input_hw == (256, 256)
    want = model.predict(image, imgsz=256, rect=False, conf=0.0, max_det=50, backend="torch")[0]
    got = exported.predict(image, imgsz=256, conf=0.0, max_det=50)[0]  # letterboxed to the traced square
    assert len(got.boxes.conf) == len(want.boxes.conf) == 50
    torch.testing.assert_close(got.boxes.conf, want.boxes.conf, atol=1e-4, rtol=0)
    assert float((got.boxes.xyxy - want.boxes.xyxy).abs().max()) < 0.05
    assert main(["predict", "--model", str(path), "--source", image, "--conf", "0.0", "--max-det", "50"]) == 0
    assert "1 images, 50 detections" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="an exported model can only predict; validation needs"):
        exported.val()


@pytest.fixture
def threads_back():
    """The intra-op thread count as it was: the package's export and predict leave one set, and a later
    test's bitwise comparison with a 2-thread subprocess then fails."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_packages_torchscript_export_is_read(tmp_path, threads_back):
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics import YOLO as PackageYOLO

    weights = shutil.copy(shared_path("reference", "ultralytics-next", "yolov10n_rule.pt"), tmp_path)
    path = PackageYOLO(str(weights)).export(format="torchscript", imgsz=192, verbose=False)
    ours = YOLO(path)
    assert ours.model.input_hw == (192, 192) and ours.model.layout in ("columns", "detections")
    image = str(shared_path("images", "bus.jpg"))
    got = ours.predict(image, conf=0.0, max_det=30)[0]
    want = PackageYOLO(path, task="detect").predict(image, conf=0.0, max_det=30, verbose=False)[0]
    torch.testing.assert_close(got.boxes.conf, want.boxes.conf.cpu(), atol=1e-4, rtol=0)


def test_a_torchscript_file_under_a_checkpoint_name_is_named_for_what_it_is(tmp_path, capsys):
    model = YOLO("yolov5n.yaml")
    path = model.export("torchscript", tmp_path / "m.torchscript", imgsz=64, verbose=False).path
    disguised = shutil.copy(path, tmp_path / "best.pt")
    assert main(["val", "--model", str(disguised), "--data", "shapes"]) == 2
    assert "a TorchScript export, not a checkpoint" in capsys.readouterr().err


def test_torchscript_export_and_load_print_no_torch_warnings(tmp_path):
    """Every export printed torch.jit's TracerWarnings (shape checks) and its deprecation FutureWarning."""
    import warnings

    from yolotr import YOLO
    from yolotr.engine.exporter import export_model
    from yolotr.models.detection import DetectionModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_model(DetectionModel("yolov5n-hwd.yaml", nc=2), "torchscript", tmp_path / "m.torchscript", 128)
        YOLO(str(path.path))
    assert [
        str(w.message)[:80] for w in caught if "jit" in str(w.message) or w.category.__name__ == "TracerWarning"
    ] == []


def test_config_txt_holds_json_values_as_yolov5_reads_them(tmp_path):
    """YOLOv5's DetectMultiBackend takes ``names`` from config.txt as it is: a JSON string inside the JSON gave
    every box one character of it as its class name."""
    import json

    path = YOLO("yolov5n.yaml", nc=3).export("torchscript", tmp_path / "m.torchscript", imgsz=64, verbose=False).path
    extra = {"config.txt": ""}
    torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["config.txt"])
    assert meta["names"] == ["0", "1", "2"] and meta["imgsz"] == [64, 64]
    assert meta["stride"] == 32 and meta["batch"] == 1


def test_a_swin_v2_model_exports_to_torchscript(tmp_path):
    """The trace check traces twice; Swin V2's position-bias cache, filled by the first trace, made the graphs
    differ and the export fail."""
    model = YOLO("yolov5n-swinv2.yaml", nc=2)
    calibrate_batch_norm(model.model, torch.rand(2, 3, 64, 64), 0.5)  # features of order 1 at every level
    path = model.export("torchscript", tmp_path / "s.torchscript", imgsz=64, verbose=False).path
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(YOLO(str(path)).model(image)[0], model.model.eval()(image)[0], atol=2e-3, rtol=1e-5)
