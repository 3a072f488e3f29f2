"""The built-in "shapes" dataset: deterministic images of coloured shapes, boxes and captions.

Each image has 1-4 filled shapes (:data:`SHAPE_NAMES`, the classes) in one of
:data:`COLOUR_NAMES`, small or large, on a smooth textured background; later shapes may hide part
of earlier ones (never more than 40% of one). Boxes are the tight boxes of the whole shape,
hidden parts included. The caption is a function of the content only, at most 12 words:

- one or two shapes, left to right: ``"a large red circle and a small blue square"``;
- three or four: counted by colour and shape, left to right by first appearance
  (``"two red circles and a blue triangle"``), or by shape alone when that would exceed
  12 words (``"two circles, a square and a triangle"``).

``load_dataset_config("shapes")`` generates the default set into ``$YOLOTR_CACHE/shapes``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolotr.errors import DataError

SHAPE_NAMES = ("circle", "square", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow", "purple")
_RGB = np.array([(215, 35, 35), (30, 160, 50), (35, 70, 215), (240, 200, 20), (135, 45, 175)], np.float64)
_NUMBERS = {2: "two", 3: "three", 4: "four"}
_MAX_WORDS = 12
_VERSION = 1
_VAL_OFFSET = 1_000_000


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Light, low-saturation, smooth texture with faint stripes and noise: ``(size, size, 3)`` float32."""
    base = rng.uniform(165, 215) + rng.uniform(-12, 12, 3)
    grid = rng.uniform(-25, 25, (6, 6, 1)) + rng.uniform(-8, 8, (6, 6, 3))
    coarse = cv2.resize(grid.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    theta, period = rng.uniform(0, np.pi), rng.uniform(size / 12, size / 4)
    a = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi / period)
    u, v = a * np.float32(np.cos(theta)), a * np.float32(np.sin(theta))
    stripes = 8 * (np.outer(np.cos(v), np.sin(u)) + np.outer(np.sin(v), np.cos(u)))
    fine = rng.standard_normal((size, size, 1), dtype=np.float32) * 4
    return (coarse + stripes[..., None] + fine + base.astype(np.float32)).astype(np.float32)


def _shape_mask(shape: int, centre: np.ndarray, side: float, angle: float, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cx, cy = centre
    if shape == 0:
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(side / 2)), 1, -1)
        return mask
    if shape == 1:
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * side / 2
    else:
        corners = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([-90, 30, 150])]) * side / np.sqrt(3)
        corners[:, 1] += side * 0.12
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    pts = corners @ np.array([[c, s], [-s, c]]) + (cx, cy)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _caption(objects: list[tuple[int, int, bool, float]]) -> str:
    """Caption of ``(shape, colour, large, x_centre)`` objects (see the module docstring)."""
    objects = sorted(objects, key=lambda o: o[3])
    if len(objects) <= 2:
        parts = [f"a {'large' if o[2] else 'small'} {COLOUR_NAMES[o[1]]} {SHAPE_NAMES[o[0]]}" for o in objects]
        return " and ".join(parts)
    text = _counted([(COLOUR_NAMES[o[1]], SHAPE_NAMES[o[0]]) for o in objects])
    if len(text.replace(",", "").split()) > _MAX_WORDS:
        text = _counted([(None, SHAPE_NAMES[o[0]]) for o in objects])
    return text


