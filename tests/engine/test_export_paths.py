"""Where an export goes and what it refuses: the format's suffix (never over a checkpoint), folders, unknown
settings, opsets and sizes a user gets wrong, and the size a dynamic-size ONNX file predicts at."""

from __future__ import annotations

import os

import pytest
import torch

from yolotr import YOLO
from yolotr.engine.exporter import export_destination, export_model
from yolotr.engine.onnx_model import OnnxModel
from yolotr.errors import ConfigError, YolotrError
from yolotr.models.detection import DetectionModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DetectionModel("yolov5n.yaml", nc=2).eval()


def test_an_export_over_a_checkpoint_or_into_another_suffix_is_refused(model, tmp_path):
    checkpoint = tmp_path / "copy.pt"
    checkpoint.write_bytes(b"weights")
    for wrong in (checkpoint, tmp_path / "o.txt"):
        with pytest.raises(YolotrError, match=r"an onnx export is written to a \.onnx file"):
            export_model(model, "onnx", wrong, imgsz=64)
    assert checkpoint.read_bytes() == b"weights"


def test_a_path_with_a_trailing_slash_is_a_folder(tmp_path):
    assert export_destination(f"{tmp_path}/new/", "runs/best.pt", "onnx") == tmp_path / "new" / "best.onnx"
    assert export_destination(tmp_path, "yolov8n.yaml", "onnx") == tmp_path / "yolov8n.onnx"
    assert export_destination(tmp_path / "m.onnx", "x.pt", "onnx") == tmp_path / "m.onnx"


def test_what_an_export_cannot_do_is_one_clear_error(model, tmp_path):
    for opset in (5, 99):
        with pytest.raises(ConfigError, match=rf"opset {opset}: this torch exports ONNX opsets \d+ to \d+"):
            export_model(model, "onnx", tmp_path / "m.onnx", imgsz=64, opset=opset)
    with pytest.raises(YolotrError, match=r"onnx export \(opset 7\) failed: "):
        export_model(model, "onnx", tmp_path / "m.onnx", imgsz=64, opset=7)  # upsampling needs a later one
    assert not (tmp_path / "m.onnx").exists() and os.listdir(tmp_path) == []  # nothing half-written left
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(YolotrError, match="cannot write the export"):
        export_model(model, "onnx", blocker / "m.onnx", imgsz=64)
    for key, value in (("batch", 0), ("batch", "2"), ("opset", 0)):
        with pytest.raises(ConfigError, match=f"{key} must be a whole number >= 1"):
            export_model(model, "onnx", tmp_path / "m.onnx", imgsz=64, **{key: value})
    yolo = YOLO("yolov5n.yaml", verbose=False)
    with pytest.raises(ConfigError, match="export: unknown setting 'dynamic_sise'; did you mean dynamic_size"):
        yolo.export(path=tmp_path / "m.onnx", dynamic_sise=True)
    with pytest.raises(ConfigError, match="imgsz"):
        yolo.export(path=tmp_path / "m.onnx", imgsz=0)


def test_a_dynamic_size_onnx_file_predicts_at_the_size_it_was_exported_at(model, tmp_path):
    path = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=(96, 128), dynamic_size=True).path
    onnx_model = OnnxModel(path)
    assert onnx_model.input_hw is None and onnx_model.imgsz == (96, 128)
    fixed = OnnxModel(export_model(model, "onnx", tmp_path / "f.onnx", imgsz=64).path)
    assert fixed.imgsz == fixed.input_hw == (64, 64)
