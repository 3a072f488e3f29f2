"""A COCO annotation's ``segmentation`` as one polygon, as the package trains it after
``convert_coco(use_segments=True)``.

A ``segmentation`` is a list of polygons, each a flat list ``[x1, y1, x2, y2, ...]`` in pixels, or an RLE mask
(a dict with ``size`` ``[height, width]`` and ``counts``, a list of run lengths or COCO's compressed string).
The package's converter writes one polygon per object: the parts of a multi-part polygon joined at their
closest points (its ``merge_multi_segment``: each part walked from where the previous one joins it, and back),
an RLE mask's outer outlines (OpenCV's ``RETR_EXTERNAL``, ``CHAIN_APPROX_SIMPLE``) joined the same way, parts of
fewer than 3 points left out. Its loader then makes each box the polygon's extent. Crowd annotations are
skipped before the segmentation is read (:func:`yolotr.data.coco.coco_items`).
"""

from __future__ import annotations

import cv2
import numpy as np

from yolotr.data.validation import MALFORMED, NON_FINITE, Problem, error, warning


class SegmentationError(ValueError):
    """A ``segmentation`` that cannot be read: its image is left out with an error of ``kind``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


MAX_MASK_PIXELS = 1 << 28  # an RLE mask's size when its image has none in the JSON to compare it with


def with_polygon(obj: tuple, size: tuple[float, float] | None, file: str, problems: list[Problem]) -> tuple | None:
    """A raw COCO object ``(line, where, class, x1, y1, x2, y2[, segmentation])`` (pixels of the JSON's image
    ``size``, ``(width, height)`` or None) with its ``segmentation`` read: ``(line, where, class, x1, y1, x2, y2,
    polygon)`` with the polygon's extent as its box (``polygon`` ``(K, 2)`` float64), the object as its ``bbox``
    when it has no segmentation or none that makes a polygon (warned), or None when the segmentation is malformed
    (an error in ``problems`` naming ``file``, the annotation and the key). Never raises."""
    if len(obj) == 7:
        return obj
    box, segmentation = obj[:7], obj[7]
    line, where = obj[:2]
    try:
        polygon = coco_polygon(segmentation, size, file, where, problems)
    except SegmentationError as exc:
        problems.append(error(file, line, exc.kind, f"{where}: {exc}"))
        return None
    if polygon is not None and not (np.ptp(polygon, 0) > 0).all():  # the package would train a box of no size
        problems.append(warning(file, line, f"{where}: segmentation of zero width or height: used as its bbox"))
        polygon = None
    if polygon is None:
        return box
    (x1, y1), (x2, y2) = polygon.min(0).tolist(), polygon.max(0).tolist()
    return (*obj[:3], x1, y1, x2, y2, polygon)


def coco_polygon(
    segmentation: object, size: tuple[float, float] | None, file: str, where: str, problems: list[Problem]
) -> np.ndarray | None:
    """One object's polygon from its non-empty ``segmentation``: ``(K, 2)`` float64 ``x, y`` in pixels of the
    JSON's image size, or None when the object stays its box (warned in ``problems``, naming ``file`` and
    ``where``, the annotation: no part of 3 points, an RLE mask whose size is not the image's ``size``
    ``(width, height)`` or with no outline).

    Raises:
        SegmentationError: a segmentation that is neither a list of flat coordinate lists nor an RLE mask, a part
            with an odd number of coordinates, a non-number, NaN or inf, or an RLE mask whose counts do not cover
            its size.
    """
    if isinstance(segmentation, dict):
        parts = _mask_outlines(segmentation, size, file, where, problems)
        if parts is None:
            return None
    elif isinstance(segmentation, list):
        read = [_part(p, i) for i, p in enumerate(segmentation)]
        parts = [p for p in read if len(p) >= 3]
        if not parts:
            problems.append(warning(file, None, f"{where}: segmentation has no polygon of 3 points: used as its bbox"))
            return None
        for i, p in enumerate(read):
            if len(p) < 3:
                problems.append(
                    warning(
                        file,
                        None,
                        f"{where}: segmentation[{i}] has {len(p)} point{'s' * (len(p) != 1)}, fewer than 3: skipped",
                    )
                )
    else:
        raise SegmentationError(
            MALFORMED,
            f"segmentation must be a list of polygons [[x1, y1, x2, y2, ...], ...] or an RLE mask, "
            f"got {segmentation!r:.60}",
        )
    return parts[0] if len(parts) == 1 else join_parts(parts)


def _part(part: object, i: int) -> np.ndarray:
    """``segmentation[i]`` as ``(K, 2)`` float64 points (``K`` may be below 3: the caller skips it).

    Raises:
        SegmentationError: not a flat list of numbers (``true`` is not one), NaN or inf, or an odd number of
            coordinates.
    """
    key = f"segmentation[{i}]"
    if not isinstance(part, list):
        raise SegmentationError(MALFORMED, f"{key} must be a list of x, y coordinates, got {part!r:.60}")
    try:
        values = np.array(part)
    except (ValueError, TypeError):
        values = np.array(None)
    if values.ndim != 1 or values.dtype.kind not in "iuf" or any(isinstance(v, bool) for v in part):
        bad = next((v for v in part if isinstance(v, bool) or not isinstance(v, int | float)), None)
        raise SegmentationError(MALFORMED, f"{key}: non-numeric coordinate {bad!r:.60}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise SegmentationError(NON_FINITE, f"{key}: NaN or inf coordinate")
    if len(values) % 2:
        raise SegmentationError(MALFORMED, f"{key}: {len(values)} coordinates, an odd number: expected x, y pairs")
    return values.reshape(-1, 2)


def _mask_outlines(
    rle: dict, size: tuple[float, float] | None, file: str, where: str, problems: list[Problem]
) -> list[np.ndarray] | None:
    """The outer outlines of an RLE mask of at least 3 points, each ``(K, 2)`` float64 pixel corners as OpenCV
    traces them, or None (warned) when its size is not the image's or it has none.

    Raises:
        SegmentationError: no ``size`` ``[height, width]`` or ``counts``, or counts that do not cover the size.
    """
    shape, counts = rle.get("size"), rle.get("counts")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape)
    ):
        raise SegmentationError(MALFORMED, f"segmentation: an RLE mask needs 'size' [height, width], got {shape!r:.60}")
    h, w = shape
    if size is not None and not (_same(size[0], w) and _same(size[1], h)):
        problems.append(
            warning(file, None, f"{where}: segmentation: RLE mask of {w}x{h}, the image {size[0]}x{size[1]}: "
                    "used as its bbox")
        )  # fmt: skip
        return None
    if size is None and h * w > MAX_MASK_PIXELS:
        raise SegmentationError(MALFORMED, f"segmentation: an RLE mask of {w}x{h} pixels, larger than any photo")
    mask = decode_rle(counts, h, w)
    outlines = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    parts = [c.reshape(-1, 2).astype(np.float64) for c in outlines if len(c) >= 3]
    if not parts:
        problems.append(
            warning(file, None, f"{where}: segmentation: RLE mask with no outline of 3 points: used as its bbox")
        )
        return None
    return parts


def _same(declared: object, side: int) -> bool:
    try:
        return float(declared) == side
    except (TypeError, ValueError):
        return False


def decode_rle(counts: object, h: int, w: int) -> np.ndarray:
    """An RLE mask: ``(h, w)`` uint8, 1 inside. ``counts`` are run lengths of 0 then 1 alternately, column by
    column (COCO's order), as a list or COCO's compressed string.

    Raises:
        SegmentationError: counts of another type, negative, cut short or not adding up to ``h * w``.
    """
    if isinstance(counts, bytes | str):
        runs = _string_counts(counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts)
    elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        runs = counts
    else:
        raise SegmentationError(MALFORMED, f"segmentation: RLE 'counts' must be a list of run lengths or a string, "
                                f"got {counts!r:.60}")  # fmt: skip
    if any(r < 0 for r in runs):
        raise SegmentationError(MALFORMED, f"segmentation: RLE 'counts' has a negative run length {min(runs)}")
    if sum(runs) != h * w:
        raise SegmentationError(
            MALFORMED, f"segmentation: RLE 'counts' cover {sum(runs)} pixels, the {h}x{w} mask {h * w}"
        )
    flat = np.repeat(np.arange(len(runs), dtype=np.uint8) % 2, runs)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def _string_counts(text: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string: each a signed number in 5-bit groups (``chr(48 + group)``,
    bit 6 set while more groups follow), from the third on added to the run two before it.

    Raises:
        SegmentationError: a character out of the code's range, or a number cut short.
    """
    runs: list[int] = []
    i = 0
    while i < len(text):
        value = shift = 0
        while True:
            if i >= len(text):
                raise SegmentationError(MALFORMED, "segmentation: RLE 'counts' string cut short")
            group = ord(text[i]) - 48
            if not 0 <= group < 64:
                raise SegmentationError(MALFORMED, f"segmentation: RLE 'counts' has {text[i]!r}, not a COCO RLE code")
            value |= (group & 0x1F) << shift
            shift += 5
            i += 1
            if not group & 0x20:
                if group & 0x10:
                    value -= 1 << shift
                break
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Several ``(K_i, 2)`` polygons joined into one ``(M, 2)``, as the package's ``merge_multi_segment``:
    consecutive parts are linked at their closest pair of points (the first pair in index order); the first part
    is walked around from its link and the next one entered, each middle part walked forward from its entry to its
    exit (the shorter way by index), the last part around, and the middles walked back from their exits."""
    links = [_closest(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
    ahead, back = [], []
    for i, part in enumerate(parts):
        if i in (0, len(parts) - 1):
            start = links[0][0] if i == 0 else links[-1][1]
            ahead.append(_ring(part, start))
            continue
        enter, leave = links[i - 1][1], links[i][0]
        if enter > leave:
            part, enter, leave = part[::-1], len(part) - 1 - enter, len(part) - 1 - leave
        ring = _ring(part, enter)
        ahead.append(ring[: leave - enter + 1])
        back.append(ring[leave - enter :])
    return np.concatenate(ahead + back[::-1])


def _ring(part: np.ndarray, start: int) -> np.ndarray:
    """``(K + 1, 2)``: the polygon's points from ``start`` round to ``start`` again."""
    rolled = np.roll(part, -start, axis=0)
    return np.concatenate([rolled, rolled[:1]])


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices of the closest points of ``(N, 2)`` ``a`` and ``(M, 2)`` ``b`` (the first such pair, row-major)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return int(i), int(j)
