"""Nothing the user made is lost at a resume: a run interrupted between its end-of-epoch writes keeps its best.pt
and results rows; a resume never writes into a folder that is not the checkpoint's run; a finished run (by its
epochs or by early stopping) says so; a resume may move the dataset, not change its classes."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from tests.engine.conftest import tiny_train_cfg
from yolotr.engine import train_checkpoint as checkpoint_module
from yolotr.engine.results_csv import append_results_row, trim_results_rows
from yolotr.engine.resume_state import resume_state
from yolotr.engine.trainer import Trainer
from yolotr.errors import CheckpointError, ConfigError


def _epochs(run) -> list[int]:
    with (run / "results.csv").open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_stop_between_the_end_of_epoch_writes_loses_nothing(tiny_shapes, tmp_path, monkeypatch):
    """Stopped while best.pt of epoch 2 was written (its last.pt not yet): the resume does epoch 2 again, so
    best.pt is epoch 2's and results.csv has each epoch once (before, last.pt came first: best.pt stayed epoch 1's
    and the row of epoch 2 was never written)."""
    fitness = iter([0.1, 0.6, 0.3, 0.1, 0.6, 0.3])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"fitness": next(fitness)})
    real_save, calls = checkpoint_module.save_checkpoint, []

    def failing_save(checkpoint, path):
        calls.append(path.name)
        if path.name == "best.pt" and calls.count("best.pt") == 2:  # epoch 2 is the second best
            raise KeyboardInterrupt  # the process ends here
        return real_save(checkpoint, path)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", failing_save)
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, val=True)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).train()
    run = tmp_path / "run"
    assert _epochs(run) == [1, 2]  # the row came before the checkpoints
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["train_state"]["epoch"] == 1
    fitness = iter([0.6, 0.3])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"fitness": next(fitness)})
    Trainer.resume(run).train()
    assert _epochs(run) == [1, 2, 3]
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert best["epoch"] == 2 and best["fitness"] == pytest.approx(0.6)


def test_a_checkpoint_outside_a_weights_folder_is_not_resumed(tiny_shapes, tmp_path):
    """Its grandparent would have been taken for the run: another folder's args.yaml and results.csv were
    overwritten."""
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1)).train()
    loose = tmp_path / "Downloads" / "last.pt"
    loose.parent.mkdir()
    loose.write_bytes((tmp_path / "run" / "weights" / "last.pt").read_bytes())
    with pytest.raises(CheckpointError, match="not in a weights folder"):
        resume_state(loose, epochs=3)
    assert not (tmp_path / "args.yaml").exists()


def test_an_early_stopped_run_is_finished_unless_patience_grows(tiny_shapes, tmp_path, monkeypatch):
    fitness = iter([0.5, 0.4, 0.3])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"fitness": next(fitness)})
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=5, patience=1, val=True)).train()
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="early stopping ended the run after epoch 2 .patience 1"):
        resume_state(run)
    cfg, state = resume_state(run, patience=3)
    assert cfg["patience"] == 3 and state["early_stop"]["stopped_epoch"] is None


def test_fewer_epochs_than_a_mid_epoch_checkpoint_is_refused(tiny_shapes, tmp_path):
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, save_period_steps=1))

    def stop(t):
        if t.step == 6:  # epoch 2, batch 2 (4 batches an epoch)
            raise KeyboardInterrupt

    trainer.add_callback("on_batch_start", stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    with pytest.raises(CheckpointError, match="is in epoch 2; nothing to resume.*at least 2"):
        resume_state(tmp_path / "run", epochs=1)
    assert resume_state(tmp_path / "run", time_limit=1.0)[1]["epochs_fitted"] is False  # a new limit is fitted


def test_a_resume_with_the_classes_in_another_order_is_refused(tiny_shapes, tmp_path):
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1)).train()
    data = yaml.safe_load(open(tiny_shapes))
    names = data["names"]
    data["names"] = list(reversed(names if isinstance(names, list) else list(names.values())))
    data["path"] = str((tiny_shapes.parent / data.get("path", ".")).resolve())
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="may move the dataset, not change its classes"):
        Trainer.resume(tmp_path / "run", epochs=2, data=str(swapped)).train()


def test_results_rows_after_the_checkpoint_are_dropped_and_an_edited_file_gets_its_newline(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("epoch,train/box_loss\n1,0.5\n2,0.4\n3,0.3")  # edited: no newline at the end
    trim_results_rows(tmp_path, 2)
    assert path.read_text() == "epoch,train/box_loss\n1,0.5\n2,0.4\n"
    path.write_text("epoch,train/box_loss,time\n1,0.5,1.0")
    append_results_row(tmp_path, 1, ["box"], [0.4], {}, [0.01], 2.0, {})
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["epoch", "1", "2"]


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from yolotr.models import weights

    path = weights.save_checkpoint({"step": 1}, tmp_path / "last.pt")

    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(weights.torch, "save", full)
    with pytest.raises(CheckpointError, match=r"last\.pt: could not be written .*MB free on its disk.*unchanged"):
        weights.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_relative_data_path_is_kept_absolute_for_a_resume_from_elsewhere(tiny_shapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_shapes.parent)
    Trainer(tiny_train_cfg(tiny_shapes.name, tmp_path, epochs=1)).train()
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]
    assert state["cfg"]["data"] == str(tiny_shapes.resolve())
    monkeypatch.chdir(tmp_path)
    cfg, _ = resume_state(tmp_path / "run", epochs=2)
    assert cfg["data"] == str(tiny_shapes.resolve())


def test_a_resume_under_another_process_count_is_refused(tiny_shapes, tmp_path, monkeypatch):
    """A batch index is another place in the epoch under another process count: images trained twice, or (one
    process to two) a run that never finished and exited 0."""
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1)).train()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(CheckpointError, match=r"trained with 1 process\(es\), this resume has 2"):
        resume_state(tmp_path / "run", epochs=2)


def test_an_early_stopped_run_counts_as_finished_for_compare(tiny_shapes, tmp_path, monkeypatch):
    """``yolotr compare`` would resume it, which the resume now refuses: the run would be reported failed."""
    from yolotr.engine.compare_runs import run_state

    fitness = iter([0.5, 0.4])
    monkeypatch.setattr(Trainer, "validate", lambda self: {"fitness": next(fitness)})
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=5, patience=1, val=True)).train()
    assert run_state(tmp_path / "run").kind == "finished"


def test_last_pt_named_from_inside_its_weights_folder_resumes(tiny_shapes, tmp_path, monkeypatch):
    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1)).train()
    monkeypatch.chdir(tmp_path / "run" / "weights")
    _, state = resume_state("last.pt", epochs=2)
    assert state["run_dir"] == str(tmp_path / "run")
