"""Non-finite guard: which module produced the first NaN/inf, at which step; skip and recover.

When a loss or a gradient is not finite, :meth:`NonFiniteGuard.locate` re-runs the step's forward
(and backward) with hooks on every module and names the first module whose output (forward order)
or output gradient (backward order, i.e. where the non-finite gradient was born) is not finite,
with statistics of that module's inputs. The trainer skips the step; after ``max_bad`` bad steps
within ``window`` steps it restores the last good snapshot of weights, optimizer, EMA and scaler,
and lowers the learning rate by ``lr_factor``.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from yolotr.errors import TrainingError

LOGGER = logging.getLogger("yolotr")


@dataclass
class NonFiniteReport:
    """Where a non-finite value first appeared."""

    step: int
    module: str | None
    kind: str  # "output", "gradient", "loss" or "unknown"
    input_stats: str

    def __str__(self) -> str:
        if self.kind == "loss":  # every module's output was finite: the loss function made it
            where = "the loss function (the model's outputs were finite)"
        elif self.module:
            where = f"module '{self.module}' ({self.kind})"
        else:
            where = f"no single module ({self.kind})"
        return f"non-finite value at step {self.step}: first seen in {where}; inputs: {self.input_stats}"


def tensor_stats(values) -> str:
    """min / max / mean / count of non-finite entries of the tensors in ``values``."""
    parts = []
    for t in values:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            finite = torch.isfinite(t)
            f = t[finite].float()
            stats = f"min {f.min():.4g} max {f.max():.4g} mean {f.mean():.4g}" if f.numel() else "all non-finite"
            parts.append(f"{tuple(t.shape)} {t.dtype}: {stats}, non-finite {int((~finite).sum())}")
    return "; ".join(parts) or "none"


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in _first_tensor(o)]
    if isinstance(out, dict):  # the end-to-end heads' {"one2many": ..., "one2one": ...}
        return [t for o in out.values() for t in _first_tensor(o)]
    return []


def _on_every_rank(wanted: bool) -> bool:
    """``wanted`` where every DDP rank wants it too (one process: ``wanted``). The ranks locate a fault
    together (they skip the same step: their gradients are averaged), but their losses differ; a backward on
    some ranks only would hang where SyncBatchNorm's backward waits for all of them."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return wanted
    flag = torch.tensor(float(wanted), device=_collective_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag)


