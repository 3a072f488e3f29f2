"""The engine with the NMS-free heads (YOLO26, YOLOv10): training (AMP, EMA, MuSGD, guard, exact resume with
the loss's branch weighting), validation and prediction on both output paths, ``explain``, ``info``, ONNX
export with no NMS outside the graph (onnxruntime and OpenCV DNN), and ``compare`` across the two."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import shared_path
from yolotr import YOLO
from yolotr.cli import main
from yolotr.engine.exporter import export_model
from yolotr.engine.fast_backend import weights_key
from yolotr.engine.head_mode import end2end_mode, parse_end2end, same_detections
from yolotr.engine.trainer import Trainer
from yolotr.engine.validator import validate
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.loading import load_model

from .conftest import tiny_train_cfg

PARAM_COUNTS = shared_path("reference", "ultralytics-next", "param_counts.json")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _rows(run_dir) -> list[dict]:
    with (run_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


class _Crash(RuntimeError):
    pass


def test_yolo26n_trains_with_musgd_bf16_ema_and_resumes_exactly(tiny_shapes, tmp_path):
    """Killed in epoch 2 and resumed: the same weights, EMA, MuSGD state and branch weighting as a straight run."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolo26n.yaml", optimizer="MuSGD", amp="bf16",
                         save_period_steps=1, val=True)  # fmt: skip
    trainer = Trainer(cfg)
    weights: list[float] = []

    def crash(t):
        weights.append(t.loss_fn.o2m)
        if t.step == 6:  # 4 steps per epoch: the second epoch, whose branch weighting differs from the first's
            raise _Crash("power cut")

    trainer.add_callback("on_batch_start", crash)
    with pytest.raises(_Crash):
        trainer.train()
    assert weights[0] == pytest.approx(0.8) and weights[-1] == pytest.approx(0.1)  # 2 epochs: 0.8, then 0.1
    resumed_trainer = Trainer.resume(tmp_path / "run")
    result = resumed_trainer.train()
    assert resumed_trainer.loss_fn.o2m == pytest.approx(0.1) and not result["nan_reports"]
    resumed = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    straight_trainer = Trainer({**cfg, "name": "straight"})
    straight_trainer.train()
    straight = torch.load(tmp_path / "straight" / "weights" / "last.pt", weights_only=True)
    assert type(straight_trainer.optimizer).__name__ == "MuSGD" and straight_trainer.amp.dtype == torch.bfloat16
    for key, value in straight["train_state"]["model"].items():
        assert torch.equal(value, resumed["train_state"]["model"][key]), key
    for key, value in straight["state_dict"].items():  # the EMA weights
        assert torch.equal(value, resumed["state_dict"][key]), key
    rows = _rows(tmp_path / "run")
    assert list(rows[0])[1:4] == ["train/box_loss", "train/cls_loss", "train/l1_loss"] and len(rows) == 2
    assert all(math.isfinite(float(r["train/l1_loss"])) and 0 <= float(r["metrics/mAP50-95"]) <= 1 for r in rows)


def test_yolov10n_trains_fp16_and_validates_on_both_paths(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolov10n.yaml", epochs=1, amp="fp16", amp_init_scale=256.0,
                         optimizer="auto")  # fmt: skip
    trainer = Trainer(cfg)
    result = trainer.train()
    assert trainer.amp.dtype == torch.float16 and trainer.guard.rollbacks == 0 and not result["nan_reports"]
    assert type(trainer.optimizer).__name__ == "AdamW" and trainer.cfg["lr0"] == round(0.01 / 7, 6)  # auto, short
    assert list(_rows(tmp_path / "run")[0])[1:4] == ["train/box_loss", "train/cls_loss", "train/dfl_loss"]
    model = YOLO(tmp_path / "run" / "weights" / "last.pt", verbose=False).model
    head = model.model[-1]
    assert head.end2end
    maps = {}
    for mode in (None, False, True):
        maps[mode] = validate(model, str(tiny_shapes), imgsz=64, batch_size=4, workers=0, verbose=False,
                              end2end=mode)  # fmt: skip
        assert 0.0 <= maps[mode].map50_95 <= 1.0 and head.end2end  # the head's own mode is restored
    assert maps[None].map50_95 == maps[True].map50_95  # the default is the NMS-free path


