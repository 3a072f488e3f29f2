"""Export: every shipped config to ONNX at 320 matches PyTorch (onnxruntime), and predicts the same."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from tests.head_inputs import calibrate_batch_norm
from tests.test_cli_errors import run_cli
from yolotr.engine.exporter import export_model
from yolotr.engine.onnx_model import OnnxModel
from yolotr.engine.predictor import Predictor
from yolotr.errors import YolotrError
from yolotr.models.detection import CFG_DIR, DetectionModel
from yolotr.models.loading import load_model

# The larger YOLOv10 scales and RT-DETRs take 40-60 s each to export and share every module with the
# smaller ones; the next largest (10-40 s each, same modules as yolov5n/s, yolov4-s, yolov8, yolov8n-swinv2,
# yolov10n) run under the slow mark: `pytest -m slow`.
LARGE = {"yolov10m.yaml", "yolov10b.yaml", "yolov10l.yaml", "yolov10x.yaml", "rtdetr-x.yaml", "rtdetr-resnet50.yaml",
         "rtdetr-resnet101.yaml", "yolov3.yaml", "yolov3-spp.yaml", "yolov9m.yaml", "yolov9c.yaml",
         "yolov9e.yaml"}  # fmt: skip
SLOW = {"rtdetr-l.yaml", "rtdetr-swinv2.yaml", "rtdetr-swinv2-aifi.yaml", "yolov10s.yaml", "yolov4.yaml",
        "yolov5m.yaml", "yolov5l.yaml", "yolov5x.yaml", "yolov8-p6.yaml", "yolov8s-swinv2.yaml"}  # fmt: skip
# 1-2 s each, and every module and head layout exported by a config that runs: the s scales of the YOLOv5
# line (their n scales), yolov9s (yolov9t), yolov8-ghost-p6 (yolov8-ghost, yolo26-p6), yolo26-p2 (yolo26,
# yolov8-p2) and the blocks in YOLO26 (yolo26 with yolov8-hwd, yolo11-transformerc3, yolov8n-swinv2)
SLOW |= {"yolov5s.yaml", "yolov5s-c3tr.yaml", "yolov5s-hwd.yaml", "yolov5s-swinv2.yaml", "yolov5s-transformerc3.yaml",
         "yolov9s.yaml", "yolov8-ghost-p6.yaml", "yolo26-p2.yaml", "yolo26-hwd.yaml", "yolo26-transformerc3.yaml",
         "yolo26n-swinv2.yaml"}  # fmt: skip
SHIPPED = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
    for name in sorted(p.name for p in CFG_DIR.glob("*.yaml"))
    if name not in LARGE
]


@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_parity_at_320(name, tmp_path):
    torch.manual_seed(0)
    model = DetectionModel(name, nc=4)
    if hasattr(model.model[-1], "enc_output"):  # RT-DETR: the border tokens' features are masked to zero, so
        with torch.no_grad():  # untrained they all get one score, often inside the top-k: an exact tie that
            # onnxruntime's TopK breaks otherwise than PyTorch's. Without the bias they score the class prior,
            # below every real token, as in trained weights
            model.model[-1].enc_output[0].bias.zero_()
    else:  # features of order 0.1-1 at every level (untrained in eval mode, the deep ones were 1e-9: a wrong
        # export of a deep block moved no box); RT-DETR's decoder would score its queries within 1e-6 of each other
        calibrate_batch_norm(model, torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(1)), 0.5)
    result = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=320)
    if not getattr(model.model[-1], "end2end", False):  # top-k rows of near-tied scores may swap places
        # decoded boxes in pixels, within 2e-3 px (float32 rounding gives 1e-4 to 2e-4; an export of SPPF whose
        # output is 5% off gave 0.057 px, and 4e-5 px in the model untrained and uncalibrated)
        assert result.max_abs_diff < 2e-3
    assert result.detections_match


def test_raw_onnx_output_within_1e4(tmp_path):
    model = calibrate_batch_norm(DetectionModel("yolov5n-swinv2.yaml", nc=4), torch.rand(2, 3, 320, 320), 0.5)
    result = export_model(model, "onnx", tmp_path / "raw.onnx", imgsz=320, raw=True)
    assert result.max_abs_diff < 1e-4


def test_dynamic_size_and_batch(tmp_path):
    model = calibrate_batch_norm(DetectionModel("yolov5n-hwd.yaml", nc=4), torch.rand(2, 3, 320, 320), 0.5)
    path = export_model(model, "onnx", tmp_path / "dyn.onnx", imgsz=320, dynamic_size=True).path
    onnx_model = OnnxModel(path)
    x = torch.rand(2, 3, 256, 384)
    with torch.no_grad():
        expected = model(x)[0]
    got = onnx_model(x)[0]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-3)


def test_dynamic_size_swin_follows_the_input_size(tmp_path):
    # the window gather indices and the shift mask are traced, not frozen at the export size
    torch.manual_seed(0)
    model = calibrate_batch_norm(DetectionModel("yolov5n-swinv2.yaml", nc=4), torch.rand(2, 3, 320, 320), 0.5)
    path = export_model(model, "onnx", tmp_path / "swin.onnx", imgsz=320, dynamic_size=True).path
    onnx_model = OnnxModel(path)
    x = torch.rand(1, 3, 256, 416)  # another padding of the maps to whole windows than at 320 x 320
    with torch.no_grad():
        expected = model(x)[0]
    got = onnx_model(x)[0]
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 2e-3


def test_torchscript_export(tmp_path):
    model = calibrate_batch_norm(DetectionModel("yolov5n-c3tr.yaml", nc=4), torch.rand(2, 3, 256, 256), 0.5)
    result = export_model(model, "torchscript", tmp_path / "m.torchscript", imgsz=256)
    assert result.max_abs_diff < 2e-3 and Path(result.path).is_file()


def test_predict_with_onnx_equals_pytorch(tmp_path):
    image = shared_path("images", "bus.jpg")
    model = load_model(shared_path("weights", "yolov5n.pt"))
    path = export_model(model, "onnx", tmp_path / "yolov5n.onnx", imgsz=640, dynamic_size=True).path
    onnx_model = OnnxModel(path)
    assert onnx_model.names == model.names
    ours = Predictor(model, model.names, 640)(str(image))[0].boxes.data
    theirs = Predictor(onnx_model, onnx_model.names, 640)(str(image))[0].boxes.data
    assert ours.shape == theirs.shape
    assert np.allclose(ours.numpy(), theirs.numpy(), atol=0.1)


def test_onnx_input_shape_is_read_from_the_file(tmp_path):
    model = DetectionModel("yolov5n.yaml", nc=2)
    fixed = OnnxModel(export_model(model, "onnx", tmp_path / "f.onnx", imgsz=(128, 192), dynamic=False).path)
    assert (fixed.input_hw, fixed.input_batch) == ((128, 192), 1)
    sized = OnnxModel(export_model(model, "onnx", tmp_path / "s.onnx", imgsz=128).path)
    assert (sized.input_hw, sized.input_batch) == ((128, 128), None)
    free = OnnxModel(export_model(model, "onnx", tmp_path / "d.onnx", imgsz=128, dynamic_size=True).path)
    assert (free.input_hw, free.input_batch) == (None, None)


def test_fixed_batch_onnx_takes_any_batch_and_names_a_wrong_size(tmp_path):
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=2).eval()
    onnx_model = OnnxModel(export_model(model, "onnx", tmp_path / "b1.onnx", imgsz=128, dynamic=False).path)
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)[0]
    got = onnx_model(x)[0]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-3)
    with pytest.raises(YolotrError, match=r"b1.onnx: the model was exported for a fixed 128x128 input, got 96x128"):
        onnx_model(torch.rand(1, 3, 96, 128))


@pytest.fixture(scope="module")
def official():
    return load_model(shared_path("weights", "yolov5n.pt"))


def _same_boxes(got: np.ndarray, expected: np.ndarray) -> bool:
    return got.shape == expected.shape and np.allclose(got, expected, atol=0.1)


def test_static_non_square_onnx_predicts_at_its_own_size(official, tmp_path, caplog):
    image = str(shared_path("images", "bus.jpg"))
    path = export_model(official, "onnx", tmp_path / "wide.onnx", imgsz=(256, 320)).path
    onnx_model = OnnxModel(path)
    with caplog.at_level(logging.INFO, logger="yolotr"):
        predictor = Predictor(onnx_model, onnx_model.names, 640)  # imgsz 640, rect: neither applies
    notes = [r.getMessage() for r in caplog.records if "fixed" in r.getMessage()]
    assert notes == [f"{path} has a fixed 256x320 input: predicting at 256x320, not imgsz 640"]
    got = predictor(image)[0].boxes.data.numpy()
    expected = Predictor(official, official.names, (256, 320), rect=False)(image)[0].boxes.data.numpy()
    assert len(expected) > 0
    assert _same_boxes(got, expected)


def _cli_boxes(run_dir: Path) -> np.ndarray:
    """Boxes ``(n, 6)`` = x1, y1, x2, y2, score, class from a ``predict --save`` run's predictions.json."""
    detections = json.loads((run_dir / "predictions.json").read_text())[0]["detections"]
    return np.array([[*d["box"], d["confidence"], d["class"]] for d in detections], dtype=np.float32).reshape(-1, 6)


