"""The deployment snippets of docs/predict.md (OpenCV DNN, onnxruntime) run as written, without yolotr,
and find what ``predict`` finds."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REPO, shared_path
from tests.engine.test_export_layouts import vary_weights
from yolotr.data.transforms import letterbox
from yolotr.engine.exporter import export_model
from yolotr.engine.predictor import Predictor
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model


def _snippet(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "predict.md").read_text(), re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"docs/predict.md: expected one python block with {marker!r}, found {len(found)}"
    code = found[0]
    assert "yolotr" not in code.replace("# yolotr export", "")  # no yolotr import: only its command in a comment
    assert len(code.splitlines()) <= 20
    return code


def _run(code: str, folder, monkeypatch) -> np.ndarray:
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(code, "docs/predict.md", "exec"), namespace)  # noqa: S102 - the documentation's own code
    return np.asarray(namespace["detections"], dtype=np.float32)


def _by_score(d: np.ndarray) -> np.ndarray:
    return d[np.argsort(-d[:, 4], kind="stable")]


def _predicted(model, conf: float) -> np.ndarray:
    image = str(shared_path("images", "bus.jpg"))
    return Predictor(model, model.names, 640, rect=False, conf=conf, backend="torch")(image)[0].boxes.data.numpy()


def test_opencv_snippet_reads_an_nms_export(tmp_path, monkeypatch):
    code = _snippet("cv2.dnn.readNetFromONNX")
    shutil.copy(shared_path("images", "bus.jpg"), tmp_path / "bus.jpg")
    model = load_model(shared_path("weights", "yolov5n.pt"))
    export_model(model, "onnx", tmp_path / "best-nms.onnx", imgsz=640, nms=True)
    got = _run(code, tmp_path, monkeypatch)
    expected = _predicted(model, 0.25)
    assert len(expected) >= 3
    np.testing.assert_allclose(got, expected, atol=0.05)


def test_onnxruntime_snippet_reads_an_anchor_free_export(tmp_path, monkeypatch):
    code = _snippet("ort.InferenceSession")
    shutil.copy(shared_path("images", "bus.jpg"), tmp_path / "bus.jpg")
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3)  # no trained anchor-free weights here: random head outputs
    image = letterbox(cv2.imread(str(tmp_path / "bus.jpg")), 640, auto=False)[0]
    conf = round(vary_weights(model, image, keep=60), 6)
    export_model(model, "onnx", tmp_path / "best.onnx", imgsz=640)
    assert code.count("0.25, 0.7") == 1  # iou 0.7: an anchor-free head's default, as the package's (predict's too)
    got = _run(code.replace("0.25, 0.7", f"{conf}, 0.7"), tmp_path, monkeypatch)  # the snippet at a lower conf
    expected = _predicted(model, conf)
    if len(expected) < 3:
        pytest.fail(f"the untrained model finds {len(expected)} boxes at conf {conf}: nothing to compare")
    assert got.shape == expected.shape
    np.testing.assert_allclose(_by_score(got), _by_score(expected), atol=0.05, rtol=1e-4)
