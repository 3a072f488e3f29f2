"""Validation of one image and its labels: the record type, problems, and why an image is left out.

An image is *used* when the image file reads and its label file (YOLO txt), annotation (VOC XML)
or annotations (COCO JSON) have no ``error``; it is then an :class:`ImageRecord`. An image with
any error is *left out*, in training and in validation, and counted under the ``kind`` of its
first error (``"class out of range"``, ``"malformed line"``, ...): training on a photo whose
objects were dropped would teach the model that nothing is there. A ``warning`` means the item
was repaired and the image is used (a box clipped to the image, a duplicate box dropped, a
16-bit or RGBA image read as 8-bit RGB, a VOC image without XML used as a background).

This is YOLOv5's and Ultralytics' rule (a corrupt label file drops its image); unlike them the
problems are collected per file and line instead of one message per image.
"""

from __future__ import annotations

import math
import os
import xml.parsers.expat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image

from yolotr.file_sniff import describe_non_image

TRUNCATED_JPEG = "truncated JPEG (no end marker)"
WIDE_TIFF = "OpenCV (what training and prediction read images with) cannot read 32-bit samples: save it as 8- or 16-bit"
CLIP_TOLERANCE = 1.0  # pixels a box may stick out of its image before a warning is reported
PIXEL_LIKE = 4.0  # a YOLO coordinate above this (fractions, 0 to 1; a box may stick out a little) is a pixel

# The kinds of error, as the summary names them (``12 left out (5 class out of range, ...)``).
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
UNREADABLE_LABEL = "unreadable label file"
MALFORMED = "malformed line"
NON_FINITE = "NaN or inf"
CLASS_RANGE = "class out of range"
UNKNOWN_CLASS = "unknown class"
EMPTY_BOX = "empty box"
OUTSIDE = "box outside the image"
ORPHAN_LABEL = "label without image"
UNKNOWN_IMAGE = "annotation of unknown image"


@dataclass
class ImageRecord:
    """One usable image and its objects.

    Attributes:
        path: image file.
        height, width: image size in pixels after EXIF rotation (as ``cv2.imread`` returns it).
        boxes: ``(N, 4)`` float32 ``xyxy`` in pixels, inside the image, positive size.
        classes: ``(N,)`` int64 class indices into the dataset's ``names``.
        segments: the objects' polygons (YOLO polygon rows, COCO segmentations), ``N`` float32 ``(K_i, 2)`` point
            arrays in pixels clipped to the image (``K_i = 0`` for an object given as a box), or empty when the
            image has none.
            As in the references, the augmentation warps them and takes the box of what stays in view.
    """

    path: str
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    segments: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.segments = [np.asarray(s, np.float32).reshape(-1, 2) for s in self.segments]
        if self.segments and len(self.segments) != len(self.boxes):
            raise ValueError(f"{self.path}: {len(self.segments)} segments for {len(self.boxes)} boxes")


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    ``error``: the image it belongs to is left out (or, without an image, the file is ignored);
    ``warning``: the item was repaired and is used. ``kind`` is one of this module's error kinds
    (empty for warnings); it is how the summary counts the images left out.
    """

    file: str
    line: int | None
    severity: str
    message: str
    kind: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class Item:
    """An image to validate and where its labels are.

    ``objects`` (COCO only) are the image's annotations, already parsed, as raw objects
    ``(line, where, class, x1, y1, x2, y2[, segmentation])`` in pixels of the ``declared_size`` (the JSON's
    ``width`` and ``height``), ``segmentation`` an annotation's non-empty JSON value, read when the image is
    validated; ``problems`` (COCO only) are the errors found in its annotations while the JSON was read.
    """

    image: str
    label: str | None  # the label file (yolo/voc) or JSON (coco), for messages
    origin: tuple[str, int | None] | None = None  # the list file line that named the image
    objects: list[tuple] | None = None
    problems: list[Problem] = field(default_factory=list)
    declared_size: tuple[float, float] | None = None  # COCO only: the JSON's width and height of the image


class Checked(NamedTuple):
    """The outcome for one :class:`Item`: its record, or None and the kind of error that left it out."""

    record: ImageRecord | None
    problems: list[Problem]
    reason: str | None


def error(file: str, line: int | None, kind: str, message: str) -> Problem:
    return Problem(file, line, "error", message, kind)


def warning(file: str, line: int | None, message: str) -> Problem:
    return Problem(file, line, "warning", message)


# --------------------------------------------------------------------------- images

PIL_SAYS = "unreadable image ("  # the start of a reason that is Pillow's own words, not a named cause
IMAGE_SUFFIXES = frozenset({".avif", ".bmp", ".jp2", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})
"""The image files yolotr reads, in training and in prediction alike (both through OpenCV, checked by Pillow)."""
OPTIONAL_DECODERS = {".avif": "AVIF", ".jp2": "JPEG 2000"}  # formats an OpenCV build may have no decoder for
UNREAD_IMAGE_SUFFIXES = frozenset({".heic", ".heif", ".dng", ".pfm", ".jxl"})  # photos OpenCV does not read


def unread_images_note(paths, where: str) -> str | None:
    """A warning for the photos among ``paths`` (a folder's files) in a format yolotr does not read (HEIC, DNG,
    ...), which a folder's listing leaves out; ``None`` when there is none."""
    counts = Counter(s for s in (Path(p).suffix.lower() for p in paths) if s in UNREAD_IMAGE_SUFFIXES)
    if not counts:
        return None
    listed = ", ".join(f"{n} {suffix}" for suffix, n in sorted(counts.items()))
    return (
        f"{where}: left out {listed} file(s), a format OpenCV (what training and prediction read images with) does "
        f"not decode: convert them to JPEG or PNG (read: {', '.join(sorted(IMAGE_SUFFIXES))})"
    )


