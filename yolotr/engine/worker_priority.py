"""DataLoader workers that leave the CPU's cores to the training threads, and the watch that takes that back.

Training on the CPU, ``torch`` splits each operation across its threads and waits for the slowest of them. A
DataLoader worker that wakes on a core those threads use preempts one of them, and the others then wait for it:
the model loses about twice the worker's CPU time (yolov8n at 128 px on 2 cores with 2 threads and 2 workers:
forward and loss 82 ms a step against 61 ms with ``workers: 0``; an epoch 7 % slower than loading in the
training process). The ``ultralytics`` package sets ``workers: 0`` on a CPU for this reason, and loses the overlap
of loading and training. Here the workers keep running, at the lowest priority (``nice`` 19): they take the
moments the training threads leave idle, and when the training waits for a batch its cores go to them.

Workers at that priority get almost no time where other busy processes share the cores. :class:`DataWait` notices
(the training waiting for batches more than half of the time) and the trainer then gives its workers back
the normal priority for the rest of the run.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

WORKER_NICE = 19  # the lowest priority; nice 5 and 10 kept most of the slow-down on 2 cores


def workers_share_cores(workers: int, device: torch.device) -> bool:
    """Whether ``workers`` DataLoader workers would compete with the training threads for the cores: training on
    the CPU with more workers and ``torch`` threads together than this process may run on (on a platform that
    has ``os.nice``)."""
    if device.type != "cpu" or workers <= 0 or not hasattr(os, "nice"):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return torch.get_num_threads() + workers > cores


def yielding_worker_init(worker_id: int) -> None:
    """:func:`~yolotr.data.dataset.seed_worker`, then the worker's priority lowered to ``nice`` :data:`WORKER_NICE`."""
    from yolotr.data.dataset import seed_worker

    seed_worker(worker_id)
    with contextlib.suppress(OSError):  # a platform or sandbox that refuses: the normal priority
        os.nice(WORKER_NICE - os.nice(0))


class DataWait:
    """The seconds the training waited for batches in a window of time, against the time gone by.

    ``with wait: batch = next(batches)`` times one wait; :meth:`starved` says whether the waits took more than
    ``fraction`` of the window so far, judged once the window is ``after_s`` seconds old (the workers' start-up
    is then a small part of it). A window that reaches ``window_s`` seconds unstarved starts again, so that
    workers starved late in a long run are noticed within about ``window_s`` seconds, and the short epochs of a
    small run are judged together.
    """

    def __init__(self, fraction: float = 0.5, after_s: float = 10.0, window_s: float = 30.0, clock=time.perf_counter):
        self.fraction, self.after_s, self.window_s, self.clock = fraction, after_s, window_s, clock
        self.start = clock()
        self.waited = 0.0
        self._since = self.start

    def __enter__(self) -> DataWait:
        self._since = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        self.waited += self.clock() - self._since

    def share(self) -> float:
        """The fraction of the window spent waiting."""
        return self.waited / max(self.clock() - self.start, 1e-9)

    def starved(self) -> bool:
        now = self.clock()
        elapsed = now - self.start
        if elapsed < self.after_s:
            return False
        if self.waited > self.fraction * elapsed:
            return True
        if elapsed >= self.window_s:
            self.start, self.waited = now, 0.0
        return False
