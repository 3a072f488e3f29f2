"""``mixup: P``: a training mosaic blended with a second one, as YOLOv5 (``utils/augmentations.py mixup``, called in
``LoadImagesAndLabels.__getitem__``) and the ``ultralytics`` package (``MixUp``) blend them.

With probability ``P``, after the mosaic and its random affine, a second mosaic of a random image of the whole set
is made the same way (its own three partners, its polygons giving its boxes), the two are blended with a ratio
``r ~ Beta(32, 32)`` (about 0.5 +- 0.06) and their labels are put together; HSV jitter and flips follow, on the
blend. Where the references part:

- YOLOv5 mixes only an item that got a mosaic; the package's ``MixUp`` also a letterboxed one (``mosaic < 1``),
  with a partner that may be letterboxed too. yolotr follows YOLOv5: an item without a mosaic is never mixed, and
  ``close_mosaic`` (which turns the mosaic off) turns mixup off as the package's ``close_mosaic`` does.
- Both draw the partner from the whole set (``random.randint(0, n - 1)``), as here; its mosaic partners come from
  the same pool as the first image's (the worker's buffer, or the whole set for a seeded index). The coin is
  YOLOv5's ``u < P`` (the package mixes when ``u <= P``: the same but for a draw of exactly ``P``).
- Every number is drawn from the dataset's generator (not numpy's and Python's global ones), and none at all when
  ``P`` is 0: the items of a run without mixup are those of a yolotr without it, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MIXUP_BETA = 32.0  # alpha = beta of the ratio's Beta distribution, YOLOv5's and the package's

Mosaic = tuple[np.ndarray, np.ndarray, np.ndarray]


def mixup(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    image2: np.ndarray,
    boxes2: np.ndarray,
    classes2: np.ndarray,
    r: float,
) -> Mosaic:
    """Blend two images of one size and put their labels together, as YOLOv5's ``mixup`` (bit for bit).

    Args:
        image, image2: ``(H, W, 3)`` uint8 images.
        boxes, boxes2: ``(N, 4)`` and ``(M, 4)`` float32 xyxy pixel boxes; classes, classes2: ``(N,)`` and
            ``(M,)`` int64.
        r: the weight of ``image`` (``image2`` gets ``1 - r``); YOLOv5 draws it inside, from numpy's global
            generator.

    Returns:
        The ``(H, W, 3)`` uint8 blend ``image * r + image2 * (1 - r)`` truncated toward zero (YOLOv5's
        ``astype(np.uint8)``, not rounded), ``(N + M, 4)`` boxes and ``(N + M,)`` classes, the first image's
        first.
    """
    if image.shape != image2.shape:
        raise ValueError(f"mixup blends images of one size, got {image.shape} and {image2.shape}")
    blended = (image * r + image2 * (1 - r)).astype(np.uint8)
    boxes = np.concatenate([np.asarray(x, np.float32).reshape(-1, 4) for x in (boxes, boxes2)])
    classes = np.concatenate([np.asarray(x, np.int64).reshape(-1) for x in (classes, classes2)])
    return blended, boxes, classes


def maybe_mixup(first: Mosaic, p: float, rng: np.random.Generator, n: int, second: Callable[[int], Mosaic]) -> Mosaic:
    """``first`` (an augmented mosaic: image, boxes, classes) blended, with probability ``p``, with
    ``second(j)``, the mosaic of a random index ``j`` of the ``n`` images (drawn from ``rng`` too).

    Draws, in YOLOv5's order: nothing when ``p`` is 0; else one number for the coin, and when it is below ``p``
    the index ``j``, then whatever ``second`` draws, then the ratio ``r ~ Beta(32, 32)``.
    """
    if not p or rng.random() >= p:
        return first
    j = int(rng.integers(0, n))
    image2, boxes2, classes2 = second(j)
    r = float(rng.beta(MIXUP_BETA, MIXUP_BETA))
    return mixup(*first, image2, boxes2, classes2, r)