def inspect_image(path: str) -> tuple[int, int, Problem | None]:
    """Size after EXIF rotation and the one problem of an image file (``error``: unusable).

    Never raises: whatever PIL raises becomes an ``error`` problem and a size of ``(0, 0)``.
    """
    fmt = None
    try:
        with Image.open(path) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "MPO", "TIFF", "PNG", "WEBP") else 1
            if fmt == "TIFF":  # Pillow 13 opens a TIFF already turned upright: the stored sides are in its tags
                w, h = int(im.tag_v2.get(256, w)), int(im.tag_v2.get(257, h))  # ImageWidth, ImageLength
            if fmt in ("JPEG", "MPO"):
                im.verify()
                if truncated_jpeg(path):
                    return 0, 0, error(path, None, UNREADABLE_IMAGE, f"{TRUNCATED_JPEG}, skipped")
            elif fmt == "TIFF" and (bits := max(_as_tuple(im.tag_v2.get(258, 8)))) > 16:  # BitsPerSample
                return 0, 0, error(path, None, UNREADABLE_IMAGE, f"{bits}-bit TIFF ({mode}): {WIDE_TIFF}, skipped")
            else:
                im.load()
        depth16 = mode.startswith("I") or _png_bit_depth(path) == 16
    except Exception as exc:  # PIL raises many types; the image is skipped with the reason
        if not os.path.exists(path):
            return 0, 0, error(path, None, MISSING_IMAGE, "image file does not exist")
        if truncated_jpeg(path):  # a JPEG cut short (in its headers, before PIL names the format): PIL's words vary
            return 0, 0, error(path, None, UNREADABLE_IMAGE, f"{TRUNCATED_JPEG}, skipped")
        if looks := describe_non_image(path):  # an HTML page saved as .jpg, a HEIC photo, ...
            return 0, 0, error(path, None, UNREADABLE_IMAGE, f"not a readable image: it looks like {looks}, skipped")
        return 0, 0, error(path, None, UNREADABLE_IMAGE, f"{PIL_SAYS}{type(exc).__name__}: {exc}), skipped")
    if w < 2 or h < 2:
        return 0, 0, error(path, None, UNREADABLE_IMAGE, f"image of {w}x{h} pixels, skipped")
    if (kind := OPTIONAL_DECODERS.get(Path(path).suffix.lower())) and not cv2.haveImageReader(str(path)):
        return 0, 0, error(path, None, UNREADABLE_IMAGE, f"{kind} image: this OpenCV (what training and prediction "
                           "read images with) has no decoder for it: convert it to JPEG or PNG, skipped")  # fmt: skip
    notes = []
    if orientation in (5, 6, 7, 8) and w != h and not _opencv_turns(path, w, h, fmt):
        notes.append(
            f"orientation {orientation} in its metadata, which OpenCV does not apply (not in the EXIF block OpenCV "
            f"reads: XMP, or a PNG text profile): used as stored, {w}x{h}"
        )
    elif orientation in (5, 6, 7, 8):
        notes.append(f"EXIF orientation {orientation}: stored {w}x{h}, used rotated {h}x{w}")
        w, h = h, w
    elif orientation not in (1, 2, 3, 4):
        notes.append(f"invalid EXIF orientation {orientation!r} ignored")
    kind = []
    if depth16:
        kind.append("16-bit")
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        kind.append("greyscale")
    alpha = " with alpha" if mode in ("RGBA", "LA", "PA", "RGBa", "La") else ""
    if kind or alpha:
        notes.append(f"{' '.join([*kind, 'image'])}{alpha} ({mode}) read as 8-bit RGB")
    return h, w, (warning(path, None, "; ".join(notes)) if notes else None)


