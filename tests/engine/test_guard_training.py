"""The NaN guard inside training: a roll back after a resume from a step checkpoint goes as in the run that was not
stopped, the learning rate logged after a roll back is the one the run goes on with, an epoch of skipped steps
logs no loss, and settings under which the guard could never roll back are refused."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.cli import main
from yolotr.engine.config import resolve_config
from yolotr.engine.optim import lr_factor
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError


def _fault_at(steps: set[int], module: str = "model.1"):
    """An ``on_batch_start`` callback that makes ``module``'s output NaN at the given steps."""

    def inject(t):
        if not hasattr(t, "_fault"):
            hook = lambda m, i, out: out * math.nan if t.step in steps else out  # noqa: E731
            t._fault = t.model.get_submodule(module).register_forward_hook(hook)

    return inject


def _rows(run) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def test_a_roll_back_after_a_resume_from_a_step_checkpoint_goes_as_without_the_stop(tiny_shapes, tmp_path):
    """4 batches an epoch: a checkpoint after step 8 (epoch 3, batch 1), faults at steps 9-11 and a roll back at
    11. The resumed run rolled back to the checkpoint's weights, the run that went on to those of the epoch's start
    (0.047 apart); and after the roll back both logged a learning rate the run did not go on with."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, save_period_steps=1, mosaic=0.0, name="whole")
    whole = Trainer(cfg)
    whole.add_callback("on_batch_start", _fault_at({9, 10, 11}))
    whole.train()

    class Stop(Exception):
        pass

    def stop_at_9(t):
        if t.step == 9:
            raise Stop

    stopped = Trainer({**cfg, "name": "stopped"})
    stopped.add_callback("on_batch_start", stop_at_9)
    with pytest.raises(Stop):
        stopped.train()
    resumed = Trainer.resume(tmp_path / "stopped")
    resumed.add_callback("on_batch_start", _fault_at({9, 10, 11}))
    resumed.train()

    assert whole.guard.rollbacks == resumed.guard.rollbacks == 1
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.ema.ema.state_dict().values(), resumed.ema.ema.state_dict().values()):
        assert torch.equal(a, b)
    last = {run: _rows(tmp_path / run)[-1] for run in ("whole", "stopped")}
    full = resolve_config(cfg)
    expected = full["lr0"] * lr_factor(2, 3, full["lrf"], full["cos_lr"]) * 0.5
    for row in last.values():
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-4)  # epoch 3's, halved by the roll back
    assert whole.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_an_epoch_of_skipped_steps_logs_no_loss(tiny_shapes, tmp_path):
    """Every step of epoch 2 skipped: its row read 0.0 for each loss, a perfect epoch in results.csv."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=2, mosaic=0.0, nan_max_bad_steps=20, nan_window=20)
    trainer = Trainer(cfg)
    trainer.add_callback("on_batch_start", _fault_at({4, 5, 6, 7}))
    trainer.train()
    first, second = _rows(tmp_path / "run")
    losses = [k for k in first if k.startswith("train/")]
    assert all(float(first[k]) > 0 for k in losses)
    assert all(math.isnan(float(second[k])) for k in losses)


def test_a_count_of_bad_steps_the_window_cannot_hold_is_refused():
    """nan_window 2 with nan_max_bad_steps 3: the guard never rolled back, and a persistent fault skipped every
    step to the end of the run, which exited 0."""
    with pytest.raises(ConfigError, match=r"nan_max_bad_steps \(3\) must be at most nan_window \(2\)"):
        resolve_config({"nan_window": 2, "nan_max_bad_steps": 3})
    assert resolve_config({"nan_window": 3, "nan_max_bad_steps": 3})["nan_window"] == 3


def test_the_guard_window_counts_optimizer_steps_run_or_skipped(tiny_shapes, tmp_path):
    """Batch 4 with nbs 16 steps every 4 batches: the window's index was the batch count over 4, so during the
    warmup (a step every batch) four steps shared one index."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=2, nbs=16, mosaic=0.0, warmup_epochs=1.0)
    trainer = Trainer(cfg)
    trainer.train()
    saved = torch.load(trainer.weights_dir / "last.pt", weights_only=True)["train_state"]
    assert saved["step_attempts"] == trainer.step_attempts == saved["optimizer_steps"] > 8 // 4


def test_amp_true_is_a_cli_choice(capsys):
    """``--amp true`` was refused by argparse, though the setting and the docs take it."""
    assert main(["train", "--amp", "true", "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err