def _collective_device() -> torch.device:
    """Where the process group's collectives take tensors: the current GPU with NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class NonFiniteGuard:
    """Detects, locates and recovers from non-finite losses and gradients."""

    def __init__(self, max_bad: int = 3, window: int = 20, lr_factor: float = 0.5, max_rollbacks: int = 5):
        self.max_bad, self.window, self.lr_factor, self.max_rollbacks = max_bad, window, lr_factor, max_rollbacks
        self.bad_steps: deque[int] = deque()
        self.reports: list[NonFiniteReport] = []
        self.snapshot: dict | None = None
        self.lr_multiplier = 1.0
        self.rollbacks = 0

    def locate(
        self,
        model: nn.Module,
        step: int,
        run: Callable[[], torch.Tensor],
        others: Sequence[tuple[int, Callable[[], torch.Tensor]]] = (),
    ) -> NonFiniteReport:
        """Re-run ``run`` (forward returning the loss) with hooks; backward too when the loss is finite. The
        model's buffers (BatchNorm running statistics, which a training-mode forward updates) are as before.

        ``others``: more ``(step, run)`` pairs, re-run in turn while the fault has not shown (the other batches
        of a gradient-accumulation window: a non-finite gradient may come from any of them); the report names
        the step whose re-run showed it, else ``step``.
        """
        report = NonFiniteReport(step, None, "unknown", "the fault did not reproduce on a re-run")
        for at, attempt in ((step, run), *others):
            found = self._rerun(model, attempt)
            if found:
                kind = next(k for k in ("output", "gradient", "loss") if k in found)
                report = NonFiniteReport(at, found[kind][0], kind, found[kind][1])
            if not _on_every_rank(not found):  # DDP ranks re-run the same batches: they stop together
                break
        self.reports.append(report)
        LOGGER.warning("%s", report)
        return report

    @staticmethod
    def _rerun(model: nn.Module, run: Callable[[], torch.Tensor]) -> dict[str, tuple[str | None, str]]:
        """One hooked re-run: ``{"output" | "gradient": (module name, its input's statistics)}`` of the first
        module whose output (or output gradient) was not finite, or ``{"loss": (None, the model outputs'
        statistics)}`` when only the loss was."""
        buffers = [(b, b.clone()) for b in model.buffers()]
        names = {m: n for n, m in model.named_modules() if n}
        found: dict[str, tuple[str | None, str]] = {}
        outputs: list[torch.Tensor] = []
        handles = [model.register_forward_hook(lambda _m, _i, out: outputs.extend(_first_tensor(out)))]

        def forward_hook(module, inputs, output):
            outs = _first_tensor(output)
            if "output" not in found and not all_finite(outs):
                found["output"] = (names[module], tensor_stats(_first_tensor(inputs)))
            for t in outs:
                if t.requires_grad:
                    t.register_hook(lambda g, m=module, i=inputs: gradient_hook(m, i, g))

        def gradient_hook(module, inputs, grad):
            if "gradient" not in found and grad is not None and not bool(torch.isfinite(grad).all()):
                found["gradient"] = (names[module], tensor_stats(_first_tensor(inputs)))

        for module in names:
            handles.append(module.register_forward_hook(forward_hook))
        try:
            loss = run()
            loss_finite = bool(torch.isfinite(loss).all())
            if not loss_finite and "output" not in found:
                found["loss"] = (None, f"the model's outputs {tensor_stats(outputs)}")
            if _on_every_rank("output" not in found and loss_finite and loss.requires_grad):
                loss.backward()
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, before in buffers:
                    buffer.copy_(before)
        return found

    def restore_buffers(self, model: nn.Module) -> list[str]:
        """Put back, from the last good snapshot, the floating-point buffers (BatchNorm running statistics) that
        are no longer finite; their names. A forward that made a NaN folds it into the running statistics of
        every BatchNorm after it (training mode), which skipping the step does not undo: eval would give NaN
        from then on, and the EMA would take the NaN in at its next update."""
        saved = (self.snapshot or {}).get("model", {})
        restored = [
            name
            for name, buffer in model.named_buffers()
            if buffer.is_floating_point() and name in saved and not bool(torch.isfinite(buffer).all())
        ]
        for name in restored:
            model.get_buffer(name).copy_(saved[name])
        if restored:
            LOGGER.warning(
                "%d non-finite buffers (BatchNorm statistics) restored from the last good snapshot", len(restored)
            )
        return restored

    def record_bad_step(self, step: int) -> bool:
        """Count a skipped step; True when it is time to roll back. ``step`` counts optimizer steps (the
        window is ``window`` of them, however many batches each accumulates)."""
        self.bad_steps.append(step)
        while self.bad_steps and self.bad_steps[0] <= step - self.window:
            self.bad_steps.popleft()
        return len(self.bad_steps) >= self.max_bad

    def state_dict(self) -> dict:
        """What a resume needs to go on as the run would have: the learning-rate multiplier, the roll backs so
        far (``max_rollbacks`` counts the whole run) and the bad steps inside the window. The snapshot is not
        kept: the checkpoint's own weights are the resumed run's first good state."""
        return {"lr_multiplier": self.lr_multiplier, "rollbacks": self.rollbacks, "bad_steps": list(self.bad_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.lr_multiplier = float(state.get("lr_multiplier", 1.0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.bad_steps = deque(int(s) for s in state.get("bad_steps", ()))

    def take_snapshot(self, **states) -> None:
        """Remember known-good state dicts (copies), e.g. ``model=..., optimizer=...``; the copies are written into
        the last snapshot's tensors when it holds the same structure (:func:`copied_state`)."""
        current = {k: v.state_dict() for k, v in states.items() if v is not None}
        self.snapshot = copied_state(current, self.snapshot)

    def roll_back(self, **targets) -> None:
        """Restore the snapshot into ``targets`` and lower the learning-rate multiplier.

        Raises:
            TrainingError: ``max_rollbacks`` (0: no limit) roll backs were not enough: the faults come back
                whatever the learning rate (bad data, a diverging block), and the multiplier would only go on
                halving towards 0.
        """
        if self.max_rollbacks and self.rollbacks >= self.max_rollbacks:
            last = self.reports[-1] if self.reports else "no report"
            raise TrainingError(
                f"non-finite values came back after {self.rollbacks} roll backs (learning rate "
                f"x{self.lr_multiplier:.3g}); the last: {last}. Check the data (yolotr check-data) or lower lr0; "
                "nan_max_rollbacks: 0 goes on regardless"
            )
        if self.snapshot is None:
            LOGGER.warning("no good snapshot yet; cannot roll back")
            return
        for key, target in targets.items():
            if target is not None and key in self.snapshot:  # a copy: an optimizer's load keeps the tensors it is
                target.load_state_dict(copy.deepcopy(self.snapshot[key]))  # given, which its steps then change
        self.lr_multiplier *= self.lr_factor
        self.rollbacks += 1
        self.bad_steps.clear()
        LOGGER.warning("rolled back to the last good weights; learning rate x%.3g", self.lr_multiplier)


def copied_state(state, into=None):
    """A deep copy of ``state`` (nested dicts and lists of tensors and plain values: state dicts), written into the
    tensors of ``into``, an earlier copy, where both have the same structure and each tensor the same shape, dtype,
    device and strides; otherwise a new ``copy.deepcopy``. In place, a snapshot of yolov8n's weights, optimizer
    and EMA takes one ``_foreach_copy_`` (8 ms on a 2-core Xeon) instead of 1,200 new tensors (32 ms)."""
    leaves, spec = tree_flatten(state)
    if into is not None:
        old_leaves, old_spec = tree_flatten(into)
        if old_spec == spec and all(map(_same_tensor_kind, old_leaves, leaves)):
            pairs = [(old, new) for old, new in zip(old_leaves, leaves) if isinstance(new, torch.Tensor)]
            if pairs:
                torch._foreach_copy_([old for old, _ in pairs], [new.detach() for _, new in pairs])
            merged = [
                old if isinstance(new, torch.Tensor) else copy.deepcopy(new) for old, new in zip(old_leaves, leaves)
            ]
            return tree_unflatten(merged, spec)
    return copy.deepcopy(state)


def _same_tensor_kind(old, new) -> bool:
    """Whether ``new`` can be copied into ``old``: tensors alike (see :func:`copied_state`), or neither a tensor."""
    if not isinstance(new, torch.Tensor) or not isinstance(old, torch.Tensor):
        return not isinstance(new, torch.Tensor) and not isinstance(old, torch.Tensor)
    return (old.shape, old.dtype, old.device, old.stride()) == (new.shape, new.dtype, new.device, new.stride())
