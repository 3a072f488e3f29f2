"""The engine with the anchor-free head: training (losses named by the head, bf16 AMP, exact resume,
NaN guard), validation, prediction and ONNX export."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from yolotr import YOLO
from yolotr.engine.exporter import export_model
from yolotr.engine.onnx_model import OnnxModel
from yolotr.engine.predictor import Predictor
from yolotr.engine.trainer import Trainer
from yolotr.models.detection import DetectionModel
from yolotr.ops.boxes import non_max_suppression

from ..conftest import SHARED
from .conftest import assert_same_weights, resumed_and_straight, tiny_train_cfg


def _rows(run_dir):
    with (run_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_train_and_validate_yolo11n_names_its_losses(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolo11n.yaml", val=True)
    result = Trainer(cfg).train()
    rows = _rows(tmp_path / "run")
    assert list(rows[0])[:4] == ["epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss"]
    assert len(rows) == 2
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("train/box_loss", "train/cls_loss", "train/dfl_loss"))
        assert 0.0 <= float(row["metrics/mAP50-95"]) <= 1.0
    assert not result["nan_reports"]
    best = YOLO(tmp_path / "run" / "weights" / "best.pt")
    assert best.model.yaml["scale"] == "n" and list(best.names.values()) == ["circle", "square", "triangle"]
    metrics = best.val(data=str(tiny_shapes), imgsz=64, batch_size=4, workers=0)
    assert 0.0 <= metrics.map50 <= 1.0


def test_bf16_autocast_training_is_finite_for_yolo12n(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolo12n.yaml", epochs=1, amp=True)
    trainer = Trainer(cfg)
    result = trainer.train()
    assert trainer.amp.dtype == torch.bfloat16 and not trainer.amp.scaled
    assert not result["nan_reports"]
    row = _rows(tmp_path / "run")[0]
    assert all(math.isfinite(float(row[k])) and float(row[k]) > 0 for k in ("train/cls_loss",))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_resume_after_a_crash_gives_the_same_weights(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolov8n.yaml", save_period_steps=1)
    assert_same_weights(*resumed_and_straight(cfg, at_step=6))


def test_nan_guard_names_the_area_attention_layer(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolo12n.yaml", epochs=1, nan_max_bad_steps=2)
    trainer = Trainer(cfg)
    target = "model.6.m.0.0.attn"  # the first area attention of the P4 A2C2f

    def inject(t):
        if t.step == 3 and not hasattr(t, "_fault"):

            def hook(module, inputs, output):
                return output.clone().fill_(math.nan) if trainer.step == 3 else output

            t._fault = t.model.get_submodule(target).register_forward_hook(hook)

    trainer.add_callback("on_batch_start", inject)
    result = trainer.train()
    assert len(result["nan_reports"]) == 1 and f"module '{target}'" in result["nan_reports"][0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nms_reads_class_scores_without_objectness():
    # two overlapping boxes of class 1 and one of class 0; (cx, cy, w, h, p0, p1)
    decoded = torch.tensor(
        [[[50, 50, 20, 20, 0.1, 0.9], [52, 50, 20, 20, 0.1, 0.8], [150, 150, 30, 30, 0.7, 0.2]]], dtype=torch.float32
    )
    det = non_max_suppression(decoded, 0.25, 0.45, nc=2)[0]
    assert det.shape == (2, 6)
    assert torch.allclose(det[:, 4], torch.tensor([0.9, 0.7])) and det[:, 5].tolist() == [1.0, 0.0]
    # the same tensor read as YOLOv5 output (column 4 = objectness) gives other scores
    assert not torch.equal(non_max_suppression(decoded, 0.0, 0.45)[0][:, 4], det[:, 4])


@pytest.mark.skipif(not (SHARED / "images" / "bus.jpg").is_file(), reason="shared/images/bus.jpg not found")
def test_onnx_predicts_the_same_boxes_as_pytorch(tmp_path):
    oracle = SHARED / "reference" / "ultralytics" / "yolov8n_rule.pt"
    model = YOLO(oracle).model if oracle.is_file() else DetectionModel("yolov8n.yaml")
    result = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=320, dynamic_size=True)
    assert result.detections_match and result.max_abs_diff < 1e-3
    onnx_model = OnnxModel(result.path)
    for h, w in ((320, 320), (256, 416)):  # a dynamic-size file decodes any multiple of 32
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            expected = model.eval()(x)[0]
        got = onnx_model(x)[0]  # the file's layout is the ultralytics package's: (B, 4 + nc, anchors)
        assert onnx_model.layout == "columns" and got.shape == (1, 84, expected.shape[1])
        got = got.transpose(1, 2)
        assert got.shape == expected.shape == (1, sum(h // s * w // s for s in (8, 16, 32)), 84)
        assert torch.allclose(got, expected, atol=1e-3)
    image = str(SHARED / "images" / "bus.jpg")
    conf = float(model(torch.rand(1, 3, 320, 320))[0][0, :, 4:].max()) * 0.5  # untrained weights: low scores
    # iou 0.45: fewer overlapping near-ties than at the head's default 0.7, so the top rows keep their order
    ours = Predictor(model, model.names, 320, conf=conf, iou=0.45)(image)[0].boxes.data
    theirs = Predictor(onnx_model, onnx_model.names, 320, conf=conf, iou=0.45)(image)[0].boxes.data
    assert ours.shape[0] >= 3 and abs(ours.shape[0] - theirs.shape[0]) <= 1  # scores near conf may flip
    assert np.allclose(ours[:3].numpy(), theirs[:3].numpy(), atol=0.1)


@pytest.mark.parametrize(
    ("model", "given", "warned"),
    [
        (
            "yolov8n.yaml",
            {"box": 7.5, "cls": 1.0},
            "box, cls: not read by this model's AnchorFreeLoss, which takes af_box",
        ),
        ("yolov5n.yaml", {"dfl": 2.0}, "dfl: not read by this model's DetectionLoss, which takes anchor_t, box"),
        ("yolov8n.yaml", {"af_box": 5.0}, None),
    ],
)
def test_a_loss_setting_the_model_does_not_read_is_warned_of(model, given, warned, tiny_shapes, tmp_path, caplog):
    """``train(box=7.5)`` (the package's spelling of the box gain) on an anchor-free model changed nothing
    without a word: its loss reads ``af_box``."""
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, model=model, **given))
    with caplog.at_level("WARNING", logger="yolotr"):
        trainer._setup()
    messages = [r.getMessage() for r in caplog.records if "not read by this model" in r.getMessage()]
    assert len(messages) == (warned is not None) and all(warned in m for m in messages)
