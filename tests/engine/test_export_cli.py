"""``yolotr export`` from the command line: ``--imgsz h,w``, ``--batch``, and settings the file would not hold."""

from __future__ import annotations

import argparse

import onnx
import onnxruntime
import pytest
import torch

from yolotr.cli import main
from yolotr.cli_args import imgsz_arg
from yolotr.engine.exporter import export_model
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.weights import model_checkpoint, save_checkpoint


def _input_shape(path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def test_imgsz_takes_a_side_or_a_pair_as_the_ultralytics_command_writes_it():
    assert imgsz_arg("640") == 640
    for text in ("480,640", "[480, 640]", "480x640", "(480,640)"):
        assert imgsz_arg(text) == (480, 640)
    for bad in ("big", "1,2,3", "", "480,"):
        if bad == "480,":
            assert imgsz_arg(bad) == 480  # a trailing comma is the one side
            continue
        with pytest.raises(argparse.ArgumentTypeError, match="one side"):
            imgsz_arg(bad)


def test_a_static_export_has_the_batch_and_rectangle_asked_for(tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(model_checkpoint(DetectionModel("yolov5n.yaml", nc=2).eval()), tmp_path / "m.pt")
    assert main(["export", "--model", str(checkpoint), "--imgsz", "64,96", "--batch", "3", "--static"]) == 0
    assert _input_shape(tmp_path / "m.onnx") == [3, 3, 64, 96]
    assert main(["export", "--model", str(checkpoint), "imgsz=96,64", "--output", str(tmp_path / "d.onnx")]) == 0
    assert _input_shape(tmp_path / "d.onnx") == ["batch", 3, 96, 64]  # batch stays dynamic without --static


def test_settings_the_file_would_not_hold_are_refused(tmp_path, capsys):
    torch.manual_seed(0)
    anchor_free = DetectionModel("yolov8n.yaml", nc=2).eval()
    for kwargs in ({"conf": 0.5}, {"iou": 0.5}, {"max_det": 50}):
        with pytest.raises(ConfigError, match=rf"{next(iter(kwargs))} given but not used: without nms=True"):
            export_model(anchor_free, "onnx", tmp_path / "a.onnx", imgsz=64, check=False, **kwargs)
    assert not (tmp_path / "a.onnx").exists()
    end2end = DetectionModel("yolo26n.yaml", nc=2).eval()
    with pytest.raises(ConfigError, match="conf given but not used: the head is end-to-end"):
        export_model(end2end, "onnx", tmp_path / "e.onnx", imgsz=64, check=False, nms=True, conf=0.5)
    out = export_model(end2end, "onnx", tmp_path / "e.onnx", imgsz=64, max_det=20).path  # its top-k: used
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": torch.rand(1, 3, 64, 64).numpy()})[0].shape == (1, 20, 6)
    yaml_source = "yolov8n.yaml"
    assert main(["export", "--model", yaml_source, "--conf", "0.4", "--output", str(tmp_path / "c.onnx")]) == 2
    assert "conf given but not used" in capsys.readouterr().err
