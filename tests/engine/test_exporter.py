"""Export: every shipped config to ONNX at 320 matches PyTorch (onnxruntime), and predicts the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from yolotr.engine.exporter import OnnxModel, export_model
from yolotr.engine.predictor import Predictor
from yolotr.models.detection import CFG_DIR, DetectionModel

SHIPPED = sorted(p.name for p in CFG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_parity_at_320(name, tmp_path):
    torch.manual_seed(0)
    model = DetectionModel(name, nc=4)
    result = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=320)
    assert result.max_abs_diff < 1e-4 * 320  # decoded boxes are in pixels: 1e-4 relative to the image size
    assert result.detections_match


def test_raw_onnx_output_within_1e4(tmp_path):
    model = DetectionModel("yolov5n-swinv2.yaml", nc=4)
    result = export_model(model, "onnx", tmp_path / "raw.onnx", imgsz=320, raw=True)
    assert result.max_abs_diff < 1e-4


def test_dynamic_size_and_batch(tmp_path):
    model = DetectionModel("yolov5n-hwd.yaml", nc=4).eval()
    path = export_model(model, "onnx", tmp_path / "dyn.onnx", imgsz=320, dynamic_size=True).path
    onnx_model = OnnxModel(path)
    x = torch.rand(2, 3, 256, 384)
    with torch.no_grad():
        expected = model(x)[0]
    got = onnx_model(x)[0]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-2)


def test_torchscript_export(tmp_path):
    model = DetectionModel("yolov5n-c3tr.yaml", nc=4)
    result = export_model(model, "torchscript", tmp_path / "m.torchscript", imgsz=256)
    assert result.max_abs_diff < 1e-2 and Path(result.path).is_file()


def test_predict_with_onnx_equals_pytorch(tmp_path):
    from tests.conftest import shared_path

    image = shared_path("images", "bus.jpg")
    from yolotr.models.loading import load_model

    model = load_model(shared_path("weights", "yolov5n.pt"))
    path = export_model(model, "onnx", tmp_path / "yolov5n.onnx", imgsz=640, dynamic_size=True).path
    onnx_model = OnnxModel(path)
    assert onnx_model.names == model.names
    ours = Predictor(model, model.names, 640)(str(image))[0].boxes.data
    theirs = Predictor(onnx_model, onnx_model.names, 640)(str(image))[0].boxes.data
    assert ours.shape == theirs.shape
    assert np.allclose(ours.numpy(), theirs.numpy(), atol=0.1)
