"""On the CPU the trainer's DataLoader workers run at the lowest priority when they share the cores with the
training threads, and get the normal one back when they leave the training waiting (yolotr.engine.worker_priority)."""

from __future__ import annotations

import logging
import multiprocessing
import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import yolotr.engine.trainer as trainer_module
from tests.engine.conftest import tiny_train_cfg
from yolotr.data.dataset import InfiniteDataLoader, stop_workers
from yolotr.engine.trainer import Trainer
from yolotr.engine.worker_priority import WORKER_NICE, DataWait, workers_share_cores, yielding_worker_init

needs_nice = pytest.mark.skipif(not hasattr(os, "nice"), reason="os.nice: a Unix platform")


class Niceness(Dataset):
    """Each item: the niceness of the process that made it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return os.nice(0)


@needs_nice
def test_workers_share_cores_when_workers_and_threads_outnumber_the_cores(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert workers_share_cores(1, cpu) and workers_share_cores(2, cpu)
    assert not workers_share_cores(0, cpu)  # no workers: loading in the training process
    assert not workers_share_cores(2, cuda)  # the GPU trains: the workers must keep up with it
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert not workers_share_cores(4, cpu) and workers_share_cores(7, cpu)


@needs_nice
def test_a_yielding_worker_runs_at_the_lowest_priority_and_the_trainer_at_its_own():
    before = os.nice(0)
    loader = DataLoader(Niceness(), batch_size=None, num_workers=1, worker_init_fn=yielding_worker_init)
    assert list(loader) == [WORKER_NICE, WORKER_NICE]
    assert os.nice(0) == before
    plain = DataLoader(Niceness(), batch_size=None, num_workers=1)
    assert list(plain) == [before, before]


def test_data_wait_is_starved_past_half_the_window_once_judged_and_a_window_starts_again_unstarved():
    now = [0.0]
    wait = DataWait(fraction=0.5, after_s=10.0, window_s=30.0, clock=lambda: now[0])
    with wait:
        now[0] += 6.0  # the workers' start-up: most of the first 6 s, not yet judged
    assert not wait.starved()
    now[0] += 6.0  # a step of 6 s: waited 6 of 12 s, not more than half
    assert wait.waited == 6.0 and not wait.starved()
    with wait:
        now[0] += 1.0
    assert wait.starved() and wait.share() == 7 / 13
    fresh = DataWait(fraction=0.5, after_s=10.0, window_s=30.0, clock=lambda: now[0])
    now[0] += 40.0  # 40 s of training without a wait: the window starts again
    assert not fresh.starved() and fresh.waited == 0.0
    with fresh:
        now[0] += 12.0  # starved late in the run: noticed in the new window, not diluted by the 40 s before
    assert fresh.starved()


def batches_trained(cfg: dict, starve_at: int | None, monkeypatch) -> tuple[Trainer, list[torch.Tensor]]:
    """Train ``cfg`` with yielding workers (whatever this machine's cores); from the ``starve_at``-th batch drawn
    on, the wait reads as starved."""
    monkeypatch.setattr(trainer_module, "workers_share_cores", lambda workers, device: workers > 0)
    drawn = [0]

    class Starving(DataWait):
        def starved(self) -> bool:
            drawn[0] += 1
            return starve_at is not None and drawn[0] >= starve_at

    monkeypatch.setattr(trainer_module, "DataWait", Starving)
    trainer = Trainer(cfg)
    trained = []
    forward_loss = trainer._forward_loss

    def record(images, targets):
        trained.append(targets.clone())
        return forward_loss(images, targets)

    trainer._forward_loss = record
    trainer.train()
    return trainer, trained


@needs_nice
def test_starved_workers_are_made_again_at_the_normal_priority_and_every_step_keeps_its_batch(
    tiny_shapes, tmp_path, monkeypatch, caplog
):
    """The workers are replaced after the second batch of the first epoch; the run trains on the batches, and ends
    with the weights, of a run whose workers were never replaced."""
    cfg = dict(epochs=2, workers=1, batch=4, nbs=4, mosaic=1.0, deterministic=True)
    steady, steady_batches = batches_trained(tiny_train_cfg(tiny_shapes, tmp_path / "a", **cfg), None, monkeypatch)
    assert steady.yielding
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        starved, starved_batches = batches_trained(tiny_train_cfg(tiny_shapes, tmp_path / "b", **cfg), 2, monkeypatch)
    assert not starved.yielding
    warnings = [r.getMessage() for r in caplog.records if "low-priority workers" in r.getMessage()]
    assert len(warnings) == 1 and "from batch 3 on" in warnings[0], warnings
    assert len(starved_batches) == len(steady_batches) == 2 * steady.nb
    assert all(torch.equal(a, b) for a, b in zip(starved_batches, steady_batches))
    a, b = steady.model.state_dict(), starved.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_worker_outlives_its_loader(tiny_shapes, tmp_path):
    """close_mosaic's new loader stops the old one's workers at once, and the run's end stops the last ones: a
    worker left to the garbage collector stalled a later, unrelated collection by 5 s."""
    before = set(multiprocessing.active_children())
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=2, workers=2, close_mosaic=1, mosaic=1.0)
    trainer = Trainer(cfg)
    alive = []
    trainer.add_callback("on_batch_start", lambda t: alive.append(len(set(multiprocessing.active_children()) - before)))
    trainer.train()
    assert alive[0] == alive[-1] == 2  # the second epoch's loader: 2 workers, not 4
    assert set(multiprocessing.active_children()) == before


def test_stop_workers_ends_a_kept_loaders_workers_and_the_next_pass_starts_new_ones():
    """The validation loader a CUDA run keeps (workers forked once, kept across epochs) is stopped at the run's end."""
    before = set(multiprocessing.active_children())
    loader = InfiniteDataLoader(Niceness(), batch_size=1, num_workers=2)
    assert len(list(loader)) == 2
    assert len(set(multiprocessing.active_children()) - before) == 2
    stop_workers(loader)
    assert set(multiprocessing.active_children()) == before
    assert len(list(loader)) == 2  # new workers
    stop_workers(loader, None)
    assert set(multiprocessing.active_children()) == before
