"""``fraction`` and ``classes``: training on part of a dataset, as the ``ultralytics`` package's settings of the
same names do (``BaseDataset.get_img_files`` and ``BaseDataset.update_labels(include_class=...)``).

- ``fraction: F`` keeps the first ``max(1, round(F * n))`` images of the training split in the order of their
  paths (the package sorts its image files and cuts the sorted list); validation keeps all of its images. Unlike
  the package, ``n`` counts the usable images (the package cuts its list before checking the labels, so a broken
  image counts there and leaves a smaller set), and only a ratio in ``(0, 1]`` is taken (the package also takes
  an image count above 1 and a ``[train, val, test]`` list).
- ``classes: [i, j, ...]`` keeps the objects of those class ids; every image stays (one left without an object
  is a background image), the class ids are not renumbered and the model keeps every class of the dataset's
  ``names``, as in the package. It applies to the training split and to the validations during training (the
  package builds both with it); ``single_cls`` then makes the objects kept class 0.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from yolotr.data.validation import ImageRecord
from yolotr.errors import ConfigError

LOGGER = logging.getLogger("yolotr")


def first_fraction(records: list[ImageRecord], fraction: float) -> list[ImageRecord]:
    """The first ``max(1, round(fraction * n))`` of the ``n`` records in the order of their paths (Python's
    ``round``: half to even, as the package's), given back in their own order; all of them at 1."""
    count = max(1, round(len(records) * fraction))
    if count >= len(records):
        return records
    chosen = set(sorted(range(len(records)), key=lambda k: records[k].path)[:count])
    return [r for k, r in enumerate(records) if k in chosen]


def check_class_ids(classes: list[int] | None, names: list[str], source: str = "arguments") -> None:
    """A :class:`ConfigError` naming ``classes`` for an id that is not an index of the dataset's ``names``."""
    for i in classes or []:
        if not 0 <= i < len(names):
            raise ConfigError(
                f"{source}: setting 'classes' has class id {i}, but the dataset has {len(names)} classes "
                f"(0 to {len(names) - 1}: {', '.join(f'{k} {n}' for k, n in enumerate(names[:10]))}"
                f"{', ...' if len(names) > 10 else ''})"
            )


def keep_classes(records: list[ImageRecord], classes: list[int]) -> list[ImageRecord]:
    """Each record with only its objects of ``classes`` (new records; boxes ``(N, 4)`` float32, classes ``(N,)``
    int64 and their polygons cut alike); every record stays, with its class ids as they were."""
    wanted = np.asarray(classes, np.int64)
    out = []
    for r in records:
        keep = np.isin(r.classes, wanted)
        if keep.all():
            out.append(r)
            continue
        segments = [s for s, k in zip(r.segments, keep) if k] if r.segments else r.segments
        out.append(dataclasses.replace(r, boxes=r.boxes[keep], classes=r.classes[keep], segments=segments))
    return out


def training_subset(
    records: list[ImageRecord], split: str, fraction: float, classes: list[int] | None, log: bool = False
) -> list[ImageRecord]:
    """The records a run trains (``split == "train"``) or validates on: :func:`first_fraction` of the training
    split, then :func:`keep_classes` of either split; what was left out is logged with ``log``."""
    n, objects = len(records), sum(len(r.classes) for r in records)
    if split == "train" and fraction < 1:
        records = first_fraction(records, fraction)
        if log:
            LOGGER.info("fraction %g: training on %d of the %d usable images", fraction, len(records), n)
    if classes is not None:
        before = sum(len(r.classes) for r in records)
        records = keep_classes(records, classes)
        kept = sum(len(r.classes) for r in records)
        if log:
            LOGGER.info("classes %s: %s on %d of %d objects", classes, split, kept, before)
        if not kept and objects:
            LOGGER.warning("classes %s: no object of these classes in the %s split", classes, split)
    return records
