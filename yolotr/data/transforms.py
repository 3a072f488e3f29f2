"""Image and box transforms: letterbox and stretch (shared by training, validation and prediction) and the
training augmentations (mosaic, random affine, HSV jitter, flips).

Images here are OpenCV's ``(H, W, 3)`` uint8 **BGR**; boxes are ``(N, 4)`` float32 ``xyxy`` in
pixels of the image they come with; classes ``(N,)`` int64 (any per-box integer label travels
with its box, so callers may pass ids to follow boxes through a transform). Every random draw comes
from the ``rng`` argument and none depends on the image content, so the same seed replays the
same geometry on another image of the same size (a mask, for instance).

Derived from YOLOv5's ``utils/augmentations.py`` (``random_perspective``, ``augment_hsv``) and
``load_mosaic``: same parameters and ranges, rewritten as pure functions of an explicit
``numpy.random.Generator``. OpenCV is used because it measured much faster than
``torchvision.transforms.v2`` with ``tv_tensors.BoundingBoxes`` on uint8 images: a 640 -> 320 mosaic
crop with random affine and HSV took 3.5 ms with OpenCV against 36 ms (affine and crop alone)
and 70 ms (with ``ColorJitter``) with torchvision, one thread, 2-core CPU.
"""

from __future__ import annotations

import cv2
import numpy as np