def _opencv_turns(path: str, w: int, h: int, fmt: str | None) -> bool:
    """Whether OpenCV, which reads every training and prediction image, turns a ``w x h`` image (``w != h``) a
    quarter as its orientation 5-8 says. Pillow also reads an orientation from XMP and from a PNG's text
    profile, which OpenCV does not apply: sizing such an image as turned stretched it in training. A JPEG is
    decoded at an eighth of the size (scaled in the decoder; OpenCV turns other formats only when decoded whole);
    when OpenCV cannot decode it, the EXIF answer stands."""
    flags = cv2.IMREAD_REDUCED_COLOR_8 if fmt in ("JPEG", "MPO") else cv2.IMREAD_COLOR
    try:
        image = cv2.imdecode(np.fromfile(path, np.uint8), flags)
    except (cv2.error, OSError, ValueError):
        image = None
    if image is None or image.shape[0] == image.shape[1]:
        return True
    return (image.shape[0] > image.shape[1]) == (w > h)


def truncated_jpeg(path: str | os.PathLike) -> bool:
    """Whether a file is a JPEG (it starts with ``FF D8``) cut short: its segments and entropy-coded data end
    before the end-of-image marker ``FF D9``.

    OpenCV decodes such a file without an error (the missing part grey), so ``check-data`` (when
    PIL reads its header) and prediction (when OpenCV decodes it) both call it unreadable. A whole JPEG
    with data after its end marker (a Samsung trailer, a Motion Photo's video) is not cut short. Decided from
    the bytes alone (the marker in the last 64 bytes, else a walk of the segments), so Pillow's
    ``LOAD_TRUNCATED_IMAGES`` does not change the answer.
    """
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False
        f.seek(-min(64, os.path.getsize(path)), 2)
        if b"\xff\xd9" in f.read():
            return False
        f.seek(0)
        return not _reaches_end_marker(f.read())


