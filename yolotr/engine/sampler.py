"""A batch sampler that can start mid-epoch and splits each global batch across DDP ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(seed, epoch, index)`` items for :class:`~yolotr.data.dataset.DetectionDataset`.

    The epoch's order is a permutation seeded with ``seed + epoch``; global batch ``b`` holds items
    ``b * batch * world ... (b + 1) * batch * world`` of it and rank ``r`` takes its ``r``-th slice,
    so N processes see together exactly what one process with an N-times larger batch sees.
    ``set_epoch(epoch, start_batch)`` skips the batches a resumed run has already trained on.
    Under DDP a last, incomplete global batch is dropped, so every rank takes the same steps.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches in a full epoch (ignores ``start_batch``)."""
        global_batch = self.batch_size * self.world
        return self.n // global_batch if self.world > 1 else -(-self.n // global_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return self.batches(self.epoch, self.start_batch)

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[list[tuple[int, int, int]]]:
        """This rank's batches of ``epoch`` from ``start_batch`` on (what ``set_epoch(epoch, start_batch)``
        then ``iter()`` gives, without changing the sampler)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        global_batch = self.batch_size * self.world
        for b in range(start_batch, len(self)):
            chunk = order[b * global_batch : (b + 1) * global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            yield [(self.seed, epoch, i) for i in mine]


class ConsecutiveEpochs(Sampler[list[tuple[int, int, int]]]):
    """The batches of a :class:`ResumableBatchSampler`'s epochs one after another: from its ``(epoch, start_batch)``
    when ``iter()`` is called, then each next epoch from its first batch, up to the epoch before ``end`` (read as it
    reaches each epoch, so a run whose epochs change on the way can say so; None: without end).

    What the trainer's loader draws from, so that its workers go on into the next epoch while the last batches
    of one train, its validation runs and its checkpoint is written, as the ``ultralytics`` package's
    ``InfiniteDataLoader`` does; the first batch of an epoch no longer waits for the workers to start on it.
    The batches are those of the epochs sampled one at a time (an item's augmentation is seeded by its
    ``(seed, epoch, index)``), so whoever reads it takes exactly ``len()`` batches an epoch (the first: ``len()``
    less its start batch). ``len()``: batches in one epoch.
    """

    def __init__(self, epochs: ResumableBatchSampler, end: int | None = None):
        self.epochs, self.end = epochs, end

    def __len__(self) -> int:
        return len(self.epochs)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, start = self.epochs.epoch, self.epochs.start_batch
        while self.end is None or epoch < self.end:  # no batch of an epoch the run will not train
            yield from self.epochs.batches(epoch, start)
            epoch, start = epoch + 1, 0


def train_loader(
    dataset,
    sampler: ResumableBatchSampler,
    workers: int,
    pin_memory: bool,
    seed: int,
    end: int | None = None,
    yielding: bool = False,
) -> DataLoader:
    """The training ``DataLoader`` over ``sampler``'s batches, epoch after epoch up to the one before ``end``
    (:class:`ConsecutiveEpochs`: one ``iter()`` serves the whole run, from the sampler's epoch when it is called),
    with :func:`~yolotr.data.dataset.collate`.

    Workers stay alive between epochs (``persistent_workers``), each with its own copy of ``dataset``: a
    change to the dataset (``close_mosaic`` turning mosaic off) reaches them only through a new loader. The
    loader's generator is its own, not the global RNG, so a resumed run draws the same worker seeds. ``yielding``:
    the workers run at the lowest priority (:mod:`yolotr.engine.worker_priority`).
    """
    from yolotr.data.dataset import collate, seed_worker
    from yolotr.engine.worker_priority import yielding_worker_init

    return DataLoader(
        dataset,
        batch_sampler=ConsecutiveEpochs(sampler, end),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=yielding_worker_init if yielding else seed_worker,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
