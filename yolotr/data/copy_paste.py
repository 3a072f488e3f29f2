"""``copy_paste: P``: objects with a polygon pasted again as their left-right mirror, as YOLOv5
(``utils/augmentations.py copy_paste``, called in ``LoadImagesAndLabels.load_mosaic``) and the ``ultralytics``
package (``CopyPaste``, its default ``copy_paste_mode: flip``) paste them.

On a training mosaic's canvas, before its random affine: a random sample of ``round(P * n)`` of the ``n`` objects
that have a polygon is taken, in a random order; each one's mirror (its box and polygon flipped about the
canvas's vertical centre line) is pasted when it covers less than 30 % of the area of every box already there
(the pasted ones included), its pixels taken from the flipped canvas under the filled polygon. An object given as
a box (no polygon) is never pasted, as in both references. Where the references part:

- YOLOv5 samples ``round(P * n)`` objects at random, then keeps those whose mirror passes the overlap test
  against every box there, the mirrors pasted before it included. The package draws nothing: it keeps the
  mirrors that pass the test against the original boxes only (mirrors may cover each other), sorts them by their
  largest overlap and pastes the first ``round(P * m)`` of those ``m``. yolotr follows YOLOv5 (same objects for
  the same sample, same pixels).
- YOLOv5 fills the original polygon (vertices truncated to whole pixels) and flips that mask (column ``x`` to
  ``w - 1 - x``); the package fills the flipped polygon (``w - x``, truncated): the masks differ on the
  outline, by one column at most (filling is not mirror-symmetric, and a vertex on a whole pixel moves a column).
  yolotr fills YOLOv5's mask: its images are YOLOv5's bit for bit.
- YOLOv5 pastes only in a mosaic; the package's flip mode also pastes into an item without a mosaic
  (``mosaic < 1``). yolotr follows YOLOv5, so ``close_mosaic`` turns copy-paste off with the mosaic, as the
  package's ``close_mosaic`` does. The package's ``copy_paste_mode: mixup`` (objects of another image) is not
  implemented.
- YOLOv5 counts ``n`` and picks objects by their place in its list of polygons, which is shorter than its labels
  (and picks the wrong rows) when a mosaic joins images with polygons and images of boxes; here each object keeps
  its row, a box as an empty polygon, and only rows with a polygon are counted and picked.
- The sample is drawn from the dataset's generator (YOLOv5: Python's ``random.sample``), and nothing is drawn
  when ``P`` is 0, when no object has a polygon or when ``round(P * n)`` is 0, as in YOLOv5: the items of a run
  without copy-paste, or of a set of boxes, are what they were before the setting existed.
"""

from __future__ import annotations

import cv2
import numpy as np

COPY_PASTE_IOA = 0.30  # a mirror may cover less than this fraction of each box's area (YOLOv5's and the package's)

Objects = tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]


def box_ioa(box: np.ndarray, boxes: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """The intersection of the ``(4,)`` xyxy ``box`` with each of the ``(N, 4)`` ``boxes`` over that box's area
    (``+ eps``): ``(N,)``, in the boxes' dtype (YOLOv5's ``bbox_ioa``)."""
    inter_w = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    inter_h = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    return inter_w * inter_h / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + eps)


def copy_paste(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, segments: list[np.ndarray], picks) -> Objects:
    """Paste the left-right mirrors of the objects ``picks`` (row indices, tried in that order), as YOLOv5's
    ``copy_paste`` does for its sample ``picks`` (bit for bit).

    Args:
        image: ``(H, W, 3)`` uint8 BGR canvas, written in place as YOLOv5 writes it (a copy of a whole mosaic
            canvas cost more than the rest of the paste: pass a copy to keep it).
        boxes: ``(N, 4)`` float32 xyxy pixel boxes; classes: ``(N,)`` int64.
        segments: the ``N`` objects' ``(K, 2)`` float32 pixel polygons (``K = 0`` for an object given as a box).
        picks: rows of objects with a polygon.

    Returns:
        The image, ``(N + M, 4)`` boxes, ``(N + M,)`` classes and ``N + M`` polygons: the ``N`` objects, then the
        ``M`` mirrors that passed the overlap test (box ``(W - x2, y1, W - x1, y2)``, polygon ``(W - x, y)``, the
        class of their object), in the order of ``picks``. The mirror's pixels are those of ``image[:, ::-1]``
        under YOLOv5's mask: the object's polygon truncated to whole pixels, filled, and flipped.
    """
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    segments = list(segments)
    mask, low, high = None, np.array([w, h]), np.array([-1, -1])  # the mask, and the corners of its drawn part
    for j in picks:
        if not len(segments[j]):
            raise ValueError(f"object {j} has no polygon: only an object with a polygon is pasted")
        x1, y1, x2, y2 = boxes[j]
        mirror = np.array([w - x2, y1, w - x1, y2], np.float32)
        if (box_ioa(mirror, boxes) < COPY_PASTE_IOA).all():
            boxes = np.concatenate((boxes, mirror[None]))
            classes = np.concatenate((classes, classes[j : j + 1]))
            polygon = segments[j]
            segments.append(np.stack((w - polygon[:, 0], polygon[:, 1]), 1).astype(np.float32))
            if mask is None:
                mask = np.zeros((h, w), np.uint8)
            vertices = polygon.astype(np.int32)
            cv2.drawContours(mask, [vertices], -1, 1, cv2.FILLED)
            low, high = np.minimum(low, vertices.min(0)), np.maximum(high, vertices.max(0))
    if mask is not None:  # only the rectangle the mirrors cover is flipped: columns x0..x1 go to w-1-x1..w-1-x0
        (x0, y0), (x1, y1) = low.clip(0), np.minimum(high, [w - 1, h - 1])
        rows, source, target = slice(y0, y1 + 1), slice(x0, x1 + 1), slice(w - 1 - x1, w - x0)
        flipped = cv2.flip(image[rows, source], 1)  # read before the target, which it may overlap, is written
        image[rows, target] = cv2.copyTo(flipped, cv2.flip(mask[rows, source], 1), image[rows, target].copy())
    return image, boxes, classes, segments


def maybe_copy_paste(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    segments: list[np.ndarray],
    p: float,
    rng: np.random.Generator,
) -> Objects:
    """:func:`copy_paste` of a random sample of ``round(p * n)`` of the ``n`` objects with a polygon, in a random
    order (YOLOv5's ``random.sample(range(n), k=round(p * n))``, drawn here from ``rng``).

    Draws nothing, and gives the arguments back, when ``p`` is 0, no object has a polygon, or ``round(p * n)``
    (Python's rounding, half to even, as YOLOv5's) is 0.
    """
    if not p:
        return image, boxes, classes, segments
    rows = np.flatnonzero([len(s) > 0 for s in segments])
    k = round(p * len(rows))
    if not k:
        return image, boxes, classes, segments
    picks = rows[rng.choice(len(rows), size=k, replace=False)]
    return copy_paste(image, boxes, classes, segments, picks)
