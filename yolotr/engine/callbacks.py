"""Training callbacks by the ``ultralytics`` package's event names, and the trainer attributes its callbacks read.

A mixin of :class:`~yolotr.engine.trainer.Trainer`: ``add_callback(event, fn)`` and ``run_callbacks(event)``
(``fn(trainer)`` at each of :data:`TRAINING_EVENTS`), and read-only views under the package's names
(``epoch``, ``epochs``, ``tloss``, ``loss_items``, ``lr``, ``metrics``, ``fitness``, ``wdir``, ``best``,
``last``, ``args``) with ``stop``, which a callback sets to end the run after the current epoch, as in the
package. Differs from the package's: an event it declares but never calls (``optimizer_step``,
``on_before_zero_grad``) is called here, after each optimizer step that ran and before its ``zero_grad``;
``on_params_update``, never called anywhere, and the events of its validator, predictor and exporter are
refused with a reason rather than accepted and never called.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

from yolotr.errors import ConfigError, did_you_mean

# the package's trainer events, in the order of a run; on the main process only where marked
TRAINING_EVENTS = (
    "on_pretrain_routine_start",  # before the data and model are set up
    "on_pretrain_routine_end",  # set up: model, data, optimizer, EMA
    "on_train_start",  # once, before the first epoch's batches (a resumed run's too)
    "on_train_epoch_start",
    "on_train_batch_start",
    "optimizer_step",  # after an optimizer step that ran (and its EMA update)
    "on_before_zero_grad",  # after optimizer.step(), before zero_grad, of a step that ran
    "on_train_batch_end",
    "on_train_epoch_end",  # the epoch's batches done, before its validation
    "on_model_save",  # main process: after each checkpoint write (last.pt written)
    "on_fit_epoch_end",  # after validation, the results row and the checkpoints
    "on_train_end",  # main process: the run is over (plots drawn)
    "teardown",  # whatever ended the run, an error too
)
# yolotr's earlier names
ALIASES = {"on_batch_start": "on_train_batch_start", "on_epoch_end": "on_fit_epoch_end"}

_OTHER_PARTS = {
    "validator": ("on_val_start", "on_val_batch_start", "on_val_batch_end", "on_val_end"),
    "predictor": (
        "on_predict_start",
        "on_predict_batch_start",
        "on_predict_postprocess_end",
        "on_predict_batch_end",
        "on_predict_end",
    ),
    "exporter": ("on_export_start", "on_export_end"),
}


def training_event(event: str) -> str:
    """The package's name of a training ``event`` (yolotr's ``on_batch_start`` / ``on_epoch_end`` too).

    Raises:
        ConfigError: an event that is not a training event, saying why (the package's other parts, an event it
            never calls) or with the nearest names.
    """
    if event in TRAINING_EVENTS:
        return event
    if event in ALIASES:
        return ALIASES[event]
    known = ", ".join(TRAINING_EVENTS)
    for part, events in _OTHER_PARTS.items():
        if event in events:
            raise ConfigError(
                f"callback event {event!r} is one of the ultralytics package's {part}; yolotr calls callbacks "
                f"in training only: {known}"
            )
    if event == "on_params_update":
        raise ConfigError(
            "callback event 'on_params_update': the ultralytics package declares it but never calls it; "
            "'optimizer_step' is called after each optimizer step"
        )
    raise ConfigError(f"unknown training event {event!r}{did_you_mean(event, [*TRAINING_EVENTS, *ALIASES])}")


class TrainerCallbacks:
    """The callback half of the trainer (see the module's docstring); its ``callbacks`` are made on first use."""

    stop_requested = False

    @property
    def callbacks(self) -> dict[str, list]:
        if "_callbacks" not in self.__dict__:
            self._callbacks = {event: [] for event in TRAINING_EVENTS}
        return self._callbacks

    def add_callback(self, event: str, fn) -> None:
        """Call ``fn(trainer)`` at ``event`` (:data:`TRAINING_EVENTS`, or ``on_batch_start`` / ``on_epoch_end``).

        Raises:
            ConfigError: an event yolotr does not call (:func:`training_event`), or ``fn`` not callable.
        """
        name = training_event(event)
        if not callable(fn):
            raise ConfigError(f"add_callback({event!r}, ...): {fn!r} is not callable")
        self.callbacks[name].append(fn)

    def run_callbacks(self, event: str) -> None:
        """Call every callback of ``event`` with this trainer, in the order they were added."""
        for fn in self.callbacks[event]:
            fn(self)

    @property
    def stop(self) -> bool:
        """Set by a callback to end the run after the current epoch (validated and saved), as in the package."""
        return self.stop_requested or bool(getattr(self, "stopping", False))

    @stop.setter
    def stop(self, value: bool) -> None:
        self.stop_requested = bool(value)

    def agreed_stop(self) -> bool:
        """``stop`` as the first process has it, on every process under DDP (a callback may set it on one only:
        a process that went on alone would wait for the others forever)."""
        stop = self.stop
        if self.world > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        return stop

    @property
    def epochs(self) -> int:
        return int(self.cfg["epochs"])

    @property
    def args(self) -> SimpleNamespace:
        """The run's settings as attributes (a copy: changing it changes nothing)."""
        return SimpleNamespace(**self.cfg)

    @property
    def wdir(self) -> Path:
        return self.weights_dir

    @property
    def best(self) -> Path:
        return self.weights_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.weights_dir / "last.pt"

    @property
    def lr(self) -> dict[str, float]:
        """``{"lr/pg0": ..., ...}``: each parameter group's learning rate now."""
        return {f"lr/pg{i}": group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    @property
    def tloss(self):
        """``(n,)`` the epoch's mean loss items so far (a host read), ``None`` before the first batch."""
        progress = getattr(self, "progress", None)
        return None if progress is None else progress.mean()

    @property
    def loss_items(self):
        """``(n,)`` the last batch's loss items, on the training device (``loss_fn.names`` in order)."""
        progress = getattr(self, "progress", None)
        return None if progress is None else progress.last

    @property
    def metrics(self) -> dict[str, float]:
        """The last validation under the package's names (``metrics/mAP50-95(B)``, ..., ``fitness``) and its
        ``val/<item>_loss``; ``{}`` before the first."""
        result = getattr(self, "last_validation", None)
        if result is None:
            return {}
        losses = {k: v for k, v in result.to_dict().items() if k.startswith("val/")}
        return {**result.results_dict, **losses}

    @property
    def fitness(self) -> float | None:
        result = getattr(self, "last_validation", None)
        return None if result is None else result.fitness
