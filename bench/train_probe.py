"""What ``bench/train.py``'s children measure inside a training run, the same way for every trainer.

:class:`Marks` stamps the first batch and the end of each epoch (through the trainers' own hooks);
:class:`StepProbe` splits the steps of a few "profiled" epochs into phases by patching, in the child
process only, what all three trainers (yolotr, YOLOv5's ``train.py``, the ``ultralytics`` package) go
through: ``DataLoader`` iterators' ``__next__`` (the wait for a batch), ``torch.Tensor.backward``
(``scaler.scale(loss).backward()``), the optimizer-step hook and each trainer's ``ModelEMA.update``.
At every mark of a profiled step the host waits for the device (``torch.cuda.synchronize``), so a
phase is the device's time for it whenever the device is the bottleneck; the profiled epochs are
left out of the median-epoch images/s.

Phases of a step, in ms (each the mean over the profiled steps; a step is one batch):

- data: blocked in the loader's ``__next__``;
- forward: from the batch to the start of backward (host-to-device copy, scaling, lr schedule,
  forward, loss);
- backward: ``Tensor.backward``;
- optimizer+EMA: from the end of backward to the end of the EMA update (or of the optimizer step)
  in the steps that step (unscale, clip, step, scaler update, zero_grad, EMA), averaged over all steps;
- other: the rest of the step (logging, progress bar, callbacks).

Host synchronisations per step: on CUDA, the operations ``torch.cuda.set_sync_debug_mode("warn")``
reports during the profiled steps (an ``.item()``, a copy to the host, a ``nonzero`` ...; the
probe's own ``synchronize`` is not one of them); on the CPU, where nothing synchronises, the calls
that would read a tensor on the host (``item``, ``tolist``, ``bool``, ``float``, ``numpy``,
``cpu``, ``nonzero``, reading or writing through a boolean mask), counted with a ``TorchFunctionMode``
on the main thread. The result also names the calls (``sync_sites``: file:line and count per step).
"""

from __future__ import annotations

import collections
import os
import statistics
import sys
import time
import warnings

HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__", "numpy", "cpu"}
HOST_READS |= {"nonzero", "masked_select", "unique", "argwhere", "nonzero_static"}
SYNC_MESSAGE = "called a synchronizing CUDA operation"
PHASES = ("data", "forward", "backward", "optimizer", "other")


def tree_cpu_seconds() -> float:
    """User + system CPU seconds so far of this process and its live descendants (DataLoader workers)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in (me, *me.children(recursive=True)):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class Marks:
    """Time stamps (and CPU seconds of the process tree) at the first batch of each epoch and at the
    end of each epoch's batches; the peak GPU memory at the end of the last epoch's batches."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.cpu_starts: list[float] = []
        self.cpu_ends: list[float] = []
        self.images = 0
        self.dropped = 0  # optimizer steps not taken at an epoch's end (--drop-epoch-tail)
        self.gpu_peak_mib: float | None = None
        self.gpu_reserved_mib: float | None = None
        self.probe: StepProbe | None = None
        self._open = False

    @property
    def epoch(self) -> int:
        """Index of the epoch running now (or about to start)."""
        return len(self.ends)

    def batch_start(self, *_args, **_kwargs) -> None:
        if not self._open:
            self.starts.append(time.time())
            self.cpu_starts.append(tree_cpu_seconds())
            self._open = True

    def epoch_end(self, *_args, **_kwargs) -> None:
        if self.probe is not None:
            self.probe.end_step()
        self.ends.append(time.time())
        self.cpu_ends.append(tree_cpu_seconds())
        self._open = False
        if self.device == "cuda":
            import torch

            self.gpu_peak_mib = torch.cuda.max_memory_allocated() / 2**20  # before the final validation
            self.gpu_reserved_mib = torch.cuda.max_memory_reserved() / 2**20

    def summary(self) -> dict:
        out = {
            "train_s": self.ends[-1] - self.starts[0],
            "epoch_s": [round(e - s, 3) for s, e in zip(self.starts, self.ends)],
            "epoch_cpu_s": [round(e - s, 2) for s, e in zip(self.cpu_starts, self.cpu_ends)],
            "images_seen": self.images,
            "dropped_tails": self.dropped,
            "gpu_peak_mib": self.gpu_peak_mib,
            "gpu_reserved_mib": self.gpu_reserved_mib,
        }
        if self.probe is not None:
            out.update(self.probe.summary())
        return out


def profiled_epochs(epochs: int, batches_per_epoch: int, steps: int) -> list[int]:
    """Which epochs the probe splits into phases: from the second on (the first pays for warm-up:
    cuDNN autotuning, allocator growth, worker start), whole epochs until ``steps`` steps, leaving
    at least one epoch after the first unprofiled for the median-epoch rate. One epoch: that one;
    two: the second."""
    if epochs <= 2:
        return [epochs - 1]
    chosen: list[int] = []
    for epoch in range(1, epochs - 1):
        if len(chosen) * max(batches_per_epoch, 1) >= steps:
            break
        chosen.append(epoch)
    return chosen


