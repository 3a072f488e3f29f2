"""Helpers shared by ``bench/train.py`` and its children (``train_official.py``, ``train_ultralytics.py``)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from shared_data import shared_root

AF_MODEL = "yolov8n.yaml"
# rtdetr-l at a quarter of its width (bench/rtdetr-l-w25.yaml): a path, as both sides take it
RTDETR_MODEL = str(Path(__file__).resolve().parent / "rtdetr-l-w25.yaml")
# the comparisons on the shapes set against the ``ultralytics`` package: family -> (model YAML, optimizer on
# both sides); ``yolo26`` trains with MuSGD, YOLO26's own optimizer in the package (what ``auto`` picks for
# runs over 10,000 iterations), set explicitly on both sides; ``rtdetr`` with ``auto``, RT-DETR's recipe in
# the package (AdamW at lr0 0.002 x 5 / (4 + nc) for runs this short), which yolotr's trainer resolves alike
SHAPES_FAMILIES = {"anchor-free": (AF_MODEL, "SGD"), "yolo26": ("yolo26n.yaml", "MuSGD")}
SHAPES_FAMILIES["rtdetr"] = (RTDETR_MODEL, "auto")
AF_VAL_IOU = 0.7  # the package's NMS IoU when it validates during training; yolotr's side is set to it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def weights_path() -> Path:
    path = shared_root() / "weights" / "yolov5n.pt"
    if not path.is_file():
        sys.exit(f"official checkpoint not found at {path}: set YOLOTR_SHARED")
    return path


def split_stems(root: Path, split: str) -> list[str]:
    return [s.strip() for s in (root / f"{split}.txt").read_text().splitlines() if s.strip()]


def find_image(root: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (root / "images" / f"{stem}{suffix}").is_file():
            return root / "images" / f"{stem}{suffix}"
    raise FileNotFoundError(f"no image for {stem} in {root / 'images'}")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` (YOLOv5 pads its column names and values with spaces)."""
    with open(path, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        raise RuntimeError(f"{path}: no rows")
    return rows


def epoch_losses(rows: list[dict[str, str]]) -> list[float]:
    """Mean training loss of each epoch: the sum of its ``train/*_loss`` columns (box + objectness +
    class for YOLOv5's head, box + class + DFL for the anchor-free one), as the trainers log them."""
    keys = [k for k in rows[0] if k.startswith("train/") and k.endswith("_loss")]
    if not keys:
        raise RuntimeError(f"no train/*_loss columns in results.csv: {list(rows[0])}")
    return [sum(float(r[k]) for k in keys) for r in rows]


def family_model(args: argparse.Namespace) -> str:
    """The model YAML a shapes comparison trains (``--family anchor-free``: yolov8n, ``yolo26``: yolo26n,
    ``rtdetr``: the path of ``bench/rtdetr-l-w25.yaml``)."""
    return SHAPES_FAMILIES[args.family][0]


def family_optimizer(args: argparse.Namespace) -> str:
    """The optimizer both sides of a comparison use (SGD, ``--family yolo26``: MuSGD; ``--optimizer`` overrides)."""
    return getattr(args, "optimizer", None) or SHAPES_FAMILIES.get(args.family, (None, "SGD"))[1]


def end_to_end(args: argparse.Namespace) -> bool:
    """Whether the family's head is end-to-end (YOLO26): every validator then reads its one-to-one branch
    (top-k, no NMS; the package: ``nms=False``, its validation default being the one-to-many branch + NMS)."""
    return args.family == "yolo26"


def is_detr(args: argparse.Namespace) -> bool:
    """Whether the family is RT-DETR: the package's side is then ``RTDETR``, its ``RTDETRTrainer`` and
    ``RTDETRValidator`` (no NMS anywhere: the head's top-k output; yolotr's validator reads the head)."""
    return args.family == "rtdetr"


def shapes_yaml(workdir: Path) -> Path:
    """The anchor-free side's dataset: the shapes set the parent wrote (YOLO format, ``data.yaml``)."""
    return workdir / "shapes" / "data.yaml"


def run_name(side: str, args: argparse.Namespace) -> str:
    """The run folder of one side and seed: ``<family>-<side>-seed<n>`` (``--family both`` shares a work folder)."""
    return f"{args.family}-{side}-seed{args.seed}"


def torch_device(args: argparse.Namespace) -> str:
    """The device string yolotr takes: ``cpu`` or ``cuda``."""
    return "cuda" if args.device == "cuda" else "cpu"


def gpu_name(args: argparse.Namespace) -> str | None:
    """The CUDA device's name on a CUDA run (None on the CPU)."""
    if args.device != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name(0)
