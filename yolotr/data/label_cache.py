"""The label cache: one JSON per dataset split in ``$YOLOTR_CACHE/labels``.

A split's validation result (usable records, problems, the images left out and why) is stored
under a fingerprint of the sizes and mtimes of every image, label and list file, so the second
start of a training run skips validation. A file from another :data:`CACHE_VERSION` (an older
rule for what is used) never matches and the split is validated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolotr.data.validation import ImageRecord, Item, Problem
from yolotr.files import write_atomically

LOGGER = logging.getLogger("yolotr")

# 2: an image with a label error is left out (1 kept it without the bad objects); problems carry
# their kind; the images left out are stored with the reason. 3: VOC <part> boxes are no longer
# read as their object's box; a YOLO label file may start with a UTF-8 BOM. 4: a TIFF of 32-bit
# samples (which OpenCV cannot read) is left out. 5: a TIFF turned by EXIF orientation 5-8 has its
# stored sides (4 held them swapped). 6: hints in the messages (commas, pixel coordinates, an unread image format).
# 7: a JPEG with data after its end marker is whole; an orientation OpenCV does not apply keeps the stored size;
# VOC boxes are scaled from a <size> that is not the image's; a label file that is a broken link is an error.
# 9: VOC objects marked difficult, and those of a class not in names, are left out (the image stays).
# 10: the points of YOLO polygon rows are kept (the augmentation warps them).
# 11: a COCO annotation's polygon segmentation is kept, its box the polygon's extent (as the package trains it).
#     Distinct polygons of one class and box are all kept (only a polygon given twice is a duplicate).
# 12: a file that is not an image says what it looks like (an HTML page, a HEIC photo, ...); a JPEG cut short
#     inside its headers is a truncated JPEG; .avif and .jp2 images are read (when this OpenCV decodes them).
CACHE_VERSION = 12


@dataclass
class CachedSplit:
    """What validating one split found: ``left_out`` holds ``(image path, reason)`` pairs."""

    records: list[ImageRecord]
    problems: list[Problem]
    left_out: list[tuple[str, str]]
    n_images: int


def cache_dir() -> Path:
    """``$YOLOTR_CACHE`` or ``~/.cache/yolotr``."""
    return Path(os.environ.get("YOLOTR_CACHE") or Path.home() / ".cache" / "yolotr")


def fingerprint(fmt: str, names: list[str], items: list[Item], watch: list[str], keypoint_values: int = 0) -> str:
    """SHA-1 over the cache version, format, names, keypoint columns, and size and mtime of every file involved."""
    digest = hashlib.sha1(f"{CACHE_VERSION}|{fmt}|{names}|{keypoint_values}".encode())
    files = [f for it in items for f in (it.image, it.label if fmt != "coco" else None) if f]
    for f in [*watch, *files]:
        try:
            st = os.stat(f)
            digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{f}|-\n".encode())
    for it in items:
        digest.update(f"{it.origin}".encode())
    return digest.hexdigest()


def cache_file(root: Path, split: str, entries: list[str]) -> Path:
    """The cache file of one split of the dataset rooted at ``root``."""
    key = hashlib.sha1(f"{root}|{split}|{entries}".encode()).hexdigest()[:16]
    return cache_dir() / "labels" / f"{Path(root).name}-{split}-{key}.json"


def read_cache(file: Path, fingerprint: str) -> CachedSplit | None:
    """The cached split, or None when the file is missing, unreadable, stale or of another version."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION or data.get("fingerprint") != fingerprint:
            return None
        return CachedSplit(
            records=[ImageRecord(*r) for r in data["records"]],
            problems=[Problem(*p) for p in data["problems"]],
            left_out=[(str(image), str(reason)) for image, reason in data["left_out"]],
            n_images=int(data["n_images"]),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _points(segments: list[np.ndarray]) -> list:
    """Polygons as JSON lists to 0.01 px, as :func:`~yolotr.data.validation.read_yolo` rounds them (float32
    points printed in full take 3 times the characters: a cache of COCO's polygons would be 1 GB)."""
    return [np.round(s.astype(np.float64), 2).tolist() for s in segments]


def write_cache(file: Path, fingerprint: str, split: CachedSplit) -> None:
    """Write atomically (:func:`~yolotr.files.write_atomically`); a cache that cannot be written is skipped."""
    data = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "n_images": split.n_images,
        "records": [
            [r.path, r.height, r.width, r.boxes.tolist(), r.classes.tolist(), _points(r.segments)]
            for r in split.records
        ],
        "problems": [[p.file, p.line, p.severity, p.message, p.kind] for p in split.problems],
        "left_out": [list(x) for x in split.left_out],
    }
    try:
        write_atomically(file, lambda f: f.write(json.dumps(data).encode()))
    except OSError as exc:
        LOGGER.debug("label cache not written to %s: %s", file, exc)
