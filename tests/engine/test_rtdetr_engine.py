"""The engine with RT-DETR (issue 28 item 5): training with the denoising queries and the head's training
defaults (the ``ultralytics`` package's recipe), fp16 and bf16 autocast without guard action, exact resume,
validation and prediction without NMS, and ONNX export run by onnxruntime at other sizes and by OpenCV DNN."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from yolotr import YOLO
from yolotr.engine import predictor as predictor_module
from yolotr.engine import validator as validator_module
from yolotr.engine.exporter import export_model
from yolotr.engine.head_mode import same_detections
from yolotr.engine.optim import TRANSFORMER_MODULES, parameter_groups, resolve_train_settings
from yolotr.engine.trainer import Trainer
from yolotr.models.detection import DetectionModel
from yolotr.nn.detr import AIFI
from yolotr.nn.head_detr import RTDETRDecoder
from yolotr.ops.loss import build_loss

from .conftest import tiny_train_cfg

# rtdetr-l's layout (HGStem, HGBlocks, AIFI, RepC3 fusion path, decoder) at a few percent of its width
TINY_RTDETR = {
    "nc": 3,
    "backbone": [
        [-1, 1, "HGStem", [8, 16]],  # 0: P2/4
        [-1, 1, "HGBlock", [8, 16, 3]],
        [-1, 1, "DWConv", [16, 3, 2, 1, False]],  # 2: P3/8
        [-1, 1, "HGBlock", [16, 32, 3]],
        [-1, 1, "DWConv", [32, 3, 2, 1, False]],  # 4: P4/16
        [-1, 1, "HGBlock", [16, 48, 5, True, False]],
        [-1, 1, "DWConv", [48, 3, 2, 1, False]],  # 6: P5/32
        [-1, 1, "HGBlock", [24, 64, 5, True, False]],
    ],
    "head": [
        [-1, 1, "Conv", [32, 1, 1, None, 1, 1, False]],  # 8
        [-1, 1, "AIFI", [64, 4]],
        [-1, 1, "Conv", [32, 1, 1]],  # 10: Y5
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [5, 1, "Conv", [32, 1, 1, None, 1, 1, False]],
        [[-2, -1], 1, "Concat", [1]],
        [-1, 1, "RepC3", [32]],
        [-1, 1, "Conv", [32, 1, 1]],  # 15: Y4
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [3, 1, "Conv", [32, 1, 1, None, 1, 1, False]],
        [[-2, -1], 1, "Concat", [1]],
        [-1, 1, "RepC3", [32]],  # 19: X3
        [-1, 1, "Conv", [32, 3, 2]],
        [[-1, 15], 1, "Concat", [1]],
        [-1, 1, "RepC3", [32]],  # 22: F4
        [-1, 1, "Conv", [32, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 1, "RepC3", [32]],  # 25: F5
        [[19, 22, 25], 1, "RTDETRDecoder", ["nc", 32, 30, 4, 4, 2, 64]],  # nc, hd, nq, ndp, nh, ndl, d_ffn
    ],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtdetr") / "tiny-rtdetr.yaml"
    path.write_text(yaml.safe_dump(TINY_RTDETR, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tiny_shapes, tiny_yaml, tmp_path_factory):
    """A tiny RT-DETR trained 2 epochs under bf16 autocast, validated after each (the run directory)."""
    project = tmp_path_factory.mktemp("rtdetr-runs")
    trainer = Trainer(tiny_train_cfg(tiny_shapes, project, model=str(tiny_yaml), amp="bf16", val=True))
    result = trainer.train()
    return trainer, result, project / "run"


class _Crash(RuntimeError):
    pass


def _an_image(data_yaml):
    return next(p for p in sorted((data_yaml.parent / "images").rglob("*")) if p.suffix in (".jpg", ".png"))


def _rows(run_dir) -> list[dict]:
    with (run_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_head_defaults_fill_only_the_settings_not_given(tiny_yaml):
    """The package's recipe for the head (optimizer auto -> AdamW at its fitted lr0, linear decay, no warmup
    floor, no attention lr scale), each key yielding to a setting the user gave; a YOLO head has none."""
    model = DetectionModel(str(tiny_yaml))
    cfg = Trainer({"model": str(tiny_yaml)}).cfg
    applied = resolve_train_settings(cfg, model, {"model"}, n_images=16)
    assert applied == RTDETRDecoder.train_defaults
    assert (cfg["optimizer"], cfg["lr0"], cfg["momentum"], cfg["warmup_bias_lr"]) == ("AdamW", 0.001429, 0.9, 0.0)
    assert (cfg["cos_lr"], cfg["warmup_min_iters"], cfg["lr_transformer_scale"]) == (False, 0, 1.0)
    cfg = Trainer({"optimizer": "SGD", "lr0": 0.02, "cos_lr": True}).cfg
    resolve_train_settings(cfg, model, {"optimizer", "lr0", "cos_lr"}, n_images=16)
    assert (cfg["optimizer"], cfg["lr0"], cfg["cos_lr"], cfg["lr_transformer_scale"]) == ("SGD", 0.02, True, 1.0)
    cfg = Trainer({}).cfg
    assert resolve_train_settings(cfg, DetectionModel("yolov5n.yaml", nc=3), set(), n_images=16) == {}
    assert (cfg["optimizer"], cfg["lr_transformer_scale"]) == ("SGD", 1.0)  # auto: no TransformerC3/C3TR/Swin


def test_attention_layers_of_rtdetr_are_transformer_groups(tiny_yaml):
    model = DetectionModel(str(tiny_yaml))
    inside = {id(p) for m in model.modules() if isinstance(m, TRANSFORMER_MODULES) for p in m.parameters()}
    aifi = next(m for m in model.modules() if isinstance(m, AIFI))
    head = model.model[-1]
    assert all(id(p) in inside for p in (*aifi.parameters(), *head.decoder.layers.parameters()))
    assert not any(id(p) in inside for p in head.dec_score_head.parameters())
    groups = {g["name"]: g for g in parameter_groups(model, 5e-4, 0.5)}
    assert groups["decay/transformer"]["lr_scale"] == 0.5 and groups["decay"]["lr_scale"] == 1.0


def test_tiny_rtdetr_trains_fp16_with_denoising_and_resumes_exactly(tiny_shapes, tiny_yaml, tmp_path):
    """fp16 autocast with loss scaling on the CPU: the denoising queries are fed, the scale calibrates (counted
    overflows, never a fault), the losses stay finite; killed in epoch 2 and resumed, the same weights and EMA."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=str(tiny_yaml), amp="fp16", save_period_steps=1)
    trainer = Trainer(cfg)
    denoising: list[bool] = []

    def record(module, inputs, output):
        if module.training:
            denoising.append(output[4] is not None and output[4]["dn_num_split"][0] > 0)

    def crash(t):
        if t.step == 1:
            t.model.model[-1].register_forward_hook(record)
        if t.step == 6:  # 4 steps per epoch: the middle of the second
            raise _Crash("power cut")

    trainer.add_callback("on_batch_start", crash)
    with pytest.raises(_Crash):
        trainer.train()
    assert denoising and all(denoising)  # the trainer fed the targets: every training forward had dn queries
    assert (trainer.cfg["optimizer"], trainer.cfg["cos_lr"]) == ("AdamW", False)
    assert type(trainer.optimizer).__name__ == "AdamW" and trainer.amp.dtype == torch.float16
    assert trainer.gate.overflows >= 1 and not trainer.guard.reports  # calibration skips; never the guard's
    resumed = Trainer.resume(tmp_path / "run")
    assert resumed.train()["nan_reports"] == []
    last = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    straight_trainer = Trainer({**cfg, "name": "straight"})
    assert straight_trainer.train()["nan_reports"] == []
    straight = torch.load(tmp_path / "straight" / "weights" / "last.pt", weights_only=True)
    for key, value in straight["train_state"]["model"].items():
        assert torch.equal(value, last["train_state"]["model"][key]), key
    for key, value in straight["state_dict"].items():  # the EMA weights
        assert torch.equal(value, last["state_dict"][key]), key
    rows = _rows(tmp_path / "straight")
    assert len(rows) == 2 and all(math.isfinite(float(r[k])) for r in rows for k in r if k.startswith("train/"))
    assert float(rows[-1]["amp/loss_scale"]) < 65536  # calibrated down from the initial scale
    assert straight_trainer.gate.overflows < straight_trainer.nb * 2  # some steps ran