@pytest.fixture(scope="module")
def bus_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_path("images", "bus.jpg"))), cv2.COLOR_BGR2RGB)


def _varied(name: str) -> DetectionModel:
    """The package's checkpoint of this model (rule-made weights, BatchNorm statistics measured on bus.jpg;
    shared/reference/ultralytics-next) with its heads' output convolutions scaled by 0.05: scores that vary
    from anchor to anchor and do not saturate. (A fresh model's near-equal scores, and saturated ones, tie, and
    two top-k implementations break ties differently.)"""
    model = load_model(shared_path("reference", "ultralytics-next", f"{name.removesuffix('.yaml')}_rule.pt")).eval()
    head = model.model[-1]
    with torch.no_grad():
        for branch in (head.cv2, head.cv3, head.one2one_cv2, head.one2one_cv3):
            for layers in branch:
                layers[-1].weight.mul_(0.05)
    return model


@pytest.mark.parametrize("name", ["yolo26n.yaml", "yolov10n.yaml"])
def test_predict_on_both_paths_and_the_backend_cache_per_mode(name, bus_rgb):
    yolo = YOLO(name, verbose=False)
    yolo.model = _varied(name)
    kwargs = dict(imgsz=320, conf=0.0, verbose=False, max_det=300)
    e2e = yolo.predict(bus_rgb, backend="torch", **kwargs)[0].boxes.data
    nms = yolo.predict(bus_rgb, backend="torch", end2end=False, **kwargs)[0].boxes.data
    assert e2e.shape[0] == 300 and 0 < nms.shape[0] <= 300 and yolo.model.model[-1].end2end
    assert not torch.equal(e2e, nms)  # two branches, two answers
    assert sorted(key[1][0] for key in yolo._prepared) == [False, True]  # one prepared backend per mode
    keys = set()
    for mode in (True, False):
        with end2end_mode(yolo.model, mode):
            keys.add(weights_key(yolo.model))
    assert len(keys) == 2  # the ONNX backend's cached file is named per output mode
    with pytest.raises(ConfigError, match=r"end2end=True: the model's head \(AnchorFreeDetect\) has no one-to-one"):
        YOLO("yolov8n.yaml", verbose=False).predict(bus_rgb, imgsz=64, end2end=True)


def test_end2end_setting_words():
    assert [parse_end2end(v) for v in (None, "auto", "on", "off", True, "False")] == [
        None,
        None,
        True,
        False,
        True,
        False,
    ]
    with pytest.raises(ConfigError, match="end2end: expected true, false or auto"):
        parse_end2end("maybe")
    model = DetectionModel("yolov8n.yaml", nc=3)
    with end2end_mode(model, False) as e2e:  # a head that needs NMS anyway: nothing to switch
        assert e2e is False