class StepProbe:
    """Splits the steps of the epochs in ``epochs`` into phases (see the module doc).

    Args:
        marks: the run's epoch marks (the probe reads the current epoch from them).
        epochs: indices of the epochs to profile.
        device: ``"cuda"`` or ``"cpu"``.
        ema_classes: the trainer's EMA classes; their ``update`` ends the optimizer phase.
    """

    def __init__(self, marks: Marks, epochs: list[int], device: str, ema_classes: tuple = ()) -> None:
        self.marks, self.epochs, self.device = marks, set(epochs), device
        self.ema_classes = ema_classes
        self.steps: list[dict[str, float]] = []
        self.syncs = 0
        self.sync_sites: collections.Counter[str] = collections.Counter()  # "call file:line" -> count
        self._step: dict[str, float] | None = None
        self._mode = None
        marks.probe = self

    # -------------------------------------------------------------- marks
    def active(self) -> bool:
        return self.marks.epoch in self.epochs

    def now(self) -> float:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def end_step(self) -> None:
        """Close the step in progress (at the next batch or at the epoch's end)."""
        if self._step is not None:
            self._step["end"] = self.now()
            self.steps.append(self._step)
            self._step = None

    def _mark(self, key: str) -> None:
        if self._step is not None:
            self._step[key] = self.now()

    # -------------------------------------------------------------- patches
    def install(self) -> None:
        """Patch the loader iterator, ``Tensor.backward``, the optimizer-step hook and the EMA classes."""
        import torch
        from torch.utils.data import dataloader

        probe = self
        next_batch = dataloader._BaseDataLoaderIter.__next__

        def timed_next(it):
            if not probe.active():
                probe.end_step()  # the first batch of an unprofiled epoch after a profiled one
                probe._stop_counting()
                return next_batch(it)
            probe.end_step()
            t0 = probe.now()
            batch = next_batch(it)
            probe._step = {"next": t0, "batch": probe.now()}
            probe._start_counting()
            return batch

        dataloader._BaseDataLoaderIter.__next__ = timed_next
        backward = torch.Tensor.backward

        def timed_backward(tensor, *a, **k):
            probe._mark("backward")
            out = backward(tensor, *a, **k)
            probe._mark("backward_end")
            return out

        torch.Tensor.backward = timed_backward
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(lambda *_: probe._mark("step_end"))
        for cls in self.ema_classes:
            update = cls.update

            def timed_update(ema, model, *a, _update=update, **k):
                out = _update(ema, model, *a, **k)
                probe._mark("ema_end")
                return out

            cls.update = timed_update

    def _start_counting(self) -> None:
        """Count host synchronisations from now while a profiled step runs."""
        if self._mode is not None:
            return
        if self.device == "cuda":
            import torch

            warnings.filterwarnings("always", message=f".*{SYNC_MESSAGE}.*")
            shown = warnings.showwarning

            def count(message, category, filename, lineno, *a, **k):
                if SYNC_MESSAGE in str(message):
                    if self.active():
                        self.syncs += 1
                        self.sync_sites[f"{_short(filename)}:{lineno}"] += 1
                    return None
                return shown(message, category, filename, lineno, *a, **k)

            warnings.showwarning = count
            torch.cuda.set_sync_debug_mode("warn")
            self._mode = "cuda"
        else:
            from torch.overrides import TorchFunctionMode

            probe = self

            class HostReads(TorchFunctionMode):
                def __torch_function__(self, func, types, args=(), kwargs=None):
                    name = getattr(func, "__name__", "")
                    if probe.active() and probe._step is not None:
                        if name in HOST_READS or (name in ("__getitem__", "__setitem__") and _bool_index(args)):
                            probe.syncs += 1
                            probe.sync_sites[f"{name} {_caller()}"] += 1
                    return func(*args, **(kwargs or {}))

            self._mode = HostReads()
            self._mode.__enter__()  # on the main thread until the first unprofiled epoch

    def _stop_counting(self) -> None:
        if self._mode == "cuda":
            import torch

            torch.cuda.set_sync_debug_mode(0)
        elif self._mode is not None:
            self._mode.__exit__(None, None, None)
        self._mode = None

    # -------------------------------------------------------------- results
    def summary(self) -> dict:
        """Mean ms per step of each phase, host syncs per step, and how many steps were profiled."""
        rows = {p: [] for p in PHASES}
        for s in self.steps:
            forward_end = s.get("backward", s["end"])
            backward_end = s.get("backward_end", forward_end)
            step_end = max(s.get("step_end", backward_end), s.get("ema_end", backward_end))
            rows["data"].append(s["batch"] - s["next"])
            rows["forward"].append(forward_end - s["batch"])
            rows["backward"].append(backward_end - forward_end)
            rows["optimizer"].append(step_end - backward_end)
            rows["other"].append(s["end"] - step_end)
        n = len(self.steps)
        out = {f"phase_{p}_ms": (statistics.fmean(v) * 1000 if v else float("nan")) for p, v in rows.items()}
        out.update(profiled_steps=n, syncs_per_step=self.syncs / n if n else float("nan"))
        out["profiled_epochs"] = sorted(self.epochs)
        out["sync_sites"] = {k: round(v / n, 2) for k, v in self.sync_sites.most_common(12)} if n else {}
        return out


def _short(filename: str) -> str:
    """``.../site-packages/yolov5/utils/loss.py`` -> ``yolov5/utils/loss.py``; a repository file from its top."""
    parts = filename.replace(os.sep, "/").split("/")
    for top in ("site-packages", "yolotr", "bench"):
        if top in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index(top)
            return "/".join(parts[i + 1 :] if top == "site-packages" else parts[i:])
    return "/".join(parts[-2:])


def _caller() -> str:
    """``file:line`` of the first frame outside torch and this module (who asked for the host read)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename.replace(os.sep, "/")
        if "/torch/" not in name and not name.endswith("train_probe.py"):
            return f"{_short(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _bool_index(args) -> bool:
    """Whether a ``__getitem__``/``__setitem__`` call indexes with a boolean tensor (a data-dependent size: on
    CUDA a ``nonzero`` and a synchronisation)."""
    import torch

    if len(args) < 2:
        return False
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
