"""The ``ultralytics`` side of ``bench/train.py`` (the shapes families: ``anchor-free``, ``yolo26``, ``rtdetr``):
the child that trains the family's model with the package's trainer (8.4.190; RT-DETR: ``RTDETR`` and its
``RTDETRTrainer``), the package's validator on yolotr's weights, and yolotr's validation of the package's weights."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

from train_common import (
    AF_VAL_IOU,
    end_to_end,
    epoch_losses,
    family_model,
    family_optimizer,
    gpu_name,
    is_detr,
    read_rows,
    run_name,
    shapes_yaml,
)
from train_probe import Marks, StepProbe

LOGGER = logging.getLogger("bench.train")


def results_columns(path: Path) -> dict[str, list[float]]:
    """A results.csv as ``{column: values}`` (the ultralytics trainer's ``read_results_csv`` without polars);
    ``{}`` when it cannot be read."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key.strip(): [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}
    except (OSError, ValueError):
        return {}


def child_ultralytics(args: argparse.Namespace, workdir: Path) -> dict:
    """``yolov8n.yaml`` (``--family yolo26``: ``yolo26n.yaml``; ``rtdetr``: ``bench/rtdetr-l-w25.yaml`` through
    ``RTDETR`` and its ``RTDETRTrainer``) from scratch with the ``ultralytics`` package's own trainer."""
    import torch
    from ultralytics.utils import SETTINGS, torch_utils

    if is_detr(args):
        from ultralytics import RTDETR as PackageModel
        from ultralytics.models.rtdetr.train import RTDETRTrainer as PackageTrainer
    else:
        from ultralytics import YOLO as PackageModel
        from ultralytics.models.yolo.detect import DetectionTrainer as PackageTrainer

    SETTINGS.update(sync=False)  # no analytics events (YOLO_OFFLINE already keeps it from the network)
    torch_utils.NUM_THREADS = args.threads  # select_device sets torch's threads to it (cpu_count - 1 by default)
    marks = Marks(args.device)
    import ultralytics.engine.trainer as package_trainer

    StepProbe(marks, args.profile_epochs, args.device, (torch_utils.ModelEMA,)).install()
    # AMP as the bench sets it (fp16 + GradScaler on CUDA, off on the CPU): its check_amp would try to
    # download a checkpoint to compare against
    package_trainer.check_amp = lambda _model: True
    threads_seen: list[int] = []
    workers = args.workers

    class SameWorkersTrainer(PackageTrainer):
        """The package's detection (or RT-DETR) trainer, keeping ``workers`` (it sets 0 on a CPU): both sides load
        alike."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.args.workers = workers

        def read_results_csv(self) -> dict:
            """The package reads results.csv with polars for every checkpoint it saves; where polars is missing
            (the GPU machine: ``gpu-pack`` carries the packages, not their dependencies) the csv module gives
            the same columns."""
            try:
                import polars  # noqa: F401
            except ImportError:
                return results_columns(self.csv)
            return super().read_results_csv()

    def epoch_end(trainer) -> None:  # the epoch's batches are done; validation and saving follow
        marks.epoch_end()
        marks.images += len(trainer.train_loader.dataset)
        threads_seen.append(torch.get_num_threads())

    model = PackageModel(family_model(args))
    model.add_callback("on_train_batch_start", marks.batch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    model.train(
        trainer=SameWorkersTrainer,
        data=str(shapes_yaml(workdir)),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        nbs=args.nbs,
        workers=args.workers,
        device=0 if args.device == "cuda" else "cpu",
        seed=args.seed,
        deterministic=True,  # RT-DETR's grid_sample has no deterministic CUDA backward: only a warning (warn_only)
        optimizer=family_optimizer(args),
        lr0=0.01,  # optimizer auto (rtdetr) replaces it, on both sides
        lrf=0.01,
        cos_lr=False,
        warmup_epochs=args.warmup_epochs,
        close_mosaic=0,
        amp=args.device == "cuda",
        plots=False,
        val=False,  # the package still validates after the last epoch
        iou=AF_VAL_IOU,
        max_det=300,
        **({"nms": False} if end_to_end(args) else {}),  # validate the one-to-one branch, as yolotr does
        project=str(workdir),
        name=run_name("ultralytics", args),
        exist_ok=True,
    )
    save_dir = Path(model.trainer.save_dir)
    rows = read_rows(save_dir / "results.csv")
    row = rows[-1]
    return {
        **marks.summary(),
        "threads": min(threads_seen),
        "gpu_name": gpu_name(args),
        "losses": epoch_losses(rows),
        "train_images": marks.images // max(len(marks.ends), 1),
        "map50": float(row["metrics/mAP50(B)"]),
        "map50_95": float(row["metrics/mAP50-95(B)"]),
        "save_dir": str(save_dir),
        "final_weights": str(save_dir / "weights" / "last.pt"),  # the final EMA weights, optimizer stripped
    }


def child_ultralytics_val(args: argparse.Namespace, workdir: Path) -> dict:
    """The package's own validator (multi-label NMS; RT-DETR: ``RTDETRValidator``, no NMS) on yolotr's final
    EMA weights, loaded by name into the package's ``DetectionModel`` (``RTDETRDetectionModel``; the keys are
    the same)."""
    import contextlib
    import io

    import torch
    from ultralytics.utils import SETTINGS, torch_utils

    if is_detr(args):
        from ultralytics import RTDETR as PackageModel
        from ultralytics.nn.tasks import RTDETRDetectionModel as UltralyticsModel
    else:
        from ultralytics import YOLO as PackageModel
        from ultralytics.nn.tasks import DetectionModel as UltralyticsModel

    SETTINGS.update(sync=False)
    torch_utils.NUM_THREADS = args.threads
    checkpoint = torch.load(args.weights, map_location="cpu", weights_only=True)
    names = list(checkpoint["names"])
    with contextlib.redirect_stdout(io.StringIO()):
        model = UltralyticsModel(family_model(args), nc=len(names), verbose=False)
    model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()}, strict=True)
    model.names = dict(enumerate(names))
    wrapper = PackageModel(family_model(args))
    wrapper.model = model
    metrics = wrapper.val(
        data=str(shapes_yaml(workdir)),
        imgsz=args.imgsz,
        batch=args.batch,
        conf=0.001,
        iou=AF_VAL_IOU,
        max_det=300,
        **({"nms": False} if end_to_end(args) else {}),
        device=0 if args.device == "cuda" else "cpu",
        workers=args.workers,
        plots=False,
        project=str(workdir),
        name=f"ultralytics-val-seed{args.seed}",
        exist_ok=True,
    )
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map), "threads": torch.get_num_threads()}


def yolotr_validate_ultralytics(path: str, args: argparse.Namespace, workdir: Path) -> tuple[float, float]:
    """mAP50 and mAP50-95 of the package's final EMA weights, imported and validated by yolotr."""
    import torch

    from yolotr import YOLO
    from yolotr.engine.validator import validate

    torch.set_num_threads(args.threads)
    model = YOLO(path, verbose=False).model.float().eval()
    result = validate(
        model,
        str(shapes_yaml(workdir)),
        "val",
        imgsz=args.imgsz,
        batch_size=args.batch,
        iou=AF_VAL_IOU,
        workers=args.workers,
        verbose=False,
    )
    return result.map50, result.map50_95


