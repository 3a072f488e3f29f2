"""One image's labels checked: raw objects from the readers of :mod:`yolotr.data.validation` (YOLO txt, VOC
XML, COCO JSON) turned into the boxes, classes and polygons of an :class:`ImageRecord`, or the error that leaves
the image out."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from yolotr.data.coco_segments import with_polygon
from yolotr.data.transforms import clip_polygon, polygon_box
from yolotr.data.validation import (
    CLASS_RANGE,
    CLIP_TOLERANCE,
    EMPTY_BOX,
    MISSING_IMAGE,
    NON_FINITE,
    OUTSIDE,
    Checked,
    ImageRecord,
    Item,
    Problem,
    error,
    inspect_image,
    read_voc,
    read_yolo,
    size_scale,
    warning,
)


def check_boxes(
    file: str, objects: Iterable[tuple], w: int, h: int, nc: int, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Validate raw objects ``(line, where, class, x1, y1, x2, y2[, polygon (K, 2)])`` (pixels) of one image.

    Returns ``(boxes (N, 4) float32 xyxy, classes (N,) int64, segments)`` of the objects that pass, ``segments``
    their polygons clipped to the image (``(0, 2)`` for a box; an empty list when no object has one);
    problems (bad class, non-finite, empty, outside: errors; clipped, duplicate: warnings) are
    appended to ``problems``. An error here leaves the whole image out (:func:`validate_item`).
    """
    boxes, classes, segments, keys = [], [], [], set()
    for line, where, cls, x1, y1, x2, y2, *polygon in objects:
        pre = f"{where}: " if where else ""
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.append(error(file, line, NON_FINITE, f"{pre}NaN or inf coordinate"))
            continue
        if cls != int(cls) or not 0 <= cls < nc:
            problems.append(error(file, line, CLASS_RANGE, f"{pre}class {cls:g} out of range 0..{nc - 1}"))
            continue
        if x2 <= x1 or y2 <= y1:
            problems.append(error(file, line, EMPTY_BOX, f"{pre}box of zero or negative size {x2 - x1:g}x{y2 - y1:g}"))
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            problems.append(error(file, line, OUTSIDE, f"{pre}box wholly outside the {w}x{h} image"))
            continue
        out = max(-x1, -y1, x2 - w, y2 - h)
        if out > 0 and polygon:  # the part of the polygon in the image, and its exact box (the clipped box's larger)
            x1, y1, x2, y2 = polygon_box(polygon[0], w, h).tolist()
            polygon = [clip_polygon(polygon[0], 0.0, 0.0, w, h).round(2).astype(np.float32)]
            if len(polygon[0]) < 3 or x2 <= x1 or y2 <= y1:
                problems.append(error(file, line, OUTSIDE, f"{pre}polygon wholly outside the {w}x{h} image"))
                continue
            if out > CLIP_TOLERANCE:
                problems.append(warning(file, line, f"{pre}polygon {out:.1f} px outside the image, clipped"))
        elif out > 0:
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
            if out > CLIP_TOLERANCE:
                problems.append(warning(file, line, f"{pre}box {out:.1f} px outside the image, clipped"))
        shape = np.asarray(polygon[0], np.float32).tobytes() if polygon else b""  # polygons may share a box
        key = (int(cls), round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2), shape)
        if key in keys:
            problems.append(warning(file, line, f"{pre}duplicate {'polygon' if polygon else 'box'} dropped"))
            continue
        keys.add(key)
        boxes.append((x1, y1, x2, y2))
        classes.append(int(cls))
        segments.append(polygon[0] if polygon else np.zeros((0, 2), np.float32))
    if not any(len(s) for s in segments):
        segments = []
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), segments


def _scaled(polygon: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """A COCO object's ``(K, 2)`` polygon in pixels of the JSON's image size scaled to the image: ``(K, 2)`` float32
    to 0.01 px, as :func:`~yolotr.data.validation.read_yolo` keeps a polygon row's points."""
    return (polygon * np.float64([sx, sy])).round(2).astype(np.float32)


def validate_item(item: Item, fmt: str, names: list[str], keypoint_values: int = 0) -> Checked:
    """Check one image and its labels (``fmt``: ``yolo``, ``coco`` or ``voc``; ``keypoint_values`` as in
    :func:`read_yolo`).

    Returns the record when nothing is wrong but warnings; otherwise no record and the kind of
    the first error, the reason the image is left out. Never raises.
    """
    problems: list[Problem] = []
    if item.origin is not None and not os.path.exists(item.image):
        problems.append(error(*item.origin, MISSING_IMAGE, f"image {item.image} does not exist"))
    elif fmt != "coco" and not os.path.exists(item.image):
        what = "label file" if fmt == "yolo" else "annotation"
        problems.append(
            error(item.label or item.image, None, MISSING_IMAGE, f"{what} for a missing image {item.image}")
        )
    if problems:
        return Checked(None, problems + item.problems, MISSING_IMAGE)
    h, w, problem = inspect_image(item.image)
    if problem is not None:
        problems.append(problem)
    problems += item.problems
    if problem is not None and problem.severity == "error":
        return Checked(None, problems, problem.kind)
    label = item.label or item.image
    if fmt == "coco":
        sx, sy = size_scale(label, item.declared_size, w, h, problems, f"{Path(item.image).name}'s width x height")
        read = (with_polygon(obj, item.declared_size, label, problems) for obj in item.objects or [])
        objects = [
            (n, at, c, x1 * sx, y1 * sy, x2 * sx, y2 * sy, *(_scaled(p, sx, sy) for p in polygon))
            for n, at, c, x1, y1, x2, y2, *polygon in (obj for obj in read if obj is not None)
        ]
    elif fmt == "yolo":
        objects = read_yolo(label, w, h, problems, keypoint_values)
    else:
        objects = read_voc(label, names, problems, w, h)
        if objects is None:
            problems.append(warning(label, None, f"no annotation for {item.image}: used as background"))
    boxes, classes, segments = check_boxes(label, objects or [], w, h, len(names), problems)
    first = next((p for p in problems if p.severity == "error"), None)
    if first is not None:
        return Checked(None, problems, first.kind)
    return Checked(ImageRecord(item.image, h, w, boxes, classes, segments), problems, None)
