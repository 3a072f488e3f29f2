"""What a user may call a model, and the messages for a name that is not one.

The shipped configs in ``cfg/models/`` are listed as a user writes them: a unified YAML with ``scales``
(``yolo11.yaml``) as its scaled names (``yolo11n.yaml`` ... ``yolo11x.yaml``), the way the ``ultralytics``
package takes them. A missing ``.pt`` is a checkpoint that yolotr does not download, not a YAML.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from yolotr.errors import did_you_mean

HAS_SCALE = re.compile(r"yolo(?:e-)?v?\d+[a-z](?=-|$)")  # yolov8n-swinv2: the scale is in the file name
CFG_DIR = Path(__file__).resolve().parent.parent / "cfg" / "models"
WEIGHTS_SOURCES = (
    "YOLOv5: https://github.com/ultralytics/yolov5/releases; YOLOv8, YOLO11, YOLO12: "
    "https://github.com/ultralytics/assets/releases"
)


def scaled_name(stem: str, scale: str) -> str:
    """``yolo11`` + ``n`` -> ``yolo11n``; ``yolov8-p2`` + ``s`` -> ``yolov8s-p2`` (the letter after the version)."""
    return re.sub(r"^(.*?\d+)", lambda m: m.group(1) + scale, stem, count=1)


def shipped_model_names() -> list[str]:
    """Every name a shipped config answers to: plain YOLOv5-style files as they are, unified ones by scale."""
    names = []
    for path in sorted(CFG_DIR.glob("*.yaml")):
        try:
            scales = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("scales")
        except (OSError, yaml.YAMLError, AttributeError):
            scales = None
        scaled = [scaled_name(path.stem, str(s)) for s in scales] if isinstance(scales, dict) else []
        if scaled and not HAS_SCALE.search(path.stem) and all(HAS_SCALE.search(n) for n in scaled):
            names += [f"{n}.yaml" for n in scaled]
        else:  # a YOLOv5-style file, or one whose single scale is not in its name (rtdetr-resnet50.yaml)
            names.append(path.name)
    return names


def unknown_model_message(name: str | Path) -> str:
    """The ``ConfigError`` text for a model YAML name that is neither a file nor a shipped config."""
    names = shipped_model_names()
    given = Path(name).name if Path(name).suffix else f"{Path(name).name}.yaml"
    return (
        f"{name}: no such model YAML (not a file, not a shipped config){did_you_mean(given, names)} "
        f"Shipped: {', '.join(names)}"
    )


def missing_weights_message(path: str | Path) -> str:
    """The ``CheckpointError`` text for a checkpoint file that is not there (yolotr downloads nothing)."""
    path = Path(path)
    stem = re.sub(r"\.(pt|pth|ckpt)$", "", path.name)
    yaml_name = f"{stem}.yaml"
    untrained = f"; to start from untrained weights use {yaml_name}" if yaml_name in shipped_model_names() else ""
    return (
        f"{path}: no such checkpoint file. yolotr does not download weights: get the file ({WEIGHTS_SOURCES}), "
        f"put it where you like (e.g. ./weights/{path.name}) and give that path{untrained}"
    )
