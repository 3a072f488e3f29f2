"""Our blocks in YOLO26 (yolo26n-swinv2, yolo26n-transformerc3, yolo26n-hwd): built at any multiple of 32,
trained under bf16 and fp16 autocast without a guard action, exported NMS-free within tolerance."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.exporter import export_model
from yolotr.engine.head_mode import same_detections
from yolotr.engine.trainer import Trainer
from yolotr.models.detection import DetectionModel
from yolotr.nn.attention import TransformerC3
from yolotr.nn.head_e2e import E2EDetect
from yolotr.nn.swin import SwinV2_CSPB
from yolotr.nn.wavelet import HWD

from ..engine.conftest import tiny_train_cfg

BLOCKS = {"yolo26n-swinv2.yaml": SwinV2_CSPB, "yolo26n-transformerc3.yaml": TransformerC3, "yolo26n-hwd.yaml": HWD}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "tiny", n_train=16, n_val=8, imgsz=64, seed=3)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_builds_at_any_multiple_of_32(name: str) -> None:
    torch.manual_seed(0)
    model = DetectionModel(name, nc=3)
    head = model.model[-1]
    assert isinstance(head, E2EDetect) and head.end2end and head.reg_max == 1
    assert any(isinstance(m, BLOCKS[name]) for m in model.modules())
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    for h, w in ((64, 64), (96, 160), (224, 32)):  # any multiple of 32, square or not
        x = torch.rand(2, 3, h, w)
        out = model.train()(x)
        assert [tuple(m.shape) for m in out["one2one"]] == [(2, 7, h // s, w // s) for s in (8, 16, 32)]
        with torch.no_grad():
            det = model.eval()(x)[0]
        assert det.shape == (2, 300, 6) and torch.isfinite(det).all()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_trains_under_autocast_without_guard_action(name: str, amp: str, tiny_shapes, tmp_path) -> None:
    # fp16: a start scale of 2^8, so that the two steps run (at 2^16 GradScaler spends them calibrating:
    # counted overflows, not faults, engine/amp.py) and fp16 updates are exercised
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=name, epochs=1, batch=8, nbs=8, amp=amp, warmup_min_iters=0,
                         amp_init_scale=256.0)  # fmt: skip
    trainer = Trainer(cfg)
    before = []
    trainer.add_callback(
        "on_batch_start", lambda t: before or before.extend(p.detach().clone() for p in t.model.parameters())
    )
    result = trainer.train()
    assert trainer.amp.dtype == (torch.bfloat16 if amp == "bf16" else torch.float16)
    assert not result["nan_reports"] and trainer.guard.rollbacks == 0 and trainer.gate.overflows == 0
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    with (tmp_path / "run" / "results.csv").open() as f:
        row = next(csv.DictReader(f))
    losses = [float(row[f"train/{k}_loss"]) for k in ("box", "cls", "l1")]
    assert all(math.isfinite(v) for v in losses) and losses[1] > 0, row
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("name", list(BLOCKS))
def test_exports_nms_free_within_tolerance(name: str, tmp_path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = DetectionModel(name, nc=3).eval()
    result = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=96, dynamic_size=True)
    assert result.detections_match  # (max_abs_diff compares rows in order: near-tied scores swap them)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for h, w in ((64, 128), (96, 96)):
        x = torch.rand(2, 3, h, w)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            expected = model(x)[0]
        assert got.shape == expected.shape == (2, 300, 6)
        assert same_detections(got, expected, box_tol=1e-2, score_tol=1e-4)
        moved = expected.clone()
        moved[0, 0, :4] += 0.5  # one box half a pixel off: the check can fail
        assert not same_detections(got, moved, box_tol=1e-2, score_tol=1e-4)
