"""Where the benches find ``../shared``: the data root and the raccoon set as a yolotr dataset dict."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def shared_root() -> Path:
    """``$YOLOTR_SHARED``, or ``shared/`` beside the repository."""
    return Path(os.environ.get("YOLOTR_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def raccoon_root() -> Path:
    """The raccoon set's folder (Pascal VOC: ``images/``, ``annotations/``, ``train.txt``, ``val.txt``)."""
    root = shared_root() / "data" / "raccoon"
    if not root.is_dir():
        sys.exit(f"raccoon set not found at {root}: set YOLOTR_SHARED")
    return root


def raccoon_data() -> dict:
    """yolotr's dataset dict of the raccoon set (160 train / 40 val images, one class)."""
    root = raccoon_root()
    return {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["raccoon"], "format": "voc"}
