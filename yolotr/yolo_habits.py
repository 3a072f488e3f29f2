"""The ``ultralytics`` package's small ``YOLO`` members that its users type on day one: ``task``, ``device``,
``eval()``, ``load()``, ``save()``, ``is_fused()``, ``cpu()`` and ``cuda()``, and for those yolotr lacks an
``AttributeError`` saying what it has instead (a mixin of :class:`yolotr.yolo.YOLO`, which keeps ``model``,
``source``, ``verbose``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from yolotr.logs import verbosity

LOGGER = logging.getLogger("yolotr")


# members of the package's YOLO that yolotr does not have: what the AttributeError says instead
ABSENT = {
    "track": "yolotr does not track objects (no tracker, persist or boxes.id)",
    "tune": "yolotr has no hyperparameter tuner; `yolotr compare` trains settings side by side over seeds",
    "benchmark": "bench/latency.py times a model on this machine; export() checks the file against PyTorch",
    "half": "predict(half=True) runs float16 on CUDA; the model itself stays float32",
    "reset_weights": "build the model again from its YAML: YOLO('yolov8n.yaml') starts untrained",
    "overrides": "the settings of a run are in its args.yaml; train() takes them as keywords or cfg=FILE",
    "ckpt_path": "YOLO(...).source is the file or YAML the model came from",
    "metrics": "set by val() and by a train() that validated (the last validation's ValidationResult)",
    "trainer": "set by train(): yolotr's Trainer of the last run",
}


class PackageHabits:
    """``task``, ``device``, ``eval()``, ``load(weights)``, ``save(path)``, ``is_fused()``, ``cpu()`` and ``cuda()`` as
    the ``ultralytics`` package's ``YOLO`` has them."""

    task = "detect"  # the package's task name: yolotr only detects

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``torch.device("cpu")`` for an exported file, which onnxruntime or
        TorchScript runs on the CPU)."""
        param = next(self.model.parameters(), None) if isinstance(self.model, torch.nn.Module) else None
        return param.device if param is not None else torch.device("cpu")

    def eval(self):
        """Put the model in evaluation mode (BatchNorm statistics frozen); returns this object, as the package."""
        self._need_pytorch("eval")
        self.model.eval()
        return self

    def load(self, weights: str | Path):
        """Copy into this model every tensor of the checkpoint ``weights`` (ours, the package's or YOLOv5's) whose
        name and shape fit, as the package's ``YOLO("yolov8n.yaml").load("yolov8n.pt")`` does; the transfer
        report (loaded, mismatched, missing) is logged. A later :meth:`train` starts from these weights (on a
        dataset with another number of classes: every tensor but the class branch's). Returns this object.

        Raises:
            CheckpointError: ``weights`` is not a readable checkpoint, or no tensor of it fits the model.
        """
        self._need_pytorch("load")
        from yolotr.errors import CheckpointError
        from yolotr.models.loading import checkpoint_state_dict
        from yolotr.models.weights import transfer_weights

        weights = os.fspath(weights)
        with verbosity(self.verbose):
            state = checkpoint_state_dict(weights)
            if getattr(self.model, "is_fused", False):
                self._unfuse_for(weights)
            report = transfer_weights(self.model, state)
        if not report.loaded:
            raise CheckpointError(f"{weights}: no tensor fits the model by name and shape ({report.summary(3)})")
        self._untrained = False  # train() keeps these weights (a YAML model is not built again from its seed)
        self._loaded_weights = weights  # and transfers them when it must build a model for another class count
        return self

    def _unfuse_for(self, weights: str) -> None:
        """Build the fused model again from its YAML, with BatchNorm, before ``weights`` load into it: a fused
        convolution holds its BatchNorm folded in, so a checkpoint's convolution (same name and shape) loaded into
        it would predict garbage without a word. Names and the training size and data carry over."""
        from yolotr.models.detection import DetectionModel

        fused = self.model
        param = next(fused.parameters())
        model = DetectionModel(fused.yaml).to(param.device).train(fused.training)
        for attr in ("names", "imgsz", "train_data", "single_cls"):
            if hasattr(fused, attr):
                setattr(model, attr, getattr(fused, attr))
        self.model = model
        LOGGER.info("%s: the model was fused; built again from its YAML (with BatchNorm) to load into", weights)

    def save(self, filename: str | Path = "saved_model.pt") -> Path:
        """Write the model as a yolotr checkpoint (its YAML, weights, class names and training size; written
        atomically), as the package's ``YOLO.save()``; ``YOLO(path)`` reads it back. Returns the path."""
        self._need_pytorch("save")
        from yolotr.models.weights import model_checkpoint, save_checkpoint

        extra = {"imgsz": getattr(self.model, "imgsz", None)}
        return save_checkpoint(model_checkpoint(self.model, **extra), filename)

    def is_fused(self) -> bool:
        """Whether :meth:`fuse` folded the BatchNorms into the convolutions (the package's ``is_fused()``)."""
        return bool(getattr(self.model, "is_fused", False))

    def cpu(self):
        """The model on the CPU; returns this object (``to("cpu")``)."""
        return self.to("cpu")

    def cuda(self, device: int = 0):
        """The model on CUDA device ``device``; returns this object (``to(f"cuda:{device}")``)."""
        return self.to(f"cuda:{device}")

    def __getattr__(self, name: str):
        """Members of the package's ``YOLO`` that yolotr lacks say what it has instead."""
        if name in ABSENT:
            raise AttributeError(f"'YOLO' object has no attribute {name!r}: {ABSENT[name]}")
        raise AttributeError(f"'YOLO' object has no attribute {name!r}")

    def add_callback(self, event: str, fn) -> None:
        """Call ``fn(trainer)`` at a training event of every later :meth:`train`, by the package's names
        (:data:`~yolotr.engine.callbacks.TRAINING_EVENTS`: ``on_train_start``, ``on_train_epoch_end``,
        ``on_fit_epoch_end``, ``on_model_save`` ...) or yolotr's ``on_batch_start`` / ``on_epoch_end``. ``fn``
        gets yolotr's :class:`~yolotr.engine.trainer.Trainer`, which has the package's ``epoch``, ``epochs``,
        ``tloss``, ``metrics``, ``best``, ``save_dir``, ``stop`` ... (:mod:`yolotr.engine.callbacks`).

        Raises:
            ConfigError: an event yolotr does not call, saying why or with the nearest names.
        """
        from yolotr.engine.callbacks import training_event
        from yolotr.errors import ConfigError

        training_event(event)
        if not callable(fn):
            raise ConfigError(f"add_callback({event!r}, ...): {fn!r} is not callable")
        self._callbacks.append((event, fn))

    def _run_with_callbacks(self, trainer) -> dict:
        """``trainer.train()`` with this model's callbacks."""
        for event, fn in self._callbacks:
            trainer.add_callback(event, fn)
        result = trainer.train()
        self.trainer = trainer  # the package keeps model.trainer, and model.metrics: the last validation
        if getattr(trainer, "last_validation", None) is not None:
            self.metrics = trainer.last_validation
        return result