def check_af_mirror() -> None:
    """Warn where yolotr's defaults differ from the ``ultralytics`` package's ``cfg/default.yaml``
    on the keys the anchor-free bench leaves at their defaults (the rest it sets on both sides)."""
    import importlib.util

    import yaml

    from yolotr.engine.config import default_config

    spec = importlib.util.find_spec("ultralytics")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the ultralytics package is not installed: pip install --no-deps ultralytics==8.4.190")
    theirs = yaml.safe_load((Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml").read_text())
    ours = default_config()
    pairs = {k: k for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective")}
    pairs.update({k: k for k in ("flipud", "fliplr", "mosaic", "momentum", "weight_decay", "warmup_momentum")})
    pairs.update(warmup_bias_lr="warmup_bias_lr", nbs="nbs", lrf="lrf", conf=None, box="af_box", cls="af_cls")
    pairs.update(dfl="dfl", mixup="mixup", copy_paste="copy_paste", cutmix=None, max_det="max_det")
    differ = {}
    for key, our_key in pairs.items():
        if our_key is None:  # augmentations yolotr does not have: they must be off in the package
            if theirs.get(key):
                differ[key] = (None, theirs[key])
        elif ours[our_key] != theirs[key]:
            differ[key] = (ours[our_key], theirs[key])
    if differ:
        LOGGER.warning("yolotr defaults (ours, ultralytics) differ: %s", differ)
