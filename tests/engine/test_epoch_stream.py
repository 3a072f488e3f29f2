"""The trainer's batches come from one stream of consecutive epochs (ConsecutiveEpochs), so that the loader's
workers prepare the next epoch while one ends; each epoch still trains on exactly its own batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.data.dataset import collate
from yolotr.engine.sampler import ConsecutiveEpochs, ResumableBatchSampler
from yolotr.engine.trainer import Trainer


def epoch_batches(n, batch, epoch, start=0, rank=0, world=1, seed=5):
    sampler = ResumableBatchSampler(n, batch, seed=seed, rank=rank, world=world)
    sampler.set_epoch(epoch, start)
    return list(sampler)


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_the_stream_goes_from_the_start_batch_into_the_following_epochs(rank, world):
    sampler = ResumableBatchSampler(22, 4, seed=5, rank=rank, world=world)
    sampler.set_epoch(2, 1)
    stream = ConsecutiveEpochs(sampler)
    assert len(stream) == len(sampler)
    expected = epoch_batches(22, 4, 2, 1, rank, world) + epoch_batches(22, 4, 3, 0, rank, world)
    expected += epoch_batches(22, 4, 4, 0, rank, world)
    assert list(itertools.islice(iter(stream), len(expected))) == expected
    assert [b[0][1] for b in expected] == [2] * (len(sampler) - 1) + [3] * len(sampler) + [4] * len(sampler)
    assert sampler.epoch == 2 and sampler.start_batch == 1  # reading the stream leaves the sampler as it was
    stream.end = 4  # up to the epoch before end
    assert list(stream) == expected[: len(sampler) - 1 + len(sampler)]


def test_the_workers_start_on_the_next_epoch_before_an_epoch_ends_and_each_epoch_trains_its_own(tiny_shapes, tmp_path):
    """With a worker, the next epoch's first batch is drawn before the epoch's end (validation and checkpoint)
    begins: before, the loader started on it only when the next epoch asked for it. The targets each step trained
    on are those of its own epoch's batch, in order."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, workers=1, batch=4, nbs=4, mosaic=1.0)
    trainer = Trainer(cfg)
    drawn, drawn_at_epoch_end, trained = [], [], []
    batches = ResumableBatchSampler.batches

    def logged_batches(self, epoch, start_batch=0):
        for batch in batches(self, epoch, start_batch):
            drawn.append(epoch)
            yield batch

    end_epoch, forward_loss = trainer._end_epoch, trainer._forward_loss

    def record_end(epoch, mean_loss):
        drawn_at_epoch_end.append(list(drawn))
        return end_epoch(epoch, mean_loss)

    def record_step(images, targets):
        trained.append(targets.clone())
        return forward_loss(images, targets)

    trainer._end_epoch, trainer._forward_loss = record_end, record_step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ResumableBatchSampler, "batches", logged_batches)
        trainer.train()
    nb = trainer.nb
    assert nb == 4
    for epoch, seen in enumerate(drawn_at_epoch_end[:-1]):
        assert seen.count(epoch) == nb and epoch + 1 in seen, (epoch, seen)
    assert 3 not in drawn  # nothing made for an epoch the run does not train
    expected = [
        collate([trainer.train_set[item] for item in batch])[1]
        for epoch in range(3)
        for batch in epoch_batches(len(trainer.train_set), 4, epoch, seed=trainer.sampler.seed)
    ]
    assert len(trained) == len(expected) == 3 * nb
    assert all(torch.equal(a, b) for a, b in zip(trained, expected))


def test_epochs_a_time_limit_adds_get_every_batch(tiny_shapes, tmp_path):
    """``time_limit`` fits the epochs after the first (here more than the one given): the stream, bounded by the
    given epochs, would have ended and the added epochs trained on no batch."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, time_limit=0.04, workers=1)
    trainer = Trainer(cfg)
    steps = []
    trainer.add_callback("on_batch_start", lambda t: steps.append(t.step))
    trainer.train()
    fitted = trainer.cfg["epochs"]
    assert fitted >= 2
    assert steps == list(range(fitted * trainer.nb))
