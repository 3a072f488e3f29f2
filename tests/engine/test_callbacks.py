"""Training callbacks by the ``ultralytics`` package's event names (``yolotr/engine/callbacks.py``): when each is
called, what the trainer shows a callback under the package's names, ``trainer.stop``, and the events refused."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr import YOLO
from yolotr.engine.callbacks import TRAINING_EVENTS
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError

PER_BATCH = {"on_train_batch_start", "on_train_batch_end", "optimizer_step", "on_before_zero_grad"}


def _record_all(trainer: Trainer, seen: list) -> None:
    for event in TRAINING_EVENTS:
        trainer.add_callback(event, lambda t, e=event: seen.append((e, t.epoch if hasattr(t, "epoch") else None)))


def test_events_come_in_the_package_order_with_its_trainer_names(tiny_shapes, tmp_path):
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, val=True, epochs=2))
    seen: list = []
    _record_all(trainer, seen)
    views = {}

    def at_fit_epoch_end(t):
        views[t.epoch] = dict(metrics=t.metrics, fitness=t.fitness, lr=t.lr, tloss=t.tloss, items=t.loss_items,
                              best=t.best.is_file(), last=t.last.is_file(), wdir=t.wdir, epochs=t.epochs,
                              imgsz=t.args.imgsz)  # fmt: skip

    trainer.add_callback("on_fit_epoch_end", at_fit_epoch_end)
    validated_before_epoch_end: list = []  # on_train_epoch_end comes before the epoch's validation
    trainer.add_callback("on_train_epoch_end", lambda t: validated_before_epoch_end.append(t.fitness is not None))
    trainer.train()
    assert validated_before_epoch_end == [False, True]
    nb = trainer.nb
    coarse = [e for e in seen if e[0] not in PER_BATCH]
    assert coarse == [
        ("on_pretrain_routine_start", None),
        ("on_pretrain_routine_end", None),
        ("on_train_start", 0),
        ("on_train_epoch_start", 0),
        ("on_train_epoch_end", 0),
        ("on_model_save", 0),
        ("on_fit_epoch_end", 0),
        ("on_train_epoch_start", 1),
        ("on_train_epoch_end", 1),
        ("on_model_save", 1),
        ("on_fit_epoch_end", 1),
        ("on_train_end", 1),
        ("teardown", 1),
    ]
    batch_events = [e for e, _ in seen if e in PER_BATCH]
    assert batch_events.count("on_train_batch_start") == batch_events.count("on_train_batch_end") == 2 * nb
    assert batch_events.count("optimizer_step") == batch_events.count("on_before_zero_grad") == trainer.optimizer_steps
    assert trainer.optimizer_steps > 0
    first = batch_events.index("on_train_batch_start")
    assert batch_events[first : first + 4] == [  # nbs = batch: a step every batch
        "on_train_batch_start", "on_before_zero_grad", "optimizer_step", "on_train_batch_end"
    ]  # fmt: skip
    last_epoch = views[1]
    assert set(last_epoch["metrics"]) >= {"metrics/mAP50-95(B)", "metrics/mAP50(B)", "fitness", "val/box_loss"}
    assert last_epoch["fitness"] == pytest.approx(last_epoch["metrics"]["fitness"])
    assert list(last_epoch["lr"]) == [f"lr/pg{i}" for i in range(len(trainer.optimizer.param_groups))]
    assert last_epoch["tloss"].shape == (len(trainer.loss_fn.names),) and torch.isfinite(last_epoch["tloss"]).all()
    assert last_epoch["items"].shape == last_epoch["tloss"].shape
    assert last_epoch["best"] and last_epoch["last"] and last_epoch["wdir"] == trainer.weights_dir
    assert last_epoch["epochs"] == 2 and last_epoch["imgsz"] == 64


def test_a_callback_setting_stop_ends_the_run_after_that_epoch(tiny_shapes, tmp_path, caplog):
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=4))
    trainer.add_callback("on_train_epoch_end", lambda t: setattr(t, "stop", t.epoch == 1))
    ends: list = []
    trainer.add_callback("on_train_end", lambda t: ends.append(t.epoch))
    with caplog.at_level(logging.INFO, logger="yolotr"):
        trainer.train()
    rows = (trainer.save_dir / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 and ends == [1]  # epochs 0 and 1 trained, validated and saved; 2 and 3 not
    assert torch.load(trainer.last, weights_only=False)["epoch"] == 2
    assert "stopped by a callback (trainer.stop)" in caplog.text


def test_teardown_follows_a_failed_run(tiny_shapes, tmp_path):
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path))
    seen: list = []
    _record_all(trainer, seen)

    def fail(t):
        if t.step == 2:
            raise KeyError("the callback's own bug")

    trainer.add_callback("on_train_batch_end", fail)
    with pytest.raises(KeyError, match="the callback's own bug"):
        trainer.train()
    assert seen[-1][0] == "teardown" and ("on_train_end", 0) not in seen


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("on_val_end", "'on_val_end' is one of the ultralytics package's validator; yolotr calls callbacks in"),
        ("on_predict_batch_end", "package's predictor"),
        ("on_export_start", "package's exporter"),
        ("on_params_update", "declares it but never calls it"),
        ("on_train_epoc_end", "unknown training event 'on_train_epoc_end'; did you mean on_train_epoch_end"),
    ],
)
def test_events_yolotr_does_not_call_are_refused_with_the_reason(tmp_path, event, message):
    trainer = Trainer({"project": str(tmp_path)})
    with pytest.raises(ConfigError, match=message):
        trainer.add_callback(event, print)
    with pytest.raises(ConfigError, match=message):
        YOLO("yolov5n.yaml", verbose=False).add_callback(event, print)


def test_yolotr_names_are_the_package_ones_and_fn_must_be_callable(tmp_path):
    trainer = Trainer({"project": str(tmp_path)})
    trainer.add_callback("on_batch_start", print)
    trainer.add_callback("on_epoch_end", len)
    assert trainer.callbacks["on_train_batch_start"] == [print] and trainer.callbacks["on_fit_epoch_end"] == [len]
    with pytest.raises(ConfigError, match="is not callable"):
        trainer.add_callback("on_train_end", "print")