from yolotr.ops.boxes import letterbox_placement


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to ``new_shape`` (the image: YOLOv5's rule, bit for bit).

    Args:
        image: ``(H, W, 3)`` uint8 image.
        new_shape: target ``(height, width)`` or one side for a square.
        color: pad value per channel.
        auto: pad only up to the next multiple of ``stride`` (a "rectangular" letterbox) instead of
            the full ``new_shape`` square.
        scaleup: allow enlarging images smaller than ``new_shape``.
        stride: the model stride the padded size must be a multiple of when ``auto``.

    Returns:
        The padded ``(H', W', 3)`` uint8 image, the scale ratio ``(rw, rh)`` and the padding
        ``(left, top)`` actually added before the image, in whole pixels (as floats). YOLOv5 returns
        the unrounded half padding instead (``dw / 2``, e.g. 5.5 where 5 columns were added), which
        puts labels and mapped-back boxes up to half an input pixel off the image; the ``ultralytics``
        package's ``LetterBox`` reports the applied padding, as this does.
    """
    shape = image.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = max(int(round(shape[1] * r)), 1), max(int(round(shape[0] * r)), 1)  # a 5000 x 3 image keeps a row
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    canvas = (new_unpad[1] + int(dh), new_unpad[0] + int(dw))
    _, (top, left) = letterbox_placement(shape, r, canvas)
    if shape[::-1] != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    bottom, right = canvas[0] - new_unpad[1] - top, canvas[1] - new_unpad[0] - left
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return image, (r, r), (float(left), float(top))


def stretch(
    image: np.ndarray, new_shape: int | tuple[int, int] = 640
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize to exactly ``new_shape`` without keeping the aspect ratio: how the ``ultralytics`` package feeds
    RT-DETR (its ``RTDETRDataset.load_image`` and its predictor's ``LetterBox(scale_fill=True)``), bilinear.

    Same returns as :func:`letterbox`: the ``(H', W', 3)`` image, the ratios ``(rw, rh)`` (they differ unless
    the image is as square as ``new_shape``) and the padding ``(0.0, 0.0)``.
    """
    h0, w0 = image.shape[:2]
    h, w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    if (h0, w0) != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return image, (w / w0, h / h0), (0.0, 0.0)


def fit_image(
    image: np.ndarray, new_shape: int | tuple[int, int], stretched: bool, auto: bool = False, stride: int = 32
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The image as the model's input: :func:`stretch` to ``new_shape`` when ``stretched`` (RT-DETR), else
    :func:`letterbox` (``auto``: to the stride-aligned rectangle). Returns what both return."""
    if stretched:
        return stretch(image, new_shape)
    return letterbox(image, new_shape, auto=auto, stride=stride)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    wh_thr: float = 2.0,
    ar_thr: float = 100.0,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Which boxes survive a transform: ``(N,)`` bool.

    Args:
        before: ``(N, 4)`` xyxy boxes before the transform, scaled to the output's scale.
        after: ``(N, 4)`` xyxy boxes after it (clipped).
        wh_thr: minimum width and height in pixels.
        ar_thr: maximum aspect ratio.
        area_thr: minimum fraction of the area kept.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def mosaic4(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    classes: list[np.ndarray],
    size: int,
    rng: np.random.Generator,
    pad_value: int = 114,
    segments: list[list[np.ndarray]] | None = None,
) -> tuple:
    """Tile four images around a random centre of a ``(2 size, 2 size)`` canvas.

    Args:
        images: four ``(h_i, w_i, 3)`` uint8 images, each at most ``size`` on its long side.
        boxes: four ``(n_i, 4)`` float32 xyxy boxes in pixels of their image.
        classes: four ``(n_i,)`` int64 labels.
        size: the output side of the training image (the canvas is twice as large; crop it back
            with :func:`random_affine` and ``border=-size // 2``).
        rng: the random generator (two draws: the centre).
        segments: optionally, per image its objects' ``(K, 2)`` polygons in pixels (``K = 0`` for a box).

    Returns:
        ``(2 size, 2 size, 3)`` uint8 canvas, ``(N, 4)`` float32 boxes clipped to it (only boxes left with no
        area are dropped), ``(N,)`` labels, and with ``segments`` the kept objects' polygons moved onto the
        canvas and clipped to it (:func:`random_affine` takes the box of the part in view). As YOLOv5's
        ``load_mosaic`` and the package's mosaic, the size and area filter runs once, after the zoom and crop
        of :func:`random_affine`: filtered here too, a box of 1.8 px that the zoom would make 2.7, or a sliver
        that the crop keeps in view, lost its label (4 % of the labels under mosaic on a set of small objects).
    """
    s = size
    xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
    canvas = np.full((2 * s, 2 * s, 3), pad_value, dtype=np.uint8)
    out_boxes, out_classes, out_segments = [], [], []
    for i, (img, b, c) in enumerate(zip(images, boxes, classes)):
        h, w = img.shape[:2]
        if i == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b = 0, 0
        canvas[y1a:y2a, x1a:x2a] = img[y1b : y1b + (y2a - y1a), x1b : x1b + (x2a - x1a)]
        out_boxes.append(np.asarray(b, np.float32).reshape(-1, 4) + np.float32([x1a - x1b, y1a - y1b] * 2))
        out_classes.append(np.asarray(c, np.int64).reshape(-1))
        if segments is not None:  # the part on the canvas (a tile is cut only at the canvas's sides)
            shift = np.float32([x1a - x1b, y1a - y1b])
            for p in segments[i]:
                p = p + shift
                if len(p) and (p.min() < 0 or p.max() > 2 * s):
                    p = clip_polygon(p, 0, 0, 2 * s, 2 * s).astype(np.float32)
                out_segments.append(p)
    clipped = np.concatenate(out_boxes).clip(0, 2 * s)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if segments is not None:  # a polygon whose box reaches the canvas while none of its area does
        had = [len(p) > 0 for i in range(len(images)) for p in segments[i]]
        keep &= np.array([not h or len(p) >= 3 for h, p in zip(had, out_segments)], bool)
    if segments is None:
        return canvas, clipped[keep], np.concatenate(out_classes)[keep]
    return canvas, clipped[keep], np.concatenate(out_classes)[keep], [p for p, k in zip(out_segments, keep) if k]


def random_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
    border: int = 0,
    pad_value: int = 114,
    segments: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate, scale, shear, translate (and optionally warp in perspective) image and boxes.

    The output is ``(H + 2 border, W + 2 border, 3)``: ``border = -size // 2`` crops a mosaic
    canvas back to ``size``. A box becomes the bounding box of its four transformed corners,
    clipped to the output; boxes that become too small (:func:`box_candidates`) are dropped.
    An object with a polygon in ``segments`` (``(K, 2)`` pixels, ``K = 0`` for a box) becomes the box of the
    part of its transformed polygon in view, and is kept while 1 % of its area is (a box: 10 %), as YOLOv5's
    ``random_perspective`` and the package's ``RandomPerspective`` do with segments.

    Args:
        image: ``(H, W, 3)`` uint8.
        boxes: ``(N, 4)`` float32 xyxy pixels; classes: ``(N,)`` int64 labels.
        rng: the random generator (eight numbers drawn, whatever the arguments).
        degrees: rotation range ``+-degrees``; translate: fraction of the output size;
        scale: zoom range ``1 +- scale``; shear: ``+-degrees``; perspective: ``+-`` that value.
    """
    height, width = image.shape[0] + 2 * border, image.shape[1] + 2 * border
    p, angle, zoom, sh, t = (
        rng.uniform(-1, 1, 2) * perspective,
        rng.uniform(-degrees, degrees),
        rng.uniform(1 - scale, 1 + scale),
        rng.uniform(-shear, shear, 2),
        rng.uniform(0.5 - translate, 0.5 + translate, 2),
    )
    centre = np.eye(3)
    centre[:2, 2] = -image.shape[1] / 2, -image.shape[0] / 2
    persp = np.eye(3)
    persp[2, :2] = p
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    shr = np.eye(3)
    shr[0, 1], shr[1, 0] = np.tan(np.deg2rad(sh))
    trans = np.eye(3)
    trans[:2, 2] = t[0] * width, t[1] * height
    m = trans @ shr @ rot @ persp @ centre
    if border != 0 or not np.allclose(m, np.eye(3)):
        value = (pad_value,) * 3
        if perspective:
            image = cv2.warpPerspective(image, m, dsize=(width, height), borderValue=value)
        else:
            image = cv2.warpAffine(image, m[:2], dsize=(width, height), borderValue=value)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return image, boxes, np.asarray(classes, np.int64).reshape(-1)
    area_thr = 0.1
    if segments is not None and any(len(p) for p in segments):
        new, area_thr = _polygon_boxes(segments, boxes, m, bool(perspective), width, height)
    else:
        new = transform_boxes(boxes, m, perspective=bool(perspective), clip=(width, height))
    keep = box_candidates(boxes * zoom, new, area_thr=area_thr)
    return image, new[keep], np.asarray(classes, np.int64)[keep]


def _polygon_boxes(
    segments: list[np.ndarray], boxes: np.ndarray, m: np.ndarray, perspective: bool, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 4)`` transformed boxes: an object with a polygon gets the box of its transformed polygon's part in
    ``[0, w] x [0, h]``, one without its box's (:func:`transform_boxes`); and the ``(N,)`` area thresholds of
    :func:`box_candidates`: 1 % for an object with a polygon, 10 % for one without, as YOLOv5 and the package
    apply them (neither lowers it for a box). All points are mapped at once; :func:`polygon_box` runs only for a
    polygon the border cuts."""
    has = np.array([len(p) > 0 for p in segments])
    out = np.zeros((len(boxes), 4))
    if not has.all():
        out[~has] = transform_boxes(boxes[~has], m, perspective=perspective, clip=(w, h))
    points = transform_points(np.concatenate([p for p in segments if len(p)]), m, perspective)
    starts = np.cumsum([0] + [len(p) for p in segments if len(p)])[:-1]
    low, high = np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts)
    inside = (low >= 0).all(1) & (high[:, 0] <= w) & (high[:, 1] <= h)
    rows = np.flatnonzero(has)
    out[rows] = np.concatenate((low, high), 1)
    cut = np.flatnonzero(~inside)
    if len(cut):
        out[rows[cut]] = polygon_boxes(
            _padded([points[starts[k] : starts[k] + len(segments[rows[k]])] for k in cut]), w, h
        )
    return out.astype(np.float32), np.where(has, 0.01, 0.1)


def _padded(polygons: list[np.ndarray]) -> np.ndarray:
    """``(N, K, 2)``: the ``(K_i, 2)`` polygons, each padded to the longest by repeating its last vertex (a
    zero-length edge, which changes neither the polygon nor :func:`polygon_boxes`' answer)."""
    out = np.empty((len(polygons), max(len(p) for p in polygons), 2))
    for i, p in enumerate(polygons):
        out[i, : len(p)], out[i, len(p) :] = p, p[-1]
    return out


def transform_points(points: np.ndarray, m: np.ndarray, perspective: bool = False) -> np.ndarray:
    """``(K, 2)`` points mapped by the ``(3, 3)`` matrix ``m``: ``(K, 2)`` float64."""
    xy = points.astype(np.float64) @ m[:2, :2].T + m[:2, 2]
    if perspective:
        xy /= (points.astype(np.float64) @ m[2, :2] + m[2, 2])[:, None]
    return xy


def polygon_box(polygon: np.ndarray, w: float, h: float) -> np.ndarray:
    """The ``xyxy`` box of the part of a ``(K, 2)`` polygon (any shape, not self-touching) inside
    ``[0, w] x [0, h]``: ``(4,)`` float64, zeros when no part is inside (:func:`polygon_boxes` for one polygon)."""
    return polygon_boxes(np.asarray(polygon, np.float64).reshape(1, -1, 2), w, h)[0]


def polygon_boxes(polygons: np.ndarray, w: float, h: float) -> np.ndarray:
    """The ``xyxy`` boxes of the parts of ``(N, K, 2)`` polygons (any shape, not self-touching) inside
    ``[0, w] x [0, h]``: ``(N, 4)`` float64, a row of zeros where no part is. Exact, and for all polygons at once:
    a part's extremes are among the polygon's vertices inside, its edges' crossings of the border, and the corners
    of the rectangle inside the polygon (even-odd rule). Unlike the box of :func:`clip_polygon`'s outline, this
    holds for a concave polygon the border cuts into pieces too."""
    polygons = np.asarray(polygons, np.float64)
    x, y = polygons[..., 0], polygons[..., 1]
    if not polygons.size:
        return np.zeros((len(polygons), 4))
    if x.min() >= 0 and y.min() >= 0 and x.max() <= w and y.max() <= h:
        return np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
    points = [polygons]
    found = [(x >= 0) & (x <= w) & (y >= 0) & (y <= h)]
    nx, ny = np.roll(x, -1, 1), np.roll(y, -1, 1)
    for a, b, na, nb, limit, other, across in ((x, y, nx, ny, w, h, False), (y, x, ny, nx, h, w, True)):
        for line in (0.0, limit):  # the edges' crossings of x = 0, x = w (then y = 0, y = h)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (line - a) / (na - a)
                at = b + t * (nb - b)
            found.append((t >= 0) & (t <= 1) & (at >= 0) & (at <= other))
            fixed = np.full_like(at, line)
            points.append(np.stack((at, fixed) if across else (fixed, at), -1))
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64)
    cx, cy = corners[:, 0, None, None], corners[:, 1, None, None]  # (4, 1, 1) against (N, K) edges
    straddle = (y > cy) != (ny > cy)  # (4, N, K): the edges crossing each corner's row
    with np.errstate(divide="ignore", invalid="ignore"):
        at_x = x + (cy - y) * (nx - x) / (ny - y)
    found.append(((straddle & (cx < at_x)).sum(2) % 2 == 1).T)  # (N, 4)
    points.append(np.broadcast_to(corners, (len(polygons), 4, 2)))
    points, found = np.concatenate(points, 1), np.concatenate(found, 1)
    low = np.where(found[..., None], points, np.inf).min(1)
    high = np.where(found[..., None], points, -np.inf).max(1)
    return np.where(found.any(1, keepdims=True), np.concatenate((low, high), 1), 0.0)


def transform_boxes(
    boxes: np.ndarray, m: np.ndarray, perspective: bool = False, clip: tuple[int, int] | None = None
) -> np.ndarray:
    """Map ``(N, 4)`` xyxy boxes by the ``(3, 3)`` matrix ``m``: ``(N, 4)`` float32 xyxy.

    Each box becomes the bounding box of its transformed quadrilateral. With ``clip=(W, H)``
    the quadrilateral is first clipped to the image, so a rotated box cut by the border gets the
    box of its visible part (not the clipped box of the whole quadrilateral, which can be much
    larger); a box wholly outside becomes empty. Without rotation, shear or perspective the
    quadrilateral is the box itself and plain clipping is exact (and much faster).
    """
    n = len(boxes)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)
    xy = xy @ m.T
    quads = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 4, 2)
    x, y = quads[..., 0], quads[..., 1]
    out = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1)
    if clip is None:
        return out.astype(np.float32)
    w, h = clip
    if not perspective and m[0, 1] == 0 and m[1, 0] == 0:
        return np.stack(
            [out[:, 0].clip(0, w), out[:, 1].clip(0, h), out[:, 2].clip(0, w), out[:, 3].clip(0, h)], 1
        ).astype(np.float32)
    cut = ~((out[:, 0] >= 0) & (out[:, 1] >= 0) & (out[:, 2] <= w) & (out[:, 3] <= h))
    if cut.any():
        out[cut] = polygon_boxes(quads[cut], w, h)
    return out.astype(np.float32)


