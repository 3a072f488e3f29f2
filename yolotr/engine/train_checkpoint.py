"""The checkpoints of :class:`~yolotr.engine.trainer.Trainer`: what ``last.pt`` holds of a run (model, optimizer,
scaler, EMA, RNG, schedule position, early stopping, the guard), writing it with ``best.pt`` and ``epoch<N>.pt``,
and restoring it on resume.

A mixin: its methods read the trainer's state, which :meth:`Trainer._setup` makes.
"""

from __future__ import annotations

import logging
import time

import torch

from yolotr.engine.results_csv import trim_results_rows
from yolotr.files import remove_partial_writes
from yolotr.models.weights import model_checkpoint, save_checkpoint

LOGGER = logging.getLogger("yolotr")


class TrainCheckpoints:
    """The checkpoint half of the trainer (see the module's docstring)."""

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gate.load_state_dict(state.get("gate", {}))
        self.gate.overflows = int(state.get("gate", {}).get("overflows", 0))
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.start_epoch, self.start_batch = int(state["epoch"]), int(state["batch"])
        self.last_opt_step = int(state["last_opt_step"])
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.step_attempts = int(state.get("step_attempts", self.optimizer_steps))
        self.resumed_overflows = state.get("epoch_overflows_start")
        if self.main:  # rows of epochs after this checkpoint (written before a kill stopped its last.pt) go
            trim_results_rows(self.save_dir, int(state["epoch"]))
            remove_partial_writes(self.weights_dir)  # checkpoints a kill left half written
        self.best_fitness = float(state["best_fitness"])
        self.stopper.load_state_dict(state.get("early_stop"))
        self.guard.load_state_dict(state.get("guard") or {"lr_multiplier": state.get("lr_multiplier", 1.0)})
        self.epochs_fitted = bool(state.get("epochs_fitted", False))
        self.elapsed_before, self.resumed_loss = float(state.get("elapsed", 0.0)), state.get("epoch_loss")
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if self.start_batch >= self.nb:
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        LOGGER.info("resuming %s at epoch %d, batch %d", self.save_dir, self.start_epoch, self.start_batch)

    def _checkpoint(self, epoch: int, batch: int, fitness: float | None = None) -> dict:
        exported = self.ema.ema if self.ema is not None else self.model
        train_state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "gate": self.gate.state_dict(),
            "ema": None,  # below: the EMA's tensors are the exported weights
            "epoch": epoch,
            "batch": batch,
            "last_opt_step": self.last_opt_step,
            "optimizer_steps": self.optimizer_steps,
            "step_attempts": self.step_attempts,
            "epoch_overflows_start": self.overflows_before,  # a resumed epoch's results row counts them all
            "world": self.world,  # a batch index means another place in the epoch under another process count
            "best_fitness": self.best_fitness,
            "early_stop": self.stopper.state_dict(),
            "guard": self.guard.state_dict(),
            "epochs_fitted": self.epochs_fitted,
            "elapsed": self.elapsed_before + time.time() - self.t0,  # results.csv's time goes on after a resume
            "epoch_loss": self.progress.state_dict() if batch else None,  # a resumed epoch's mean covers it all
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "cfg": self.cfg,
        }
        checkpoint = model_checkpoint(exported, epoch=epoch, fitness=fitness, train_state=train_state)
        if self.ema is not None:  # the exported copy of the EMA, held once: last.pt is a quarter smaller
            train_state["ema"] = self.ema.state_dict(weights=checkpoint["state_dict"])
        return checkpoint

    def _save(self, epoch: int, batch: int, fitness: float | None = None, best: bool = False) -> None:
        """Write the checkpoints of ``(epoch, batch)``: ``epoch<N>.pt`` and ``best.pt`` first, ``last.pt`` last.
        ``last.pt`` says what is done: a kill before it leaves the step to be done again on resume (the others
        rewritten then), where one after it had lost ``best.pt`` and the epoch's results row for good."""
        if not self.main:
            return
        checkpoint = self._checkpoint(epoch, batch, fitness)
        period = self.cfg["save_period"]  # YOLOv5's and the package's epoch<N>.pt, N from 0: a copy of last.pt
        if period and batch == 0 and (epoch - 1) % period == 0:
            save_checkpoint(checkpoint, self.weights_dir / f"epoch{epoch - 1}.pt")
        if best:  # the weights and the run's settings, not its optimizer: resuming from best.pt would rewind the run
            weights = {k: v for k, v in checkpoint.items() if k != "train_state"}
            save_checkpoint({**weights, "train_args": self.cfg}, self.weights_dir / "best.pt")
        save_checkpoint(checkpoint, self.weights_dir / "last.pt")
        self.run_callbacks("on_model_save")