def _reaches_end_marker(data: bytes) -> bool:
    """Whether JPEG ``data`` reaches its ``FF D9``: marker segments are skipped by their lengths (an EXIF
    thumbnail's own end marker is inside one), entropy-coded data up to the next marker that is neither a
    stuffed ``FF 00`` nor a restart ``FF D0..D7``."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, restart, TEM: no length
            i += 1 if marker == 0xFF else 2
            continue
        if i + 4 > n:
            return False
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return False
                if data[j + 1] == 0x00 or 0xD0 <= data[j + 1] <= 0xD7:
                    i = j + 2
                    continue
                i = j
                break
    return False


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 25 else 8


# --------------------------------------------------------------------------- labels


def _broken_link(label: str, problems: list[Problem]) -> bool:
    """Whether a label file that is not there is a broken link (an error added): meant to be there, so its
    image is left out rather than trained as a background."""
    if not os.path.islink(label):
        return False
    problems.append(error(label, None, UNREADABLE_LABEL, f"the label file is a broken link (to {os.readlink(label)})"))
    return True


def read_yolo(label: str, w: int, h: int, problems: list[Problem], keypoint_values: int = 0) -> list[tuple] | None:
    """Raw objects of a YOLO txt (pixels), or None when the file does not exist (a background image). An object is
    ``(line, "", class, x1, y1, x2, y2)``, and a polygon's has its ``(K, 2)`` float32 points in pixels after them.

    Lines that cannot be parsed are reported as errors and not returned. With ``keypoint_values`` (a pose
    dataset's ``kpt_shape`` product, e.g. 17 x 3 = 51) a row of ``5 + keypoint_values`` columns is a box followed
    by its keypoints: its box is kept, as the package does for a detection task; without it such a row would
    read as a polygon and give a wrong box.
    """
    try:
        text = Path(label).read_text(encoding="utf-8-sig")  # Windows Notepad starts with a BOM
    except FileNotFoundError:
        return [] if _broken_link(label, problems) else None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(error(label, None, UNREADABLE_LABEL, f"unreadable label file ({exc})"))
        return []
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if keypoint_values and len(cols) == 5 + keypoint_values:
            cols = cols[:5]
        if len(cols) != 5 and not (len(cols) >= 7 and len(cols) % 2 == 1):
            hint = "; the values are separated by commas, YOLO labels by spaces" if "," in line else ""
            problems.append(
                error(label, n, MALFORMED, f"{len(cols)} columns; expected 5 (class cx cy w h) or a polygon{hint}")
            )
            continue
        try:
            values = [float(c) for c in cols]
        except ValueError:
            problems.append(error(label, n, MALFORMED, f"non-numeric value in {line.strip()!r}"))
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append(error(label, n, NON_FINITE, f"NaN or inf in {line.strip()!r}"))
            continue
        cls = values[0]
        if max(abs(v) for v in values[1:]) > PIXEL_LIKE:
            largest = max(values[1:], key=abs)  # -250 as well as 250
            problems.append(
                error(label, n, OUTSIDE, f"coordinates up to {largest:g} in {line.strip()!r}: they look like "
                      "pixels; YOLO labels are fractions of the image side, 0 to 1")
            )  # fmt: skip
            continue
        if len(cols) == 5:
            cx, cy, bw, bh = values[1:]
            x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
        else:  # a polygon: its box, and its points, which the augmentation warps (the box of the visible part)
            xs, ys = np.array(values[1::2]) * w, np.array(values[2::2]) * h
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
            points = np.stack((xs, ys), 1).round(2).astype(np.float32)  # to 0.01 px, as the label cache keeps them
            objects.append((n, "", cls, x1, y1, x2, y2, points))
            continue
        objects.append((n, "", cls, x1, y1, x2, y2))
    return objects


def read_voc(label: str, names: list[str], problems: list[Problem], w: int, h: int) -> list[tuple] | None:
    """Raw objects of a VOC XML with their line numbers, or None when the file does not exist.

    An object is an ``<object>`` child of the root; only its own ``<name>`` and the corners of its
    own ``<bndbox>`` are read, so the ``<part>`` children of VOC person objects (a head, a hand,
    each with a name and box of its own) are ignored. As in the package's and YOLOv5's VOC converters, an
    object marked ``<difficult>1</difficult>`` is left out, and one whose ``<name>`` is not in ``names`` is
    left out with a warning (a set trained on some of VOC's classes keeps its images). When the XML's
    ``<size>`` differs from the image's ``w x h`` (the image was resized after it was annotated), the boxes
    are scaled from ``<size>`` to the image, as the package's VOC converter does by normalising with
    ``<size>``, with a warning; a ``<size>`` with the sides swapped (an EXIF turn one of the tools did not
    apply) is only warned about.
    """
    if not os.path.exists(label):
        return [] if _broken_link(label, problems) else None
    objects: list[tuple] = []
    stack: list[str] = []
    current: dict[str, Any] = {}
    size: dict[str, str] = {}
    text: list[str] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, _attrs: dict) -> None:
        stack.append(tag)
        text.clear()
        if tag == "object" and len(stack) == 2:
            current.clear()
            current["line"] = parser.CurrentLineNumber

    def end(tag: str) -> None:
        value = "".join(text).strip()
        text.clear()
        stack.pop()
        if stack[1:] == ["object"] and tag in ("name", "difficult"):
            current[tag] = value
        elif stack[1:] == ["object", "bndbox"] and tag in ("xmin", "ymin", "xmax", "ymax"):
            current[tag] = value
        elif stack[1:] == ["size"] and tag in ("width", "height"):
            size[tag] = value
        elif tag == "object" and len(stack) == 1:
            objects.append(dict(current))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        with open(label, "rb") as f:
            parser.ParseFile(f)
    except (OSError, xml.parsers.expat.ExpatError) as exc:
        problems.append(error(label, getattr(exc, "lineno", None), UNREADABLE_LABEL, f"unreadable XML ({exc})"))
        return []
    index = {n: i for i, n in enumerate(names)}
    declared = (size["width"], size["height"]) if {"width", "height"} <= size.keys() else None
    sx, sy = size_scale(label, declared, w, h, problems, "<size>")
    out = []
    for obj in objects:
        line, name = obj["line"], obj.get("name", "")
        if _is_difficult(obj.get("difficult", "")):
            continue
        if name not in index:
            problems.append(warning(label, line, f"class {name!r} is not in names {names}, its box skipped"))
            continue
        try:
            x1, y1, x2, y2 = (float(obj[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, ValueError):
            problems.append(error(label, line, MALFORMED, "bndbox needs numeric xmin, ymin, xmax, ymax"))
            continue
        out.append((line, "", index[name], (x1 - 1) * sx, (y1 - 1) * sy, x2 * sx, y2 * sy))
    return out


def _is_difficult(text: str) -> bool:
    """VOC's ``<difficult>``: 1 (or ``1.0``, ``true``, as some exporters write it) marks a difficult object."""
    try:
        return float(text) == 1
    except ValueError:
        return text.strip().lower() == "true"


def size_scale(
    label: str, declared: tuple[float, float] | None, w: int, h: int, problems: list[Problem], what: str
) -> tuple[float, float]:
    """``(x, y)`` factors from the image size an annotation file declares (VOC's ``<size>``, a COCO image's
    ``width`` and ``height``; ``what`` names it in the warning) to the image's ``w x h``: 1 when they agree, when
    none is declared or it is not positive numbers, or when its sides are the image's swapped (warned)."""
    if declared is None:
        return 1.0, 1.0
    try:
        sw, sh = float(declared[0]), float(declared[1])
    except (TypeError, ValueError):
        return 1.0, 1.0
    if not (sw > 0 and sh > 0) or (sw, sh) == (w, h):
        return 1.0, 1.0
    if (sw, sh) == (h, w):
        problems.append(
            warning(label, None, f"{what} is {sw:g}x{sh:g}, the image {w}x{h} (turned?): boxes used as given")
        )
        return 1.0, 1.0
    problems.append(
        warning(label, None, f"{what} is {sw:g}x{sh:g}, the image {w}x{h} (resized?): boxes scaled to the image")
    )
    return w / sw, h / sh