def test_validation_and_prediction_skip_nms(trained, tiny_shapes, monkeypatch):
    """bf16 training, then validation and prediction of the trained model with NMS made to fail: the head's
    own detections are used, in input pixels."""
    trainer, result, run_dir = trained
    assert result["nan_reports"] == [] and math.isfinite(result["metrics/mAP50-95"])
    assert trainer.amp.dtype == torch.bfloat16 and type(trainer.optimizer).__name__ == "AdamW"

    def no_nms(*args, **kwargs):
        raise AssertionError("NMS ran on an NMS-free head")

    monkeypatch.setattr(predictor_module, "non_max_suppression", no_nms)
    monkeypatch.setattr(validator_module, "non_max_suppression", no_nms)
    model = YOLO(str(run_dir / "weights" / "best.pt"))
    metrics = model.val(data=str(tiny_shapes), imgsz=64, batch_size=4)
    assert 0.0 <= metrics.map50_95 <= 1.0
    image = _an_image(tiny_shapes)
    xyxy = model.predict(str(image), imgsz=96, conf=0.0, max_det=20, backend="torch")[0].boxes.xyxy
    assert len(xyxy) == 20  # the head's top 20 (query, class) pairs, no NMS to thin them
    height, width = cv2.imread(str(image)).shape[:2]
    assert float(xyxy[:, [0, 2]].max()) <= width + 1 and float(xyxy[:, [1, 3]].max()) <= height + 1