@pytest.mark.parametrize("name", ["yolo26n.yaml", "yolov10n.yaml"])
def test_onnx_export_needs_no_nms_outside(name, tmp_path):
    """The default export ends in the (B, 300, 6) detections; onnxruntime and OpenCV DNN agree with PyTorch
    as sets; end2end=False exports the one-to-many branch in the anchor-free layout instead."""
    model = _varied(name)
    path = export_model(model, "onnx", tmp_path / "e2e.onnx", imgsz=96, dynamic_size=True).path
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["layout"] == "detections"
    assert not any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(path)).graph.node)
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    dnn = net.forward()
    for out in (got, dnn):
        assert out.shape == (1, 300, 6)
        # as sets; random-input float32 drift through this untrained model reaches ~0.5 px and ~1e-2 in score
        assert same_detections(torch.from_numpy(out), expected, box_tol=1.0, score_tol=2e-2)
    rows_path = export_model(model, "onnx", tmp_path / "o2m.onnx", imgsz=96, end2end=False).path
    assert {p.key: p.value for p in onnx.load(str(rows_path)).metadata_props}["layout"] == "columns"
    assert model.model[-1].end2end  # the model's own head is untouched
    x = np.random.default_rng(1).random((1, 3, 96, 96), dtype=np.float32)
    columns = ort.InferenceSession(str(rows_path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with end2end_mode(model, False), torch.no_grad():
        rows = model(torch.from_numpy(x))[0]
    np.testing.assert_allclose(columns.transpose(0, 2, 1), rows.numpy(), atol=1e-2, rtol=1e-3)


def test_cli_predict_val_export_with_end2end(tiny_shapes, tmp_path, monkeypatch, capsys):
    """--end2end off/on on the command line; export then predict from the NMS-free file."""
    monkeypatch.chdir(tmp_path)
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    ckpt = save_checkpoint(model_checkpoint(DetectionModel("yolo26n.yaml", nc=3)), tmp_path / "m.pt")
    image = next((tiny_shapes.parent / "images" / "val").iterdir())
    counts = {}
    for flag, max_det in (("on", 300), ("on", 40), ("off", 40)):
        assert main(["predict", "--model", str(ckpt), "--source", str(image), "--imgsz", "64", "--conf", "0",
                     "--backend", "torch", "--end2end", flag, "--max-det", str(max_det)]) == 0  # fmt: skip
        counts[flag, max_det] = int(capsys.readouterr().out.split(" images, ")[1].split()[0])
    assert counts["on", 300] == 84  # 84 anchors at 64 px: min(max_det, anchors) rows, as the package
    assert counts["on", 40] == 40 and counts["off", 40] <= 40
    assert main(["val", "--model", str(ckpt), "--data", str(tiny_shapes), "--imgsz", "64", "--workers", "0",
                 "end2end=false"]) == 0  # fmt: skip
    assert "all" in capsys.readouterr().out
    assert main(["export", "--model", str(ckpt), "--imgsz", "64", "--max-det", "50"]) == 0
    onnx_file = tmp_path / "m.onnx"
    assert {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}["layout"] == "detections"
    capsys.readouterr()
    assert main(["predict", "--model", str(onnx_file), "--source", str(image), "--imgsz", "64", "--conf", "0"]) == 0
    assert "1 images, 50 detections" in capsys.readouterr().out  # the file's top 50, no NMS
    assert main(["predict", "--model", "yolov8n.yaml", "--source", str(image), "--imgsz", "64", "--end2end", "on"]) == 2
    assert "no one-to-one branch" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["yolo26n", "yolov10n"])
def test_info_and_explain(name, tmp_path):
    counts = json.loads(PARAM_COUNTS.read_text())["models"][name]
    info = YOLO(f"{name}.yaml", verbose=False).info(imgsz=640, verbose=False)
    assert info["params"] == counts["params"] and info["gflops"] > 5
    from yolotr.engine.explain import explain

    model = _varied(f"{name}.yaml")
    image = shared_path("images", "bus.jpg")
    for layer in (8, 10):  # a C3k2 / C2fCIB stage (Grad-CAM) and the C2PSA / PSA attention
        heat, png = explain(model, image, layer, imgsz=128, save_path=tmp_path / f"{layer}.png")
        assert png.is_file() and heat.shape == (1080, 810) and np.isfinite(heat).all() and heat.max() > heat.min()


@pytest.mark.slow  # two trainings and their latency in fresh processes: about 2 minutes on a busy 2-core machine
def test_compare_across_the_two_families(tiny_shapes, tmp_path):
    import yolotr

    settings = dict(epochs=1, imgsz=64, batch=4, nbs=4, workers=0, device="cpu", warmup_epochs=0.5,
                    warmup_min_iters=2, mosaic=0.5, autoanchor=False)  # fmt: skip
    result = yolotr.compare(["yolo26n.yaml", "yolov10n.yaml"], str(tiny_shapes), 1, project=tmp_path,
                            latency_runs=2, log_table=False, **settings)  # fmt: skip
    assert not result.failed and [r["model"] for r in result.rows] == ["yolo26n", "yolov10n"]
    counts = json.loads(PARAM_COUNTS.read_text())["models"]
    for row in result.rows:  # 3 classes here, so fewer parameters than the 80-class counts
        assert 0 < row["params"] < counts[row["model"]]["params"] and row["latency_ms"] > 0
        assert all(0.0 <= v <= 1.0 for k, v in row.items() if k.endswith("_mean") and "map" in k.lower())
