"""Early stopping (``patience``, default 100 as in the ``ultralytics`` package): the rule, the trainer's hook,
the returned results, the closing line and resume."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.engine.config import resolve_config
from yolotr.engine.early_stop import EarlyStopping
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError


def test_patience_is_a_setting_with_the_package_default():
    assert resolve_config()["patience"] == 100
    assert resolve_config({"patience": 0})["patience"] == 0
    for bad in (-1, 2.5, "many"):
        with pytest.raises(ConfigError, match="patience"):
            resolve_config({"patience": bad})


def test_the_rule_counts_epochs_since_the_best():
    stopper = EarlyStopping(patience=2)
    answers = [stopper.update(e, f) for e, f in enumerate([0.1, 0.3, None, 0.2, 0.3, 0.9], start=1)]
    assert answers == [False, False, False, True, True, False]  # best after epoch 2; 4 - 2 >= 2
    assert stopper.best_epoch == 6 and stopper.best_fitness == 0.9
    never = EarlyStopping(patience=0)
    assert not any(never.update(e, 0.5) for e in range(1, 50))
    unvalidated = EarlyStopping(patience=1)
    assert not any(unvalidated.update(e, None) for e in range(1, 10))


def test_training_stops_early_and_says_so(tiny_shapes, tmp_path, monkeypatch, caplog):
    fitness = iter([0.1, 0.3, 0.3, 0.5, 0.6])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"metrics/mAP50-95": 0.0, "fitness": next(fitness)})
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=5, patience=1, val=True, batch=8, nbs=8)
    with caplog.at_level(logging.INFO, logger="yolotr"):
        result = Trainer(cfg).train()
    assert result["stopped_early"] and result["stopped_epoch"] == 3 and result["best_epoch"] == 2  # 0.3 is no gain
    with (tmp_path / "run" / "results.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]
    assert "stopping early: no better fitness for 1 epoch(s) (patience 1)" in caplog.text
    assert "3 epochs done in" in caplog.text and "stopped early after epoch 3 (patience 1; best epoch 2)" in caplog.text
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]
    assert state["early_stop"] == {"best_fitness": 0.3, "best_epoch": 2, "stopped_epoch": 3}
    assert state["cfg"]["patience"] == 1