def clip_polygon(polygon: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """The part of a ``(K, 2)`` polygon inside the rectangle ``[x1, x2] x [y1, y2]`` (Sutherland-Hodgman, each
    side of the rectangle in turn): ``(M, 2)``, empty when nothing is inside. Exact for a convex polygon. A
    concave one that the rectangle cuts into pieces comes back as one outline whose pieces are joined along the
    rectangle's sides: its area is right, but those joins may pass through a corner of the rectangle that is not
    in the polygon, so the box of its points can be larger than the part's (:func:`polygon_box` is exact)."""
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    for axis, bound, below in ((0, x1, False), (0, x2, True), (1, y1, False), (1, y2, True)):
        if not len(pts):
            break
        nxt = np.roll(pts, -1, axis=0)
        a, b = pts[:, axis] - bound, nxt[:, axis] - bound
        a_in, b_in = (a <= 0, b <= 0) if below else (a >= 0, b >= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cut = pts + (nxt - pts) * (a / (a - b))[:, None]  # where each edge crosses the side
        both = np.stack((pts, cut), 1)  # (K, 2, 2): each vertex, then its edge's crossing, in order
        keep = np.stack((a_in, a_in != b_in), 1)
        pts = both[keep]
    return pts


def hsv_jitter(
    image: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5
) -> np.ndarray:
    """Multiply hue, saturation and value of a BGR uint8 image by random gains (in place).

    Draws three numbers from ``rng`` whatever the gains. Returns the same ``(H, W, 3)`` array.
    """
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    if not (hgain or sgain or vgain):
        return image
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * r[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=image)
    return image


def flip(image: np.ndarray, boxes: np.ndarray, horizontal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a ``(H, W, C)`` image left-right (or up-down) and its ``(N, 4)`` xyxy boxes. The image is copied by
    ``cv2.flip``: a contiguous copy of numpy's reversed view takes about 50 times as long."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    if horizontal:
        w = image.shape[1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        return cv2.flip(image, 1), boxes
    h = image.shape[0]
    boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return cv2.flip(image, 0), boxes


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    hyp: dict,
    rng: np.random.Generator,
    border: int = 0,
    pad_value: int = 114,
    segments: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training chain after letterbox or mosaic: random affine, HSV jitter, flips
    (:func:`hyp_affine`, then :func:`colour_flips`).

    Args:
        image: ``(H, W, 3)`` uint8 BGR; boxes ``(N, 4)`` float32 xyxy pixels; classes ``(N,)``.
        hyp: ``degrees``, ``translate``, ``scale``, ``shear``, ``perspective``, ``hsv_h``,
            ``hsv_s``, ``hsv_v``, ``flipud``, ``fliplr`` (the keys of ``cfg/default.yaml``).
        border: ``-size // 2`` after :func:`mosaic4`, else 0.
        segments: the objects' polygons (see :func:`random_affine`), or None.

    Returns:
        ``(H + 2 border, W + 2 border, 3)`` uint8 image, boxes and classes of the kept boxes.
    """
    image, boxes, classes = hyp_affine(image, boxes, classes, hyp, rng, border, pad_value, segments)
    image, boxes = colour_flips(image, boxes, hyp, rng)
    return image, boxes, classes


def hyp_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    hyp: dict,
    rng: np.random.Generator,
    border: int = 0,
    pad_value: int = 114,
    segments: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`random_affine` with the ``degrees``, ``translate``, ``scale``, ``shear`` and ``perspective`` of
    ``hyp`` (0 where missing); the arguments and returns of :func:`augment`."""
    return random_affine(
        image,
        boxes,
        classes,
        rng,
        degrees=hyp.get("degrees", 0.0),
        translate=hyp.get("translate", 0.0),
        scale=hyp.get("scale", 0.0),
        shear=hyp.get("shear", 0.0),
        perspective=hyp.get("perspective", 0.0),
        border=border,
        pad_value=pad_value,
        segments=segments,
    )


def colour_flips(
    image: np.ndarray, boxes: np.ndarray, hyp: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """HSV jitter (``hsv_h``, ``hsv_s``, ``hsv_v``; three draws), then the up-down and left-right flips
    (``flipud``, ``fliplr``; two draws) of a ``(H, W, 3)`` uint8 BGR image and its ``(N, 4)`` xyxy boxes, then
    with probability ``bgr`` (the package's; a draw only when above 0) its blue and red channels swapped, so that
    the model gets it in BGR order."""
    image = hsv_jitter(image, rng, hyp.get("hsv_h", 0.0), hyp.get("hsv_s", 0.0), hyp.get("hsv_v", 0.0))
    ud, lr = rng.random(2)
    if ud < hyp.get("flipud", 0.0):
        image, boxes = flip(image, boxes, horizontal=False)
    if lr < hyp.get("fliplr", 0.0):
        image, boxes = flip(image, boxes, horizontal=True)
    if hyp.get("bgr", 0.0) > 0 and rng.random() < hyp["bgr"]:
        image = np.ascontiguousarray(image[..., ::-1])
    return image, boxes