def test_onnx_export_agrees_at_other_sizes_and_runs_in_opencv(trained, tmp_path):
    """Exported at 64 px with dynamic sizes, the file agrees with PyTorch at 96x128 and batch 2 (the pixel scale
    is no longer baked at the example size) and at 32 px, whose 21 tokens are fewer than the 30 queries (a TopK
    of 30 failed there); OpenCV DNN (GridSample since 4.9) runs the static export."""
    _, _, run_dir = trained
    model = YOLO(str(run_dir / "weights" / "best.pt")).model.eval()
    model.model[-1].set_end2end(True, max_det=300)
    path = tmp_path / "tiny.onnx"
    export_model(model, "onnx", path, imgsz=64, dynamic_size=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        want = model(x)[0]
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert got.shape == want.shape == (2, 30, 6)  # num_queries (pairs) rows, as the package
    assert same_detections(got, want, box_tol=0.1)
    assert float(want[..., :4].max()) > 64  # pixels of the 96x128 input, not of the 64 px example
    x = torch.rand(1, 3, 32, 32)  # 21 tokens for 30 queries: the file's query TopK takes 21, as PyTorch
    with torch.no_grad():
        want = model(x)[0]
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    assert got.shape == want.shape == (1, 30, 6) and same_detections(got, want, box_tol=0.1)
    static = tmp_path / "static.onnx"
    export_model(model, "onnx", static, imgsz=64, dynamic=False)
    net = cv2.dnn.readNetFromONNX(str(static))
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    net.setInput(x)
    opencv = torch.from_numpy(net.forward())
    with torch.no_grad():
        want = model(torch.from_numpy(x))[0]
    assert same_detections(opencv, want, box_tol=0.1)


def test_onnx_backend_predicts_rtdetr_without_falling_back(trained, tiny_shapes, caplog, monkeypatch, tmp_path):
    """The fast onnx backend exports at 256 px and predicts at 64 px: it agrees and stays on onnxruntime."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path))  # a fresh export, not a cached file
    _, _, run_dir = trained
    model = YOLO(str(run_dir / "weights" / "best.pt"))
    image = _an_image(tiny_shapes)
    onnx = model.predict(str(image), imgsz=64, conf=0.0, max_det=20, backend="onnx")[0]
    torch_result = model.predict(str(image), imgsz=64, conf=0.0, max_det=20, backend="torch")[0]
    assert "differs from PyTorch" not in caplog.text
    prepared = [entry[2] for entry in model._prepared.values() if getattr(entry[2], "name", "") == "onnx"]
    assert prepared and not prepared[0].on_torch  # the 64 px shape stayed on onnxruntime
    a, b = (
        torch.cat((r.boxes.xyxy, r.boxes.conf[:, None], r.boxes.cls[:, None]), 1)[None] for r in (onnx, torch_result)
    )
    assert a.shape == b.shape == (1, 20, 6) and same_detections(a, b, box_tol=0.1)


@pytest.mark.parametrize(
    "spec, swin_layers, params",
    [("rtdetr-swinv2.yaml", (7, 9), 30_414_065), ("rtdetr-swinv2-aifi.yaml", (11,), 33_081_305)],
)
def test_rtdetr_swinv2_builds_and_trains_a_few_steps(spec, swin_layers, params):
    """rtdetr-swinv2.yaml: rtdetr-l with SwinV2_CSPB at P4 and P5 (a little smaller than rtdetr-l, 32,812,241 at
    nc=3); rtdetr-swinv2-aifi.yaml: SwinV2_CSPB in AIFI's place. Each NMS-free at a size that is not square, and
    two AdamW steps at 64 px with the denoising queries: finite losses, and the Swin blocks' weights move."""
    torch.manual_seed(0)
    model = DetectionModel(spec, nc=3)
    names = [type(m).__name__ for m in model.model]
    assert [i for i, name in enumerate(names) if name == "SwinV2_CSPB"] == list(swin_layers)
    assert ("AIFI" in names) is (11 not in swin_layers) and names[-1] == "RTDETRDecoder"
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.model[-1].stride.tolist() == [8.0, 16.0, 32.0]
    model.eval()
    with torch.no_grad():
        detections, _ = model(torch.rand(1, 3, 96, 160))
    assert detections.shape == (1, 300, 6) and float(detections[..., [0, 2]].max()) <= 160 + 1
    model.train()
    swin = model.model[swin_layers[-1]].m
    before = [p.detach().clone() for p in swin.parameters()]
    loss_fn = build_loss(model, {}, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3], [1, 0, 0.3, 0.6, 0.2, 0.4], [1, 2, 0.7, 0.3, 0.2, 0.2]])
    for _ in range(2):
        images = torch.rand(2, 3, 64, 64)
        loss, items = loss_fn(model(images, targets), targets)
        assert torch.isfinite(loss) and torch.isfinite(items).all()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, swin.parameters()))


def test_validation_runs_on_the_imgsz_square_as_the_package(tiny_shapes, tiny_yaml, monkeypatch):
    """RT-DETR validates on the ``imgsz`` square without padding (the package's RTDETRValidator); a YOLO head keeps
    the rectangular batches with half a stride of padding (a 64-px square image: 96 px)."""
    from yolotr.engine.head_mode import input_fit
    from yolotr.engine.validator import validate

    for spec, fit, side in ((str(tiny_yaml), "stretch", 64), ("yolov5n.yaml", "letterbox", 96)):
        model = DetectionModel(spec, nc=3).eval()
        assert input_fit(model) == fit
        sizes = set()
        model.register_forward_pre_hook(lambda m, args, sizes=sizes: sizes.add(tuple(args[0].shape[2:])))
        validate(model, str(tiny_shapes), "val", imgsz=64, batch_size=4, workers=0)
        assert sizes == {(side, side)}, spec