def test_cli_static_onnx_predicts_with_default_imgsz(official, tmp_path):
    weights, image = shared_path("weights", "yolov5n.pt"), shared_path("images", "bus.jpg")
    exported = run_cli("export", "--model", weights, "--format", "onnx", "--imgsz", "320", "--output", "y.onnx",
                       cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert OnnxModel(tmp_path / "y.onnx").input_hw == (320, 320)
    asked = run_cli("predict", "--model", "y.onnx", "--source", image, "--imgsz", "640", cwd=tmp_path)
    notes = [line for line in asked.stderr.splitlines() if "fixed 320x320 input" in line]
    assert notes == ["y.onnx has a fixed 320x320 input: predicting at 320x320, not imgsz 640"]
    proc = run_cli("predict", "--model", "y.onnx", "--source", image, "--save", "--project", ".", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "fixed" not in proc.stderr  # no imgsz asked: the file's own
    expected = Predictor(official, official.names, 320, rect=False)(str(image))[0].boxes.data.numpy()
    assert len(expected) > 0
    assert _same_boxes(_cli_boxes(tmp_path / "exp"), expected)


def test_cli_dynamic_onnx_honours_imgsz_and_square(official, tmp_path):
    image = shared_path("images", "bus.jpg")
    export_model(official, "onnx", tmp_path / "dyn.onnx", imgsz=320, dynamic_size=True)
    for name, extra, rect in (("rect", [], True), ("square", ["--square"], False)):
        proc = run_cli("predict", "--model", "dyn.onnx", "--source", image, "--imgsz", "256", *extra, "--save",
                       "--project", ".", "--name", name, cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "fixed" not in proc.stderr
        expected = Predictor(official, official.names, 256, rect=rect)(str(image))[0].boxes.data.numpy()
        assert len(expected) > 0
        assert _same_boxes(_cli_boxes(tmp_path / name), expected)
    assert not _same_boxes(_cli_boxes(tmp_path / "rect"), _cli_boxes(tmp_path / "square"))


def test_a_file_that_disagrees_with_pytorch_is_not_left_as_the_export(tmp_path, monkeypatch):
    """The check runs before the file takes its name: an ExportError leaves no file a pipeline could ship."""
    from yolotr.engine import export_check, exporter

    real = export_check._run_file
    monkeypatch.setattr(export_check, "_run_file", lambda *a: [out + 8.0 for out in real(*a)])  # a stride off
    with pytest.raises(exporter.ExportError, match="differ from PyTorch's"):
        exporter.export_model(DetectionModel("yolov8n.yaml", nc=3).eval(), "onnx", tmp_path / "m.onnx", imgsz=64)
    assert list(tmp_path.iterdir()) == []


def test_candidates_agree_within_a_pixel_not_a_stride():
    """A file of candidates (no NMS inside) is compared candidate by candidate when NMS on the random check
    input keeps other near-tied boxes: a pixel of drift passes, a stride's error does not."""
    from yolotr.engine.export_check import _same_candidates

    rng = np.random.default_rng(0)
    expected = np.concatenate((rng.random((1, 4, 100)) * 900, rng.random((1, 3, 100))), 1).astype(np.float32)
    drift = expected.copy()
    drift[:, :4] += 0.9
    drift[:, 4:] += 0.004
    assert _same_candidates(expected, drift, "columns")
    off = expected.copy()
    off[0, 0, 7] += 8.0 + 0.01 * off[0, 0, 7]
    assert not _same_candidates(expected, off, "columns")
    scores = expected.copy()
    scores[0, 5, 3] += 0.05
    assert not _same_candidates(expected, scores, "columns")
    assert not _same_candidates(expected, expected[:, :, :50], "columns")
