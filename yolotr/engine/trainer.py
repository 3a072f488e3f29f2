"""The training loop: data, model, optimizer, AMP, EMA, schedule, NaN guard, checkpoints, resume, DDP.

Derived from YOLOv5's ``train.py`` (same warmup, parameter groups, accumulation, EMA and loss
gains), with three differences: every sample's augmentation is seeded by ``(seed, epoch, index)``
and the lr is a pure function of the step, so a run killed at any checkpoint resumes to the same
weights; a :class:`~yolotr.engine.guard.NonFiniteGuard` names the module behind a NaN and recovers;
Transformer parameters get their own learning-rate multiplier. Its callbacks take the ultralytics package's
event names (:mod:`~yolotr.engine.callbacks`); the optimizer step and the checkpoints are mixins of their own
(:mod:`~yolotr.engine.train_step`, :mod:`~yolotr.engine.train_checkpoint`).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from yolotr.data.dataset import AUG_KEYS, DetectionDataset, mosaic_only_warning, stop_workers
from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.data.single_class import single_class, single_class_names
from yolotr.data.sources import load_dataset_config, load_records
from yolotr.data.subset import check_class_ids, training_subset
from yolotr.engine.amp import StepGate, resolve_amp
from yolotr.engine.autoanchor import run_autoanchor
from yolotr.engine.callbacks import TrainerCallbacks
from yolotr.engine.config import default_config, load_cfg_file, resolve_config
from yolotr.engine.early_stop import EarlyStopping
from yolotr.engine.ema import ModelEMA
from yolotr.engine.guard import NonFiniteGuard
from yolotr.engine.head_mode import STRETCH, input_fit
from yolotr.engine.heap import set_mmap_threshold
from yolotr.engine.optim import apply_schedule, build_optimizer, describe_groups, resolve_train_settings
from yolotr.engine.progress import LOG_EVERY, LossProgress
from yolotr.engine.results_csv import append_results_row, plot_results
from yolotr.engine.resume_state import resume_state
from yolotr.engine.runs import next_run_dir, select_device
from yolotr.engine.sampler import ResumableBatchSampler, train_loader
from yolotr.engine.sync_bn import convert_sync_batchnorm
from yolotr.engine.tensorboard import TensorBoardLogger
from yolotr.engine.time_limit import fitted_epochs
from yolotr.engine.train_checkpoint import TrainCheckpoints
from yolotr.engine.train_model import build_train_model, freeze_batchnorm_statistics
from yolotr.engine.train_step import OptimizerStepping
from yolotr.engine.worker_priority import WORKER_NICE, DataWait, workers_share_cores
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, refuse_fused
from yolotr.nn.lean import lean_activations, lean_wanted
from yolotr.ops.loss import build_loss, unread_settings_warning

LOGGER = logging.getLogger("yolotr")


class Trainer(OptimizerStepping, TrainerCallbacks, TrainCheckpoints):
    """Trains a detector; ``Trainer(overrides).train()`` or ``Trainer.resume(run_dir).train()``.

    Args:
        overrides: keys of ``cfg/default.yaml`` to change (``model``, ``data``, ``epochs``, ...).
        model: an already-built ``DetectionModel`` to train instead of ``overrides["model"]``, or a model YAML
            dict, built after the seed is set.
        cfg_file: a ``--cfg`` YAML of settings, under ``overrides``; a check against the data names it.
    """

    def __init__(
        self,
        overrides: dict | None = None,
        model: DetectionModel | dict | None = None,
        _resume: dict | None = None,
        cfg_file: str | Path | None = None,
    ):
        layer = load_cfg_file(cfg_file) if cfg_file else {}
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.cfg = resolve_config({**layer, **given})
        self.given = {k for k, v in layer.items() if v is not None} | set(given)
        self.classes_source = str(cfg_file) if "classes" in layer and "classes" not in given else "arguments"
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "-1")) if self.world > 1 else -1
        self.device = select_device(str(self.cfg["device"]), self.local_rank)
        if self.world > 1 and not dist.is_initialized():
            # other ranks wait at a barrier while rank 0 validates: 3 hours, as YOLOv5 (torch's default is 30 min)
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
        self.main = self.rank == 0
        self._resume_state = _resume
        refuse_fused(model)  # before the run folder: it would train without BatchNorm
        self.step = 0
        self._model_in = model
        if _resume is not None:
            self.save_dir = Path(_resume["run_dir"])
        else:
            self.save_dir = next_run_dir(self.cfg["project"], self.cfg["name"], self.cfg["exist_ok"])
        self.weights_dir = self.save_dir / "weights"

    @classmethod
    def resume(cls, run_dir: str | Path, **overrides) -> Trainer:
        """Continue the run in ``run_dir`` from ``weights/last.pt``: same optimizer, EMA, scaler,
        RNG, schedule and data position (:func:`~yolotr.engine.resume_state.resume_state`)."""
        cfg, state = resume_state(run_dir, **overrides)
        return cls(cfg, _resume=state)

    def _setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg["seed"] + self.rank)
        # on or off as asked, whatever an earlier run left (train() puts the caller's settings back at its end);
        # kernels stay deterministic, but torch's NaN fill of every new tensor cost 13% of a CPU step (as the package)
        torch.use_deterministic_algorithms(bool(cfg["deterministic"]), warn_only=True)
        if cfg["deterministic"]:
            torch.utils.deterministic.fill_uninitialized_memory = False
        if self.device.type == "cpu":
            set_mmap_threshold(cfg["mmap_threshold_mb"])  # less heap left behind by each step (engine/heap.py)
        if isinstance(cfg["data"], str | Path) and Path(cfg["data"]).is_file():  # a resume from another folder
            cfg["data"] = os.path.abspath(cfg["data"])  # finds it (args.yaml and last.pt keep this path)
        self.data = load_dataset_config(cfg["data"])  # its own names: the labels are checked against them
        check_class_ids(cfg["classes"], self.data.names, self.classes_source)
        self.names = single_class_names(self.data.names) if cfg["single_cls"] else list(self.data.names)
        self.memory_format = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
        model, self.transfer_report = build_train_model(
            cfg, self.names, self.data.source, self._model_in, self._resume_state
        )
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.stride = stride = largest_stride(self.model)
        cfg["imgsz"] = check_imgsz(cfg["imgsz"], stride)
        train_records = self._records("train", log=self.main)  # headline and first problems
        hyp = {k: cfg[k] for k in AUG_KEYS}
        self.train_set = DetectionDataset(
            train_records, cfg["imgsz"], augment=True, hyp=hyp, stride=stride, cache_ram=cfg["cache_ram"],
            seed=cfg["seed"], stretch=input_fit(self.model) == STRETCH,  # RT-DETR: as the package trains it
        )  # fmt: skip
        self.sampler = ResumableBatchSampler(
            len(self.train_set), cfg["batch"], cfg["seed"], True, self.rank, self.world
        )
        workers = max(0, min(int(cfg["workers"]), os.cpu_count() or 1))
        self.yielding = workers_share_cores(workers, self.device)  # workers at low priority: they leave the cores
        if self.yielding and self.main:
            LOGGER.info("DataLoader workers at low priority (nice %d): %d share the cores with %d training threads",
                        WORKER_NICE, workers, torch.get_num_threads())  # fmt: skip
        self.loader = self._new_loader(workers)
        self.batches = None  # the loader's iterator, made at the first epoch (ConsecutiveEpochs)
        self.data_wait: DataWait | None = None  # made at the first batch
        self.nb = len(self.sampler)
        if self.nb == 0:
            raise ConfigError(
                f"{self.data.source}: {len(self.train_set)} training images do not fill one batch "
                f"of {cfg['batch']} x {self.world} processes"
            )
        if self._resume_state is None:  # a resumed run has its anchors in the checkpoint
            run_autoanchor(self.model, train_records, cfg, self.main, self.world)
        resolve_train_settings(cfg, self.model, self.given, len(self.train_set), self.world)  # head's defaults, auto
        self.accumulate = max(round(cfg["nbs"] / (cfg["batch"] * self.world)), 1)
        weight_decay = cfg["weight_decay"] * cfg["batch"] * self.world * self.accumulate / cfg["nbs"]
        self.amp = resolve_amp(cfg["amp"], self.device)
        self.optimizer = build_optimizer(
            self.model,
            cfg["optimizer"],
            cfg["lr0"],
            cfg["momentum"],
            weight_decay,
            cfg["lr_transformer_scale"],
            cfg["nesterov"],
            fused=self.device.type == "cpu" and not self.amp.scaled,  # GradScaler steps a fused one even on inf
        )
        if self.main:
            LOGGER.info("optimizer: %s", describe_groups(self.optimizer))
        self.lean = lean_wanted(cfg["lean_activations"], cfg["batch"], cfg["imgsz"])
        self.gate = StepGate(self.amp, cfg["amp_init_scale"])
        self.ema = ModelEMA(self.model, cfg["ema_decay"], cfg["ema_tau"]) if cfg["ema"] else None
        self.loss_fn = build_loss(self.model, cfg, cfg["imgsz"])
        if self.main and (unread := unread_settings_warning(self.loss_fn, cfg, default_config())):
            LOGGER.warning("%s", unread)
        if self.main and (idle := mosaic_only_warning(cfg)):
            LOGGER.warning("%s", idle)
        self.guard = NonFiniteGuard(
            cfg["nan_max_bad_steps"], cfg["nan_window"], cfg["nan_lr_factor"], cfg["nan_max_rollbacks"]
        )
        self.stopper = EarlyStopping(cfg["patience"])  # engine/early_stop.py
        self.warmup_iters = (
            max(round(cfg["warmup_epochs"] * self.nb), cfg["warmup_min_iters"]) if cfg["warmup_epochs"] > 0 else 0
        )
        self.start_epoch, self.start_batch, self.last_opt_step, self.best_fitness = 0, 0, -1, -1.0
        self.optimizer_steps = 0  # optimizer steps that ran, over the whole run (save_period_steps counts them)
        self.step_attempts = 0  # optimizer steps that ran or were skipped (the guard's window counts them)
        self.overflows_before, self.resumed_overflows = 0, None  # GradScaler's overflow count at the epoch's start
        self.elapsed_before, self.resumed_loss = 0.0, None  # a resumed run's seconds and its epoch's loss sums
        self.epochs_fitted = False  # time_limit: epochs fitted to it (once a run; checkpoints keep it)
        self._window: list[tuple[torch.Tensor, torch.Tensor]] = []  # the batches of the step being accumulated
        self._window_finite: list[torch.Tensor] = []  # whether each one's loss was finite (on the device)
        self.epoch_overflows = 0
        if self._resume_state is not None:
            self._restore(self._resume_state)
        self.train_model: nn.Module = self.model
        if self.world > 1:
            if cfg["sync_bn"]:
                self.train_model = convert_sync_batchnorm(self.model, self.device)
            ids = [self.local_rank] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.train_model, device_ids=ids)
        self.val_loader = None
        if cfg["val"] and self.main:  # workers forked now, while the process is small, and kept
            from yolotr.engine.validator import build_val_dataloader

            # on the CPU the validation loads in this process: its workers would sit idle through every
            # epoch holding ~400 MiB each, to save the few percent of a CPU validation that reading takes
            val_workers = workers if self.device.type == "cuda" else 0
            val_records = self._records("val")
            fit = input_fit(self.model)  # RT-DETR: stretched to the imgsz square, as the package validates it
            self.val_loader = build_val_dataloader(
                val_records, cfg["imgsz"], cfg["batch"], stride, val_workers, fit, self.device.type == "cuda"
            )
            self.val_loader.start()

    def _records(self, split: str, log: bool = False) -> list:
        """The split's records: ``fraction`` of the training split and the objects of ``classes``
        (:func:`~yolotr.data.subset.training_subset`), then every class 0 with ``single_cls``
        (:func:`~yolotr.data.single_class.single_class`), as the package applies them."""
        records, _ = load_records(self.data, split, log=log)
        records = training_subset(records, split, self.cfg["fraction"], self.cfg["classes"], log=log)
        return single_class(self.data, records)[1] if self.cfg["single_cls"] else records

    def _forward_loss(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``targets`` stay on the host, where the losses and heads read counts from them (no accelerator sync)."""
        with self.amp.autocast(), lean_activations(self.lean):
            raw = self.train_model(images, targets)  # the model passes them to a head that wants_targets
        loss, items = self.loss_fn(raw, targets)
        return loss * self.world, items

    def train(self) -> dict:
        """Run the training; returns the last validation metrics (and where the run lives). torch's deterministic
        settings, which ``deterministic`` sets for the run, are the caller's again afterwards."""
        previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory,
        )
        try:
            return self._train()
        finally:
            stop_workers(getattr(self, "loader", None), getattr(self, "val_loader", None))
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.utils.deterministic.fill_uninitialized_memory = previous[2]
            self.run_callbacks("teardown")

    def _train(self) -> dict:
        self.run_callbacks("on_pretrain_routine_start")
        self._setup()
        self.run_callbacks("on_pretrain_routine_end")
        cfg = self.cfg
        if self.main:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "args.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            LOGGER.info(
                "training %s on %s: %d images, batch %d x %d, accumulate %d, %s%s -> %s",
                cfg["model"],
                self.data.source,
                len(self.train_set),
                cfg["batch"],
                self.world,
                self.accumulate,
                self.device,
                f", AMP {self.amp}" if self.amp.enabled else "",
                self.save_dir,
            )
        metrics: dict = {}
        self.t0 = time.time()
        self.tb = TensorBoardLogger(self.save_dir if self.main else None)  # no-op without tensorboard
        self._good_snapshot()
        epoch = self.epoch = self.start_epoch
        self.run_callbacks("on_train_start")
        while epoch < cfg["epochs"]:
            if cfg["close_mosaic"] and epoch >= cfg["epochs"] - cfg["close_mosaic"] and self.train_set.mosaic:
                self.train_set.mosaic = False
                self.loader = self._new_loader(self.loader.num_workers)  # workers hold the dataset as it was
                self.batches = None  # and what they prepared with it is dropped
            self.train_model.train()
            freeze_batchnorm_statistics(self.model, int(cfg["freeze"]))
            start = self.start_batch if epoch == self.start_epoch else 0
            self.sampler.set_epoch(epoch, start)
            if self.batches is None:  # one stream of batches from here on: the workers run ahead into next epochs
                self.batches = iter(self.loader)
            if hasattr(self.loss_fn, "set_progress"):  # end-to-end heads: branch weights from the finished epochs
                self.loss_fn.set_progress(epoch, cfg["epochs"])
            resumed = self.resumed_loss if epoch == self.start_epoch and start else None
            progress = self.progress = LossProgress(len(self.loss_fn.names), self.device, resumed)
            self.epoch = epoch
            self.run_callbacks("on_train_epoch_start")
            resumed_mid_epoch = epoch == self.start_epoch and start and self.resumed_overflows is not None
            self.overflows_before = self.resumed_overflows if resumed_mid_epoch else self.gate.overflows
            desc = f"epoch {epoch + 1}/{cfg['epochs']}"
            epoch_batches = self._epoch_batches(epoch, start)
            bar = tqdm(epoch_batches, total=self.nb - start, disable=not self.main, unit="batch", desc=desc)
            for bi, (images, targets, _, _) in enumerate(bar, start=start):
                self.step = bi + self.nb * epoch
                self.run_callbacks("on_train_batch_start")
                apply_schedule(self.optimizer, cfg, epoch, self.step, self.warmup_iters, self.guard.lr_multiplier)
                self._window.append((images, targets))  # the loader's uint8 batch: the guard's re-run input
                loss, items = self._forward_loss(self._model_input(images, self.step), targets)
                self._window_finite.append(torch.isfinite(loss.detach()).all())  # read only if the step is skipped
                progress.add(items)
                self.gate.scale(loss).backward()
                if self.step - self.last_opt_step >= self._accumulate_at(self.step) or bi == self.nb - 1:
                    if self._optimizer_step():
                        self.optimizer_steps += 1
                        # not after the epoch's last batch: resumed from there, its validation and results row
                        # would be skipped; the end-of-epoch checkpoint follows at once
                        period = cfg["save_period_steps"]
                        if period and self.optimizer_steps % period == 0 and bi + 1 < self.nb:
                            self._save(epoch, bi + 1)
                            self._good_snapshot()  # what a resume from it starts from: it rolls back alike
                if bi % LOG_EVERY == 0 or bi == self.nb - 1:  # the logging interval: the loss read on the host
                    bar.set_postfix(dict(zip(self.loss_fn.names, progress.formatted())))
                self.run_callbacks("on_train_batch_end")
            mean_loss = progress.mean()
            if self.world > 1:  # every rank's batches, not rank 0's: the sums and counts of all, then the mean
                sums = torch.cat((progress.total, progress.count.view(1))).to(self.device)  # NCCL: device tensors
                dist.all_reduce(sums)  # (a rank whose every step was skipped adds no batch, not a NaN mean)
                mean_loss = (sums[:-1] / sums[-1]).cpu()
            self.epoch_overflows = self.gate.overflows - self.overflows_before
            metrics = self._end_epoch(epoch, mean_loss)
            epoch += 1
            if self.agreed_stop():
                break
        if self.world > 1:
            dist.barrier()
        if self.main:
            if self.cfg["plots"]:
                plot_results(self.save_dir)
            done, minutes, stop = epoch - self.start_epoch, (time.time() - self.t0) / 60, self.stopper.summary()
            stop = stop or (", stopped by a callback (trainer.stop)" if self.stop_requested else "")
            LOGGER.info("%d epochs done in %.1f min%s; results in %s", done, minutes, stop, self.save_dir)
            self.run_callbacks("on_train_end")
        self.tb.close()
        return {
            **metrics,
            "save_dir": str(self.save_dir),
            "nan_reports": [str(r) for r in self.guard.reports],
            **self.stopper.results(),
        }

    def _new_loader(self, workers: int) -> DataLoader:
        """The training loader, its batches up to the last epoch (without end under a time limit, which may fit
        more epochs than given once the first has run)."""
        stop_workers(getattr(self, "loader", None))  # those of the loader it replaces: now, not when collected
        end = None if self.cfg["time_limit"] else self.cfg["epochs"]
        pin, seed = self.device.type == "cuda", self.cfg["seed"] + self.rank
        return train_loader(self.train_set, self.sampler, workers, pin, seed, end, self.yielding)

    def _epoch_batches(self, epoch: int, start: int):
        """The batches ``start ..`` of ``epoch`` from the stream; low-priority workers that leave the training waiting
        more than half of the time (other processes busy on the cores) are made again at the normal priority."""
        wait = self.data_wait = self.data_wait or DataWait()  # one watch for the run: short epochs judged together
        for bi in range(start, self.nb):
            with wait:
                batch = next(self.batches)
            if self.yielding and wait.starved():
                LOGGER.warning("epoch %d: training waited %.0f%% of the time for batches from low-priority workers; "
                               "they run at the normal priority from batch %d on", epoch + 1, 100 * wait.share(),
                               bi + 2)  # fmt: skip
                self.yielding = False
                self.sampler.set_epoch(epoch, bi + 1)  # the stream goes on after this batch
                self.loader = self._new_loader(self.loader.num_workers)
                self.batches = iter(self.loader)
            yield batch

    def _end_epoch(self, epoch: int, mean_loss: torch.Tensor) -> dict:
        self.run_callbacks("on_train_epoch_end")
        metrics = {}
        fitness = None
        due = (epoch + 1) % max(int(self.cfg["val_period"]), 1) == 0 or epoch + 1 >= self.cfg["epochs"]
        if self.main and self.cfg["val"] and due:
            metrics = self.validate()
            fitness = metrics.get("fitness")
        if self.cfg["time_limit"] and not self.epochs_fitted:  # before the save: a resume keeps the fitted epochs
            done = self.nb - (self.start_batch if epoch == self.start_epoch else 0)  # a resumed epoch's batches
            seconds = (time.time() - self.t0) * self.nb / max(done, 1)
            fitted = fitted_epochs(self.cfg["time_limit"], seconds, self.nb, epoch + 1, self.device, self.main)
            self.cfg["epochs"] = fitted
            self.epochs_fitted = True
        self.stopping = self.stopper.step(epoch + 1, fitness, self.main, self.device)  # before the save, too
        best = fitness is not None and fitness > self.best_fitness
        if best:
            self.best_fitness = fitness
        if self.main:  # the results row before last.pt: a resume from an earlier last.pt drops the row (_restore)
            append_results_row(
                self.save_dir,
                epoch,
                self.loss_fn.names,
                mean_loss.tolist(),
                metrics,
                [g["lr"] for g in self.optimizer.param_groups],
                self.elapsed_before + time.time() - self.t0,
                {"amp/overflow_steps": self.epoch_overflows, "amp/loss_scale": self.gate.get_scale()},
            )
            self.tb.detection_epoch(self, epoch, mean_loss, metrics)  # before last.pt, as the row
            self._save(epoch + 1, 0, fitness, best=best or not (self.cfg["val"] and self.best_fitness >= 0))
        self._good_snapshot()
        self.run_callbacks("on_fit_epoch_end")
        if self.world > 1:
            dist.barrier()
        return metrics

    def validate(self) -> dict:
        """Validate the EMA (or raw) model on the dataset's ``val`` split; COCO metrics."""
        from yolotr.engine.validator import validate

        model = self.ema.ema if self.ema is not None else self.model
        result = validate(
            model,
            self.data,
            split="val",
            imgsz=self.cfg["imgsz"],
            batch_size=self.cfg["batch"],
            conf=self.cfg["val_conf"],
            iou=None if self.cfg["val_iou"] == "auto" else self.cfg["val_iou"],  # auto: the head's (0.6 or 0.7)
            workers=self.cfg["workers"],
            dataloader=self.val_loader,
            max_det=self.cfg["max_det"],
            loss_fn=self.loss_fn,  # validation losses (val/box_loss, ...) for TensorBoard and the summary
            single_cls=bool(self.cfg["single_cls"]),
        )
        self.val_loader = getattr(result, "dataloader", self.val_loader)
        self.last_validation = result  # the CLI prints the final table on stdout
        return {**result.to_dict(), "fitness": result.fitness}  # metrics/precision ... and val/<item>_loss
