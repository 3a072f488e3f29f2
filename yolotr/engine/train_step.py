"""The optimizer step of :class:`~yolotr.engine.trainer.Trainer`: accumulation, unscale, clip, the step or its
skip, and what the NaN guard does with a skipped step (locate the fault, count it, roll back).

A mixin: its methods read the trainer's state (``model``, ``optimizer``, ``gate``, ``guard``, ``ema``, ``step``,
the accumulation window of batches ...), which :meth:`Trainer._setup` makes.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.distributed as dist
from torch import nn

from yolotr.engine.ema import unwrap
from yolotr.engine.multi_scale import resize_batch, step_size
from yolotr.engine.optim import apply_schedule

LOGGER = logging.getLogger("yolotr")


class OptimizerStepping:
    """The step half of the trainer (see the module's docstring)."""

    def _accumulate_at(self, step: int) -> int:
        """Batches per optimizer step at ``step``: rising from 1 to ``nbs / global batch`` over the warmup
        (as YOLOv5 does, so the early, fast-changing steps are not averaged away), then fixed."""
        if not self.warmup_iters or step > self.warmup_iters:
            return self.accumulate
        full = self.cfg["nbs"] / (self.cfg["batch"] * self.world)
        return max(1, round(1 + (full - 1) * step / self.warmup_iters))

    def _optimizer_step(self) -> bool:
        """Unscale, clip and step; whether the step ran. The gate's ``step`` is the one host sync of a step
        that runs; a skipped step is an fp16 overflow (counted, silent) or a fault (the guard's)."""
        self.gate.unscale_(self.optimizer)
        norm = None
        if self.cfg["grad_clip"]:
            params = [p for p in self.model.parameters() if p.grad is not None]
            if params:  # a non-finite norm spoils the clipped gradients, but then the gate skips the step
                norm = nn.utils.get_total_norm([p.grad for p in params], foreach=True)
                nn.utils.clip_grads_with_norm_(params, self.cfg["grad_clip"], norm, foreach=True)
        ran = self.gate.step(self.optimizer, norm)
        self.step_attempts += 1
        window, finite = self._window, self._window_finite
        self._window, self._window_finite = [], []
        self.last_opt_step = self.step
        if ran:
            self.gate.update()
            self.run_callbacks("on_before_zero_grad")
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            self.run_callbacks("optimizer_step")
            return True
        flags = torch.stack(finite).float()
        if self.world > 1:  # every rank skipped (the gradients are all-reduced); agree on why
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        flags = flags.tolist()
        loss_finite = all(flags)
        overflow = self.gate.is_overflow(loss_finite)
        self.gate.update(overflow)
        if overflow:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        steps = range(self.step - len(window) + 1, self.step + 1)  # the steps of the window's batches
        picked = [flags.index(0.0)] if not loss_finite else range(len(window))  # a gradient: any batch, in turn
        reason = "non-finite loss" if not loss_finite else "non-finite gradient"
        self._report_fault([(steps[i], window[i]) for i in picked], reason)
        return False

    def _loss_of(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        """The loss of a loader's uint8 batch ``(B, 3, H, W)`` at ``step``'s size: the guard's re-run of a step."""
        return self._forward_loss(self._model_input(images, step), targets)[0]

    def _model_input(self, images: torch.Tensor, step: int) -> torch.Tensor:
        """The loader's uint8 batch ``(B, 3, H, W)`` as the model's float32 input on the device, in ``[0, 1]`` and at
        ``step``'s ``multi_scale`` size (:mod:`yolotr.engine.multi_scale`; the loader's size without it)."""
        images = images.to(self.device, torch.float32, non_blocking=True, memory_format=self.memory_format)
        images = images.div_(255)  # in place: no second copy
        fraction = self.cfg["multi_scale"]
        if not fraction:
            return images
        size = step_size(self.cfg["seed"], step, self.cfg["imgsz"], fraction, self.stride)
        if len(images) == 1:  # one image at one stride: a single value per channel, which BatchNorm cannot train on
            size = max(size, 2 * self.stride)
        return resize_batch(images, size, self.stride).contiguous(memory_format=self.memory_format)

    def _report_fault(self, batches: list[tuple[int, tuple]], reason: str) -> None:
        """A step skipped for a fault: the guard names the module (re-running ``(step, (images, targets))``
        batches in turn until one shows it), counts it, and may roll back."""
        LOGGER.warning("step %d: %s; the step is skipped", self.step, reason)
        runs = [(step, functools.partial(self._loss_of, *batch, step)) for step, batch in batches]
        self.guard.locate(unwrap(self.train_model), *runs[0], runs[1:])
        self.guard.restore_buffers(self.model)  # the NaN the step's forwards put into BatchNorm statistics
        self.optimizer.zero_grad(set_to_none=True)
        if self.guard.record_bad_step(self.step_attempts):  # the window counts optimizer steps, run or skipped
            self.guard.roll_back(model=self.model, optimizer=self.optimizer, ema=self.ema, gate=self.gate)
            # the snapshot's optimizer state held the learning rates of its own step: this step's, lowered now
            apply_schedule(
                self.optimizer, self.cfg, self.step // self.nb, self.step, self.warmup_iters, self.guard.lr_multiplier
            )

    def _good_snapshot(self) -> None:
        self.guard.take_snapshot(model=self.model, optimizer=self.optimizer, ema=self.ema, gate=self.gate)
