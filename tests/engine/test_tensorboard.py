"""TensorBoard: the detection and caption trainers write their scalars and images into the run directory."""

from __future__ import annotations

import csv
import math
import sys

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.engine.caption_trainer import CaptionTrainer
from yolotr.engine.tensorboard import TensorBoardLogger
from yolotr.engine.trainer import Trainer
from yolotr.engine.validator import validate

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="tensorboard is not installed"
)


def _events(run_dir):
    files = list(run_dir.glob("events.out.tfevents.*"))
    assert files, f"no events file in {run_dir}"
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_detection_run_writes_losses_lr_metrics_and_predictions(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, val=True, val_period=2, epochs=2, autoanchor=False)
    trainer = Trainer(cfg)
    summary = trainer.train()
    run = tmp_path / "run"
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    losses = {"train/box_loss", "train/obj_loss", "train/cls_loss"}
    val_losses = {"val/box_loss", "val/obj_loss", "val/cls_loss"}
    metrics = {"metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95"}  # as docs/datasets.md
    assert losses | val_losses | metrics | {"lr/pg0", "lr/pg1", "lr/pg2"} <= tags
    assert "fitness" not in tags
    # the validation losses are the trainer's loss on the validated (EMA) model over the val split
    again = validate(trainer.ema.ema, dataloader=trainer.val_loader, names=trainer.names, loss_fn=trainer.loss_fn)
    for name, value in zip(trainer.loss_fn.names, again.loss):
        assert [e.step for e in acc.Scalars(f"val/{name}_loss")] == [2]
        assert acc.Scalars(f"val/{name}_loss")[0].value == pytest.approx(value, rel=1e-5) and value > 0
        assert summary[f"val/{name}_loss"] == pytest.approx(value, rel=1e-5)
    rows = list(csv.DictReader(open(run / "results.csv")))
    for name, value in zip(trainer.loss_fn.names, again.loss):  # results.csv too, NaN where nothing was validated
        assert math.isnan(float(rows[0][f"val/{name}_loss"]))
        assert float(rows[1][f"val/{name}_loss"]) == pytest.approx(value, abs=1e-6)  # written to 6 decimals
    for tag in losses | {f"lr/pg{i}" for i in range(len(trainer.optimizer.param_groups))}:  # the CSV's columns
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([float(r[tag]) for r in rows], abs=1e-5)
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert [float(rows[-1][f"lr/pg{i}"]) for i in range(len(lrs))] == pytest.approx(lrs, rel=1e-6)
    assert float(rows[-1]["lr"]) == float(rows[-1]["lr/pg0"])
    # validated after epoch 2 only (val_period 2): metrics and images at that step only
    assert [e.step for e in acc.Scalars("metrics/mAP50-95")] == [2]
    assert acc.Scalars("metrics/mAP50-95")[-1].value == pytest.approx(float(rows[-1]["metrics/mAP50-95"]), abs=1e-5)
    images = acc.Tags()["images"]
    assert {f"val/predictions/{k}" for k in range(4)} <= set(images)
    assert [e.step for e in acc.Images("val/predictions/0")] == [2]
    assert acc.Images("val/predictions/0")[0].width == 64  # the original image, boxes drawn on it


def test_caption_run_writes_scalars_and_captioned_images(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    tiny = dict(
        data="shapes", n_train=8, n_val=3, imgsz=48, encoder="patch", patch=16, vit_depth=1, dim=32, layers=1,
        heads=2, max_len=16, batch=4, epochs=2, seed=0, project=str(tmp_path / "runs"), name="c",
    )  # fmt: skip
    CaptionTrainer(tiny).train()
    acc = _events(tmp_path / "runs" / "c")
    for tag in ("train/loss", "val/loss", "lr", "metrics/BLEU-4", "metrics/CIDEr-D"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    assert set(acc.Tags()["images"]) == {"val/captions/0", "val/captions/1", "val/captions/2"}  # 3 val images


def test_logger_is_a_no_op_without_tensorboard_or_a_directory(tmp_path, monkeypatch):
    assert not TensorBoardLogger(None).enabled  # the ranks other than 0
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    logger = TensorBoardLogger(tmp_path)
    assert not logger.enabled
    logger.scalars({"a": 1.0}, 1)
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_logging_does_not_change_training(tiny_shapes, tmp_path, monkeypatch):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, val=True, epochs=2, autoanchor=False)  # logged after epoch 1
    Trainer({**cfg, "name": "with"}).train()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    Trainer({**cfg, "name": "without"}).train()
    assert not list((tmp_path / "without").glob("events.out.tfevents.*"))
    with_tb = torch.load(tmp_path / "with" / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    without = torch.load(tmp_path / "without" / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    for key, value in without.items():
        assert torch.equal(value, with_tb[key]), key
