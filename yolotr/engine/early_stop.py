"""Early stopping: end training when the fitness has not improved for ``patience`` epochs.

As the ``ultralytics`` package counts it (``patience: 100`` by default, ``0`` turns it off): after each
validated epoch the stopper compares the fitness with the best so far; when ``patience`` epochs have
passed since the best one, training stops after the current epoch; while the best fitness is still 0 (nothing
found yet, common in the first epochs of a small or hard set) no epoch counts as a miss. Epochs without validation
(``val_period``, ``val: false``) neither improve nor count as a validated miss: the count is in epochs
since the best, so a ``val_period`` of 5 with ``patience: 10`` stops after two validations without a gain.
Under DDP the first process decides and the others follow (one broadcast).
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

LOGGER = logging.getLogger("yolotr")


class EarlyStopping:
    """Tracks the best fitness and says when to stop.

    Args:
        patience: epochs without a better fitness before stopping; ``0`` never stops.
    """

    def __init__(self, patience: int = 100):
        self.patience = int(patience)
        self.best_fitness: float | None = None
        self.best_epoch = 0  # epochs completed when the best fitness was measured (1 = after the first)
        self.stopped_epoch: int | None = None  # epochs completed when training was stopped early

    def update(self, epochs_done: int, fitness: float | None) -> bool:
        """Record the fitness measured after ``epochs_done`` epochs (``None``: not validated); whether to stop."""
        # a best of 0 is the early stage in which nothing is detected yet: it does not count, as in the package
        if fitness is not None and (not self.best_fitness or fitness > self.best_fitness):
            self.best_fitness, self.best_epoch = float(fitness), epochs_done
        if not self.patience or self.best_fitness is None:
            return False
        stop = epochs_done - self.best_epoch >= self.patience
        if stop:
            self.stopped_epoch = epochs_done
        return stop

    def step(self, epochs_done: int, fitness: float | None, main: bool = True, device=None) -> bool:
        """:meth:`update` on the first process, its answer shared with every process under DDP."""
        stop = self.update(epochs_done, fitness) if main else False
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
            if stop and self.stopped_epoch is None:
                self.stopped_epoch = epochs_done
        if stop and main:
            LOGGER.info(
                "stopping early: no better fitness for %d epoch(s) (patience %d); the best, %.5f after epoch %d, "
                "is weights/best.pt",
                epochs_done - self.best_epoch, self.patience, self.best_fitness, self.best_epoch,
            )  # fmt: skip
        return stop

    def summary(self) -> str:
        """``", stopped early at epoch N (best: epoch M)"`` for the closing line, ``""`` when it did not stop."""
        if self.stopped_epoch is None:
            return ""
        best = f"best epoch {self.best_epoch}"
        return f", stopped early after epoch {self.stopped_epoch} (patience {self.patience}; {best})"

    def state_dict(self) -> dict:
        """The best so far and, once it stopped the run, the epochs done then (a resume is refused after it)."""
        return {"best_fitness": self.best_fitness, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore what :meth:`state_dict` saved (a resumed run keeps counting from its best epoch; one resumed
        after it stopped early, with a larger patience, goes on)."""
        if state:
            self.best_fitness, self.best_epoch = state.get("best_fitness"), int(state.get("best_epoch", 0))

    def results(self) -> dict:
        """What ``Trainer.train()`` returns about it: ``best_epoch``, ``stopped_early`` and ``stopped_epoch``."""
        return {
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_epoch is not None,
            "stopped_epoch": self.stopped_epoch,
        }
