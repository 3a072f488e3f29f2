"""One entry point for every model source: a YAML (shipped or path) or a checkpoint of any kind."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from yolotr.data.coco import COCO_NAMES
from yolotr.errors import CheckpointError, ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.weights import (
    load_exact,
    pickled_origin,
    read_checkpoint,
    training_settings,
    yolov5_model_parts,
)

LOGGER = logging.getLogger("yolotr")
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt"}


def _foreign_training(settings: dict) -> tuple[int | tuple[int, int] | None, str | None]:
    """The image size and dataset a foreign checkpoint was trained with (the package's ``train_args``, YOLOv5's
    ``opt``), for ``predict``, ``val``, ``export`` and ``train`` to default to as they do for ours: a size of one
    or two positive whole numbers, and a dataset YAML path that exists here (not a name of the package's own
    sets, such as ``coco8.yaml``, which yolotr does not download); None for what is not that."""
    imgsz = settings.get("imgsz")
    sides = list(imgsz) if isinstance(imgsz, list | tuple) else [imgsz]
    if not 1 <= len(sides) <= 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        imgsz = None
    else:
        imgsz = sides[0] if len(set(sides)) == 1 else (sides[0], sides[1])
    data = settings.get("data")
    return imgsz, data if isinstance(data, str) and Path(data).is_file() else None


def is_yaml_source(source) -> bool:
    """Whether :func:`load_model` builds ``source`` from a YAML (a dict, a ``.yaml`` path or a shipped name such
    as ``yolov8n``): untrained weights, drawn from the random generator when it is built."""
    if isinstance(source, dict):
        return True
    path = Path(source)
    return path.suffix.lower() in {".yaml", ".yml"} or (path.suffix == "" and not path.is_file())


def load_model(source: str | Path | dict, nc: int | None = None) -> DetectionModel:
    """Build or load a ``DetectionModel``.

    ``source`` is a model YAML (a path, a shipped config name or an already-parsed dict; ``nc`` overrides
    its classes) or a checkpoint: ours, an official YOLOv5 ``.pt`` (read without YOLOv5's code) or a
    published PyTorch YOLOv4 ``state_dict``. Class names come along from checkpoints; an ``nc`` that
    differs from a checkpoint's is ignored with a warning (training on data with other classes gives
    the model a new head).
    """
    if isinstance(source, dict):
        return DetectionModel(source, nc=nc)
    if not isinstance(source, str | os.PathLike) or not str(source).strip():
        raise ConfigError(f"model source must be a YAML or checkpoint path or a YAML dict, got {source!r}")
    path = Path(source)
    if is_yaml_source(path):
        return DetectionModel(path, nc=nc)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES and not path.is_file():
        raise ConfigError(f"{source}: not a model YAML or a checkpoint (.pt, .pth)")
    kind, checkpoint = read_checkpoint(path)
    if kind == "yolotr":
        model = DetectionModel(checkpoint["model_yaml"])
        try:
            load_exact(model, checkpoint["state_dict"], path)
        except CheckpointError as e:
            raise CheckpointError(f"{e}{_bottleneck_hint(checkpoint['model_yaml'])}") from None
        model.names = list(checkpoint.get("names") or model.names)
        train_cfg = training_settings(checkpoint)
        model.imgsz = checkpoint.get("imgsz") or train_cfg.get("imgsz")
        model.train_data = train_cfg.get("data")  # validate()'s dataset when it is given none
        model.single_cls = bool(train_cfg.get("single_cls", False))  # and how to read it
    elif kind == "yolov5":
        cfg, state, names = yolov5_model_parts(checkpoint, path)
        model = DetectionModel(cfg)
        load_exact(model, state, path)
        model.names = names
        model.imgsz, model.train_data = _foreign_training(training_settings(checkpoint))
        origin = pickled_origin(checkpoint)
        classes = f"{len(names)} class{'es' if len(names) != 1 else ''}"
        LOGGER.info("%s: imported %s checkpoint (%d tensors, %s)", path, origin, len(state), classes)
    else:
        model = _load_state_dict_file(checkpoint, path)
    if nc is not None and nc != model.nc:
        LOGGER.warning(
            "%s: nc=%d ignored: the checkpoint has %d classes (training on data with %d classes gives it a new head)",
            path, nc, model.nc, nc,
        )  # fmt: skip
    return model.float().eval()


def _bottleneck_hint(cfg: dict) -> str:
    """Why a yolotr checkpoint of a YAML without ``anchors`` whose rows use ``Bottleneck`` may not fit: since
    2026-12-06 such rows build the package's 3x3-3x3 block (YOLOv5's is 1x1-3x3)."""
    rows = [r for part in ("backbone", "head") for r in cfg.get(part) or [] if isinstance(r, list) and len(r) == 4]
    if "anchors" in cfg or not any(r[2] in ("Bottleneck", "BottleneckCSP") for r in rows):
        return ""
    return (
        "; in a YAML without 'anchors' (the package's grammar) Bottleneck and BottleneckCSP now build the "
        "package's blocks (3x3 then 3x3), and this checkpoint was saved with YOLOv5's (1x1 then 3x3); its other "
        "weights start a new run with --weights"
    )


def _load_state_dict_file(state: dict, path: Path) -> DetectionModel:
    """A bare ``state_dict``: only the published PyTorch YOLOv4 layout is recognised."""
    try:
        from yolotr.models import yolov4_import
    except ImportError:
        yolov4_import = None
    layout = yolov4_import.is_yolov4_state_dict(state) if yolov4_import else None
    if layout != "full":
        raise CheckpointError(
            f"{path}: a bare state_dict without a model description; yolotr recognises only its own "
            "checkpoints, official YOLOv5 .pt files and the published PyTorch YOLOv4 layout"
        )
    converted, nc, report = yolov4_import.convert_yolov4_state_dict(state, str(path))
    model = DetectionModel("yolov4.yaml", nc=nc)  # the YAML carries the published BatchNorm eps (1e-5)
    load_exact(model, converted, path)
    model.names = list(COCO_NAMES) if nc == len(COCO_NAMES) else [str(i) for i in range(nc)]
    LOGGER.info("%s: imported published PyTorch YOLOv4 weights: %s", path, report)
    return model


def checkpoint_state_dict(path: str | Path) -> dict:
    """The weights of any checkpoint kind as a state dict in our key names (for weight transfer)."""
    kind, checkpoint = read_checkpoint(path)
    if kind == "yolotr":
        return checkpoint["state_dict"]
    if kind == "yolov5":
        return yolov5_model_parts(checkpoint, path)[1]
    try:
        from yolotr.models import yolov4_import
    except ImportError:
        return checkpoint
    if yolov4_import.is_yolov4_state_dict(checkpoint):
        return yolov4_import.convert_yolov4_state_dict(checkpoint, str(path))[0]
    return checkpoint