def _counted(keys: list[tuple[str | None, str]]) -> str:
    counts: dict[tuple[str | None, str], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    phrases = []
    for (colour, shape), n in counts.items():
        words = [_NUMBERS[n] if n > 1 else "a"] + ([colour] if colour else []) + [shape + ("s" if n > 1 else "")]
        phrases.append(" ".join(words))
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def generate_sample(index: int, imgsz: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Sample ``index`` of the stream ``seed``, identical on every machine and call.

    Returns:
        ``(imgsz, imgsz, 3)`` uint8 RGB image, ``(N, 4)`` float32 xyxy pixel boxes, ``(N,)`` int64
        classes (indices into :data:`SHAPE_NAMES`) and the caption.
    """
    rng = np.random.default_rng([seed, index])
    canvas = _background(rng, imgsz)
    n = int(rng.integers(1, 5))
    visible: list[np.ndarray] = []
    objects, boxes, classes = [], [], []
    for _ in range(n):
        for _attempt in range(30):
            shape, colour = int(rng.integers(len(SHAPE_NAMES))), int(rng.integers(len(COLOUR_NAMES)))
            large = bool(rng.random() < 0.5)
            side = imgsz * (rng.uniform(0.26, 0.36) if large else rng.uniform(0.14, 0.2))
            centre = rng.uniform(side * 0.6, imgsz - side * 0.6, 2)
            angle = rng.uniform(0, 360) if shape == 2 else rng.uniform(-20, 20)
            mask = _shape_mask(shape, centre, side, angle, imgsz).astype(bool)
            if mask.sum() < 16 or any((v & mask).sum() > 0.4 * v.sum() for v in visible if v.any()):
                continue
            shade = (_RGB[colour] + rng.uniform(-15, 15, 3)).astype(np.float32)
            box = _box(mask)
            x1, y1 = max(int(box[0]) - 2, 0), max(int(box[1]) - 2, 0)
            roi = np.s_[y1 : int(box[3]) + 2, x1 : int(box[2]) + 2]
            soft = cv2.GaussianBlur(mask[roi].astype(np.float32), (3, 3), 0)[..., None]
            canvas[roi] = canvas[roi] * (1 - soft) + shade * soft
            visible = [v & ~mask for v in visible] + [mask]
            objects.append((shape, colour, large, float(centre[0])))
            boxes.append(box)
            classes.append(shape)
            break
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), _caption(objects)


def make_shapes_dataset(
    root: str | os.PathLike, n_train: int = 256, n_val: int = 64, imgsz: int = 256, seed: int = 0
) -> Path:
    """Write the shapes dataset in YOLO format into ``root`` and return its ``data.yaml``.

    Layout: ``images/{train,val}/NNNNNN.jpg``, ``labels/{train,val}/NNNNNN.txt``,
    ``captions.json`` (image path relative to ``root`` -> caption), ``data.yaml`` and
    ``shapes.json`` (the parameters). A ``root`` already generated with the same parameters is
    reused as is; one generated with other parameters is replaced; any other non-empty folder
    is left alone (:class:`DataError`).
    """
    root = Path(root).expanduser().resolve()
    params = {"version": _VERSION, "n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed}
    if _generated_with(root) == params:
        return root / "data.yaml"
    if root.exists() and any(root.iterdir()) and _generated_with(root) is None:
        raise DataError(f"{root}: not empty and not a shapes dataset; choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    captions = {}
    for split, count, offset in (("train", n_train, 0), ("val", n_val, _VAL_OFFSET)):
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image, boxes, classes, caption = generate_sample(offset + i, imgsz, seed)
            name = f"{i:06d}"
            cv2.imwrite(str(tmp / "images" / split / f"{name}.jpg"), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / imgsz
            lines = [f"{c} " + " ".join(f"{v:.6f}" for v in row) for c, row in zip(classes, cxcywh)]
            (tmp / "labels" / split / f"{name}.txt").write_text("".join(f"{x}\n" for x in lines))
            captions[f"images/{split}/{name}.jpg"] = caption
    (tmp / "captions.json").write_text(json.dumps(captions, indent=0))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": list(SHAPE_NAMES)}
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp / "shapes.json").write_text(json.dumps(params))
    if _generated_with(root) is not None:
        shutil.rmtree(root, ignore_errors=True)
    elif root.exists():
        root.rmdir()
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _generated_with(root) != params:
            raise DataError(f"{root}: another process is writing a different shapes dataset here") from None
    return root / "data.yaml"


def _generated_with(root: Path) -> dict | None:
    try:
        return json.loads((root / "shapes.json").read_text())
    except (OSError, ValueError):
        return None
