"""ONNX files exported by the ``ultralytics`` package, fixed-size and dynamic, predict in yolotr as the
checkpoint they came from: the package writes its stride as one number (``'32'``, not a list) and names a
dynamic file's last output axis ``anchors`` with the value axis symbolic, so the layout (``(B, 4 + nc, anchors)``)
is read from that name. Skipped without the package (a bench extra)."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.conftest import shared_path
from yolotr import YOLO

pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("dynamic", [False, True])
def test_package_onnx_exports_predict_as_their_checkpoint(tmp_path, dynamic):
    from ultralytics import YOLO as PackageYOLO

    # the package's export writes beside its weights: a copy, never shared/
    weights = shutil.copy(shared_path("reference", "ultralytics", "yolov8n_rule.pt"), tmp_path)
    photo = str(shared_path("data", "raccoon", "images", "raccoon-1.jpg"))
    onnx_file = PackageYOLO(weights).export(format="onnx", imgsz=160, dynamic=dynamic, simplify=False)
    exported = YOLO(onnx_file, verbose=False)
    assert exported.model.stride.tolist() == [32.0]
    assert exported.model.layout == "columns"
    checkpoint = YOLO(weights, verbose=False)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rows = checkpoint.model.eval()(x)[0]
    assert torch.allclose(exported.model(x)[0].transpose(1, 2), rows, atol=1e-3, rtol=1e-4)
    ours = exported.predict(photo, imgsz=160, conf=1e-4, rect=False)[0].boxes.data  # the rule model's few top scores
    eager = checkpoint.predict(photo, imgsz=160, conf=1e-4, rect=False, backend="torch")[0].boxes.data
    assert len(ours) == len(eager) > 0
    assert torch.allclose(ours[:, :4], eager[:, :4], atol=0.5)
    assert torch.equal(ours[:, 5], eager[:, 5])


def test_cli_predict_takes_an_imgsz_pair(capsys):
    """``yolotr predict --imgsz h,w`` as ``export --imgsz`` and ``YOLO.predict(imgsz=(h, w))`` take it."""
    from yolotr.cli import main

    photo = str(shared_path("images", "bus.jpg"))
    args = ["predict", "--model", "yolov5n.yaml", "--source", photo, "--imgsz", "64,96", "--backend", "torch"]
    assert main(args) == 0
    assert "1 images" in capsys.readouterr().out


@pytest.mark.parametrize("shape", ["static", "dynamic_size", "nms"])
def test_our_onnx_exports_predict_in_the_package_as_in_yolotr(tmp_path, shape):
    """The package refused our files (``int('[8.0, 16.0, 32.0]')``: the stride was a JSON list). Its predictor
    now reads an anchor-free model's file, plain, with dynamic sizes or with NMS inside, and finds our boxes."""
    import ast

    import onnx
    from ultralytics import YOLO as PackageYOLO

    photo = str(shared_path("data", "raccoon", "images", "raccoon-1.jpg"))
    checkpoint = YOLO(shared_path("reference", "ultralytics", "yolov8n_rule.pt"), verbose=False)
    # the package takes a file with a dynamic batch (our default) for one of dynamic size too: fixed batch here
    options = {"static": {}, "dynamic_size": {"dynamic_size": True}, "nms": {"nms": True, "conf": 1e-4}}
    options = {k: {"dynamic": k == "dynamic_size", **v} for k, v in options.items()}
    exported = checkpoint.export("onnx", tmp_path / "ours.onnx", imgsz=160, verbose=False, **options[shape])
    meta = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert int(meta["stride"]) == 32 and ast.literal_eval(meta["args"]) == {"dynamic": shape == "dynamic_size"}
    theirs = PackageYOLO(str(exported.path), task="detect").predict(photo, imgsz=160, conf=1e-4, verbose=False)[0]
    ours = YOLO(exported, verbose=False).predict(photo, imgsz=160, conf=1e-4, verbose=False)[0]
    assert len(theirs.boxes) == len(ours.boxes) > 0
    assert torch.allclose(theirs.boxes.data[:, :4], ours.boxes.data[:, :4], atol=0.5)
    assert torch.equal(theirs.boxes.cls, ours.boxes.cls)
