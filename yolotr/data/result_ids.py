"""The ids a COCO results file names detections by: the dataset's own, COCO's 91-class ids, or ours.

A COCO results file is a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
The COCO evaluation tools match it to an annotation file by those two ids, so they must be the
annotation file's. Three rules, first match wins (:func:`result_ids`):

``dataset``  a COCO-format dataset: each image's ``id`` in the split's instances JSON (found by the
             image's path, else by its file name), each class's category ``id`` (by name), as YOLOv5's
             ``val.py --save-json`` writes for COCO itself. An image the JSON does not list gets its stem.
``coco80``   the 80 COCO class names (a YOLO-format COCO, or a COCO-trained model without a dataset):
             COCO's category ids 1..90 with its gaps (YOLOv5's ``coco80_to_coco91_class``), and the
             file stem as an integer when it is all digits (``000000397133.jpg`` -> 397133), else the stem.
``index``    anything else: the class index and the file stem (``<stem>_<frame>`` for a video frame, from 1).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolotr.data.coco import COCO_NAMES, coco_ids

LOGGER = logging.getLogger("yolotr")

# COCO's category id of each of the 80 classes the COCO-trained YOLO checkpoints predict (ids 12, 26,
# 29, 30, 45, 66, 68, 69, 71 and 83 name no detection category).
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip


@dataclass
class ResultIds:
    """How detections are named in a COCO results file (one of the module's rules).

    Attributes:
        rule: ``dataset``, ``coco80`` or ``index``.
        category_ids: class index -> category id (None: the class index itself; a None entry: that
            class has no category and keeps its index).
        image_ids: real path of an image -> its image id (``dataset`` rule).
        annotations: the instances JSON the ids come from, when there is exactly one: the file to score
            a results file against.
    """

    rule: str = "index"
    category_ids: list[int | None] | None = None
    image_ids: dict[str, Any] = field(default_factory=dict)
    annotations: str | None = None

    def __post_init__(self) -> None:
        counts = Counter(os.path.basename(p) for p in self.image_ids)
        self._by_name = {os.path.basename(p): i for p, i in self.image_ids.items() if counts[os.path.basename(p)] == 1}

    def image_id(self, path: str, frame: int | None = None, stem: str | None = None) -> Any:
        """The ``image_id`` of an image file (or of frame ``frame`` of a video). Without a dataset id it is
        ``stem`` (default: the file's; a run gives ``bus_2`` to a second ``bus.*``, as its other outputs)."""
        if frame is None and self.image_ids:
            for found in (self.image_ids.get(os.path.realpath(path)), self._by_name.get(os.path.basename(path))):
                if found is not None:
                    return found
        stem = stem or Path(path).stem
        stem = stem if frame is None else f"{stem}_{frame + 1}"  # the label file's name: frames from 1
        return int(stem) if self.rule == "coco80" and stem.isdigit() else stem

    def category_id(self, cls: int) -> int:
        """The ``category_id`` of class index ``cls``."""
        if self.category_ids is None or not 0 <= cls < len(self.category_ids):
            return cls
        cid = self.category_ids[cls]
        return cls if cid is None else cid

    def entries(self, path: str, frame: int | None, detections, stem: str | None = None) -> list[dict]:
        """COCO results of one image: ``detections`` ``(n, 6)`` float ``x1, y1, x2, y2, score, class`` in
        original-image pixels (tensor or array) -> one dict per row (box rounded to 3 decimals, score to 6).
        ``stem``: see :meth:`image_id`."""
        rows = np.asarray(detections.cpu() if hasattr(detections, "cpu") else detections, np.float64).reshape(-1, 6)
        image_id = self.image_id(path, frame, stem)
        return [
            {
                "image_id": image_id,
                "category_id": self.category_id(int(c)),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(s, 6),
            }
            for x1, y1, x2, y2, s, c in rows.tolist()
        ]


def result_ids(names: list[str], data=None, splits: list[str] | None = None) -> ResultIds:
    """The rule for a model or dataset with classes ``names`` (see the module docstring).

    Args:
        names: the class names detections are indexed by.
        data: a dataset (YAML path, dict or :class:`~yolotr.data.sources.DatasetConfig`); a COCO-format one
            gives the ``dataset`` rule.
        splits: the splits whose JSONs name the images (default: all of the dataset's).

    Raises:
        DataError: ``data`` cannot be read, or one of its JSONs is of the wrong shape.
    """
    if data is not None:
        from yolotr.data.sources import load_dataset_config

        config = load_dataset_config(data)
        if config.format == "coco":
            entries = [e for s in (splits or list(config.splits)) for e in config.splits.get(s, [])]
            files = [e for e in entries if e.endswith(".json")]
            image_ids: dict[str, Any] = {}
            category_ids: list[int | None] = [None] * len(names)
            taken: list[int] = []
            for file in files:
                images, cats, every = coco_ids(file, list(names), [config.images, config.root])
                taken += every
                image_ids.update({os.path.realpath(p): i for p, i in images.items()})
                category_ids = [c if c is not None else cid for c, cid in zip(category_ids, cats)]
            missing = [i for i, c in enumerate(category_ids) if c is None]
            if missing:  # ids above every category's: a class index could be another class's category id
                first = max(taken, default=-1) + 1
                category_ids = [first + missing.index(i) if c is None else c for i, c in enumerate(category_ids)]
                LOGGER.warning(
                    "COCO results: %s have no category in %s; they are written with ids %s, which no category has",
                    [names[i] for i in missing], files, [category_ids[i] for i in missing],
                )  # fmt: skip
            return ResultIds("dataset", category_ids, image_ids, files[0] if len(files) == 1 else None)
    if tuple(names) == COCO_NAMES:
        return ResultIds("coco80", list(COCO80_TO_91))
    return ResultIds()
