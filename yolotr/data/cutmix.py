"""``cutmix: P``: a rectangle of a second training mosaic pasted into the first, as the ``ultralytics`` package's
``CutMix`` (``ultralytics/data/augment.py``) pastes it (YOLOv5 has no cutmix).

With probability ``P``, after the mosaic, its random affine and ``mixup``, a second mosaic of a random image of the
whole set is made the same way; three candidate rectangles are drawn (each: ``lam ~ Beta(1, 1)``, sides
``int(side * sqrt(1 - lam))``, a random centre, clipped to the image), and one of those that touch none of the first
mosaic's boxes is picked at random. The second mosaic's objects that lie in it by at least 10 % of their box's area
(1 % when the set has polygons) are clipped to it and added to the labels, and its pixels replace the first mosaic's
there. Where no rectangle is free of boxes, or none of the second mosaic's objects is in it, the item is left as it
was. HSV jitter and flips follow, on the result. Where yolotr and the package part:

- the package cuts into letterboxed items too (``mosaic < 1``); yolotr, as its ``mixup`` (YOLOv5's), into mosaic items
  only, so ``close_mosaic`` turns cutmix off with the mosaic, as the package's ``close_mosaic`` does;
- the package's threshold is 1 % when the first item holds polygons (after its mosaic), yolotr's when the set has any;
- every number comes from the item's seeded generator (none at all when ``P`` is 0), not numpy's global one, so a
  resumed run stays exact; the coin is ``u < P`` (the package cuts when ``u <= P``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CUTMIX_BETA = 1.0  # the package's CutMix(beta=1.0): lam ~ Beta(1, 1), i.e. uniform
CUTMIX_AREAS = 3  # candidate rectangles, the package's num_areas

Mosaic = tuple[np.ndarray, np.ndarray, np.ndarray]


def box_ioa(boxes1: np.ndarray, boxes2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Intersection of each of ``boxes1`` ``(N, 4)`` with each of ``boxes2`` ``(M, 4)`` (xyxy) over the area of the
    ``boxes2`` one: ``(N, M)`` float32."""
    w = np.minimum(boxes1[:, None, 2], boxes2[:, 2]) - np.maximum(boxes1[:, None, 0], boxes2[:, 0])
    h = np.minimum(boxes1[:, None, 3], boxes2[:, 3]) - np.maximum(boxes1[:, None, 1], boxes2[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return w.clip(0) * h.clip(0) / (area2 + eps)


def cut_rectangle(width: int, height: int, lam: float, cx: int, cy: int) -> tuple[int, int, int, int]:
    """The package's ``CutMix._rand_bbox`` for its draws ``lam``, ``cx``, ``cy``: ``(x1, y1, x2, y2)`` in pixels."""
    ratio = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * ratio), int(height * ratio)
    x1, x2 = (int(np.clip(v, 0, width)) for v in (cx - cut_w // 2, cx + cut_w // 2))
    y1, y2 = (int(np.clip(v, 0, height)) for v in (cy - cut_h // 2, cy + cut_h // 2))
    return x1, y1, x2, y2


def cutmix(first: Mosaic, second: Mosaic, area: np.ndarray, min_ioa: float) -> Mosaic:
    """Paste ``second``'s pixels in ``area`` into ``first`` with those of its objects that lie in it by at least
    ``min_ioa`` of their box's area, clipped to it, as the package's ``CutMix.apply_image`` / ``apply_instances``.

    Args:
        first, second: ``(image (H, W, 3) uint8, boxes (N, 4) float32 xyxy pixels, classes (N,) int64)``, one size.
        area: ``(4,)`` float32 xyxy, the rectangle (its corners truncated to whole pixels for the pixels and the clip).
        min_ioa: the share of an object's box that must lie in ``area``.

    Returns:
        ``first`` with the rectangle pasted (a new image) and ``second``'s objects appended after its own, or ``first``
        itself when none of them lies in the rectangle (the package then pastes nothing either).
    """
    image, boxes, classes = first
    image2, boxes2, classes2 = second
    if image.shape != image2.shape:
        raise ValueError(f"cutmix pastes between images of one size, got {image.shape} and {image2.shape}")
    boxes2 = np.asarray(boxes2, np.float32).reshape(-1, 4)
    inside = np.nonzero(box_ioa(np.asarray(area, np.float32)[None], boxes2)[0] >= min_ioa)[0]
    if not len(inside):
        return first
    x1, y1, x2, y2 = np.asarray(area).astype(np.int32)
    image = image.copy()
    image[y1:y2, x1:x2] = image2[y1:y2, x1:x2]
    pasted = boxes2[inside].copy()
    pasted[:, [0, 2]] = pasted[:, [0, 2]].clip(x1, x2)
    pasted[:, [1, 3]] = pasted[:, [1, 3]].clip(y1, y2)
    boxes = np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), pasted])
    classes = np.concatenate([np.asarray(classes, np.int64).reshape(-1), np.asarray(classes2, np.int64)[inside]])
    return image, boxes, classes


def maybe_cutmix(
    first: Mosaic, p: float, rng: np.random.Generator, n: int, second: Callable[[int], Mosaic], polygons: bool
) -> Mosaic:
    """``first`` (an augmented mosaic) with, at probability ``p``, a rectangle of ``second(j)``, the mosaic of a random
    index ``j`` of the ``n`` images, pasted as :func:`cutmix` (``polygons``: the set has polygons, so 1 % of a box in
    the rectangle is enough, else 10 %).

    Draws, in the package's order: nothing when ``p`` is 0; else the coin, and when it is below ``p`` the index ``j``,
    whatever ``second`` draws, three rectangles (``lam``, then the centre's x and y, each), then which free one.
    """
    if not p or rng.random() >= p:
        return first
    j = int(rng.integers(0, n))
    mosaic2 = second(j)
    height, width = first[0].shape[:2]
    areas = []
    for _ in range(CUTMIX_AREAS):
        lam = float(rng.beta(CUTMIX_BETA, CUTMIX_BETA))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        areas.append(cut_rectangle(width, height, lam, cx, cy))
    areas = np.asarray(areas, np.float32)
    boxes = np.asarray(first[1], np.float32).reshape(-1, 4)
    free = np.nonzero(box_ioa(areas, boxes).sum(1) <= 0)[0]
    if not len(free):
        return first
    area = areas[int(rng.choice(free))]
    return cutmix(first, mosaic2, area, 0.01 if polygons else 0.1)
