"""``single_cls``: a dataset read as one class, as YOLOv5's ``--single-cls`` and the ``ultralytics`` package's
``single_cls=True`` read it.

The labels are checked against the dataset's own names first (a class index past them is still an error); then
every object's class becomes 0 and the names become ``["item"]``, the package's name, or the dataset's own name
when it has one class already (YOLOv5 keeps it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from yolotr.data.dataset_yaml import DatasetConfig
from yolotr.data.validation import ImageRecord

SINGLE_CLASS_NAME = "item"


def single_class_names(names: list[str]) -> list[str]:
    """The one name of a single-class run: the dataset's own for a one-class set, else ``["item"]``."""
    return [str(n) for n in names] if len(names) == 1 else [SINGLE_CLASS_NAME]


def single_class(
    config: DatasetConfig, records: list[ImageRecord] | None = None
) -> tuple[DatasetConfig, list[ImageRecord]]:
    """The one-class version of ``config`` and its ``records`` (new objects; the given ones are unchanged).

    Args:
        config: the dataset, with its own names (the records were checked against them).
        records: its records; each one's ``classes`` (``(N,)`` int64) become zeros, boxes ``(N, 4)`` float32 and
            segments are shared, not copied.

    Returns:
        ``(config with names single_class_names(config.names), records with class 0)``.
    """
    one = dataclasses.replace(config, names=single_class_names(config.names))
    zeroed = [dataclasses.replace(r, classes=np.zeros_like(r.classes)) for r in records or []]
    return one, zeroed
