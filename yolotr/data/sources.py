"""Dataset sources: YOLO txt, COCO JSON and Pascal VOC XML -> one validated record type.

A dataset YAML follows the Ultralytics/YOLOv5 convention, plus optional keys::

    path: ../datasets/raccoon   # root; relative to the YAML's folder (default: that folder)
    train: train.txt            # a folder of images, a list file of image paths or stems,
    val: val.txt                #   an image, a COCO JSON, or a list of those
    names: [raccoon]            # or {0: raccoon}, or nc: 1 (names become class0, class1, ...)
    format: voc                 # yolo (default; coco when the splits name .json files) | coco | voc
    images: images              # folder that stems and COCO file_names are relative to
                                #   (default <path>/images)
    annotations: annotations    # voc only: folder of <stem>.xml (default <path>/annotations)

Labels per format:

- ``yolo``: ``<class> <cx> <cy> <w> <h>`` normalized to the image, one object per line, at the
  image path with the last ``images`` folder replaced by ``labels`` and the suffix by ``.txt``.
  A line with an odd number >= 7 of columns is a polygon (``class x1 y1 x2 y2 ...``) and becomes
  its bounding box. A missing label file is a background image.
- ``coco``: each split entry is an instances JSON; ``bbox`` is ``[x, y, w, h]`` in pixels;
  categories map to ``names`` by name (or, without ``names``, to their order sorted by id);
  ``iscrowd`` annotations are skipped.
- ``voc``: one ``<annotations>/<stem>.xml`` per image; ``<name>`` maps to ``names``. VOC corners
  are 1-based inclusive pixel indices, so ``(xmin, ymin, xmax, ymax)`` becomes the continuous box
  ``(xmin - 1, ymin - 1, xmax, ymax)``. ``difficult`` objects are kept.

Every problem is collected as a :class:`Problem` (file, line, severity, message) into one
:class:`DataReport`, like a compiler: an ``error`` skips the item (an image or one object), a
``warning`` means the item was repaired and is used. Results are cached in
``$YOLOTR_CACHE/labels`` (default ``~/.cache/yolotr/labels``) keyed on the sizes and mtimes of
every image, label and list file, so the second start of a training run skips validation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import xml.parsers.expat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from yolotr.errors import DataError

LOGGER = logging.getLogger("yolotr")

IMG_FORMATS = {".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}
FORMATS = ("yolo", "coco", "voc")
CACHE_VERSION = 1
CLIP_TOLERANCE = 1.0  # pixels a box may stick out of its image before a warning is reported


@dataclass
class ImageRecord:
    """One usable image and its objects.

    Attributes:
        path: image file.
        height, width: image size in pixels after EXIF rotation (as ``cv2.imread`` returns it).
        boxes: ``(N, 4)`` float32 ``xyxy`` in pixels, inside the image, positive size.
        classes: ``(N,)`` int64 class indices into the dataset's ``names``.
    """

    path: str
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: ``error`` skips the item, ``warning`` repaired it."""

    file: str
    line: int | None
    severity: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.message}"


@dataclass
class DataReport:
    """Everything :func:`load_records` found about one split."""

    split: str
    names: list[str]
    n_images: int = 0
    n_usable: int = 0
    n_boxes: int = 0
    n_background: int = 0
    problems: list[Problem] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def headline(self) -> str:
        return (
            f"{self.split}: {self.n_usable}/{self.n_images} images usable, {self.n_boxes} boxes, "
            f"{self.n_background} backgrounds, {len(self.errors)} errors, {len(self.warnings)} warnings"
        )

    def summary(self, max_problems: int | None = None) -> str:
        """The problems, one per line (``file:line: severity: message``), then the headline."""
        shown = self.problems if max_problems is None else self.problems[:max_problems]
        lines = [str(p) for p in shown]
        if len(shown) < len(self.problems):
            lines.append(f"... and {len(self.problems) - len(shown)} more (run `yolotr check-data`)")
        lines.append(self.headline())
        return "\n".join(lines)


@dataclass
class DatasetConfig:
    """A resolved dataset YAML. ``splits`` maps a split name to its entries (absolute paths)."""

    root: Path
    names: list[str]
    format: str
    splits: dict[str, list[str]]
    images: Path
    annotations: Path
    source: str = "<dict>"

    @property
    def nc(self) -> int:
        return len(self.names)


def cache_dir() -> Path:
    """``$YOLOTR_CACHE`` or ``~/.cache/yolotr``."""
    return Path(os.environ.get("YOLOTR_CACHE") or Path.home() / ".cache" / "yolotr")


def load_dataset_config(data: str | os.PathLike | dict | DatasetConfig) -> DatasetConfig:
    """Read a dataset YAML (a path, a dict, or ``"shapes"`` for the built-in dataset).

    Raises:
        DataError: naming the file and key when the YAML cannot be used.
    """
    if isinstance(data, DatasetConfig):
        return data
    if isinstance(data, str) and data == "shapes":
        from yolotr.data.synthetic import make_shapes_dataset

        data = make_shapes_dataset(cache_dir() / "shapes")
    if isinstance(data, dict):
        return _parse_config(data, Path.cwd(), "<dict>")
    file = Path(data)
    if not file.is_file():
        raise DataError(f"{file}: dataset YAML not found (give a path to a YAML file, or 'shapes')")
    try:
        cfg = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{file}: cannot read dataset YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{file}: a dataset YAML must be a mapping with path, train, val and names")
    return _parse_config(cfg, Path(os.path.abspath(file)).parent, str(file))


def _parse_config(cfg: dict, base: Path, source: str) -> DatasetConfig:
    root = Path(cfg.get("path") or ".").expanduser()
    root = Path(os.path.abspath(root if root.is_absolute() else base / root))
    names = _parse_names(cfg, source)
    splits: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        entries = cfg.get(split)
        if entries is None:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        resolved = []
        for entry in entries:
            if not isinstance(entry, str | os.PathLike):
                raise DataError(f"{source}: key '{split}': expected a path or a list of paths, got {entry!r}")
            p = Path(entry).expanduser()
            resolved.append(str(p if p.is_absolute() else root / p))
        splits[split] = resolved
    if not splits:
        raise DataError(f"{source}: no 'train' or 'val' key: name the images of each split")
    fmt = cfg.get("format")
    if fmt is None:
        all_entries = [e for v in splits.values() for e in v]
        fmt = "coco" if all_entries and all(e.endswith(".json") for e in all_entries) else "yolo"
    if fmt not in FORMATS:
        raise DataError(f"{source}: key 'format': {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "coco" and not names:
        names = _coco_names(splits, source)
    if not names:
        raise DataError(f"{source}: no 'names' or 'nc' key: list the class names")
    return DatasetConfig(
        root=root,
        names=names,
        format=fmt,
        splits=splits,
        images=_sub(root, cfg.get("images"), "images"),
        annotations=_sub(root, cfg.get("annotations"), "annotations"),
        source=source,
    )


def _sub(root: Path, value: Any, default: str) -> Path:
    p = Path(value or default).expanduser()
    return p if p.is_absolute() else root / p


def _parse_names(cfg: dict, source: str) -> list[str]:
    names = cfg.get("names")
    nc = cfg.get("nc")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError(f"{source}: key 'names': ids must be 0..{len(keys) - 1}, got {keys}")
        names = [str(names[k]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is not None:
        raise DataError(f"{source}: key 'names': expected a list or a mapping id -> name")
    if nc is not None:
        if not isinstance(nc, int) or nc < 1:
            raise DataError(f"{source}: key 'nc': expected a positive integer, got {nc!r}")
        if names is None:
            names = [f"class{i}" for i in range(nc)]
        elif len(names) != nc:
            raise DataError(f"{source}: 'nc' is {nc} but 'names' has {len(names)} entries")
    return names or []


def _coco_names(splits: dict[str, list[str]], source: str) -> list[str]:
    for entries in splits.values():
        for entry in entries:
            if entry.endswith(".json") and Path(entry).is_file():
                cats = _read_json(entry).get("categories") or []
                return [str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])]
    raise DataError(f"{source}: no 'names' and no readable COCO JSON to take the categories from")


def _read_json(file: str) -> dict:
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot read COCO JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: a COCO JSON must be an object with images and annotations")
    return data


# --------------------------------------------------------------------------- items of a split


@dataclass
class _Item:
    """An image to validate with its raw objects ``(line, where, class, x1, y1, x2, y2)``."""

    image: str
    label: str | None  # the label file (yolo/voc) or JSON (coco), for messages
    origin: tuple[str, int | None] | None = None  # the list file line that named the image
    objects: list[tuple] | None = None  # coco: already parsed


def _list_images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMG_FORMATS and p.is_file())


def _yolo_label_path(image: str) -> str:
    parts = Path(image).parts
    idx = max((i for i, p in enumerate(parts) if p == "images"), default=None)
    if idx is None:
        return str(Path(image).with_suffix(".txt"))
    return str(Path(*parts[:idx], "labels", *parts[idx + 1 :]).with_suffix(".txt"))


class _StemIndex:
    """Finds ``<images>/<stem>.<ext>`` for list files that give stems."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._index: dict[str, str] | None = None

    def find(self, stem: str) -> str | None:
        if self._index is None:
            self._index = {}
            if self.folder.is_dir():
                for p in sorted(self.folder.iterdir()):
                    if p.suffix.lower() in IMG_FORMATS:
                        self._index.setdefault(p.stem, str(p))
        return self._index.get(stem)


def _split_images(
    config: DatasetConfig, entries: list[str], problems: list[Problem]
) -> list[tuple[str, tuple[str, int | None] | None]]:
    """Image paths of the split, each with the list-file line that named it (or None)."""
    stems = _StemIndex(config.images)
    out: list[tuple[str, tuple[str, int | None] | None]] = []
    for entry in entries:
        p = Path(entry)
        if p.is_dir():
            out.extend((img, None) for img in _list_images(p))
        elif p.suffix.lower() in IMG_FORMATS and p.is_file():
            out.append((str(p), None))
        elif p.is_file():
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"{p}: cannot read image list: {exc}") from None
            for n, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line)
                if q.suffix.lower() in IMG_FORMATS or "/" in line:
                    img = os.path.abspath(q if q.is_absolute() else p.parent / q)
                else:
                    img = stems.find(line) or str(config.images / f"{line}.jpg")
                out.append((img, (str(p), n)))
        else:
            raise DataError(f"{config.source}: split entry {entry} does not exist")
    seen: set[str] = set()
    unique = []
    for img, origin in out:
        if img in seen:
            problems.append(Problem(*(origin or (img, None)), "warning", f"{img} listed twice, kept once"))
            continue
        seen.add(img)
        unique.append((img, origin))
    return unique


def _orphan_labels(entries: list[str], images: set[str], problems: list[Problem]) -> None:
    """Label files in a split folder's ``labels`` counterpart whose image does not exist."""
    for entry in entries:
        if not Path(entry).is_dir():
            continue
        folder = Path(_yolo_label_path(str(Path(entry) / "x.jpg"))).parent
        if not folder.is_dir() or folder == Path(entry):
            continue
        stems = {str(Path(_yolo_label_path(i)).with_suffix("")) for i in images}
        for label in sorted(folder.rglob("*.txt")):
            if str(label.with_suffix("")) not in stems:
                problems.append(Problem(str(label), None, "error", "label file without an image, ignored"))


def _items(config: DatasetConfig, split: str, problems: list[Problem]) -> tuple[list[_Item], list[str]]:
    """The split's items and the extra files (list files, JSONs) the cache must watch."""
    entries = config.splits[split]
    watch = [e for e in entries if Path(e).is_file()]
    if config.format == "coco":
        items: list[_Item] = []
        for entry in entries:
            if not entry.endswith(".json"):
                raise DataError(f"{config.source}: format coco: split '{split}' entry {entry} is not a JSON")
            items.extend(_coco_items(config, entry, problems))
        return items, watch
    images = _split_images(config, entries, problems)
    if config.format == "yolo":
        _orphan_labels(entries, {i for i, _ in images}, problems)
        return [_Item(img, _yolo_label_path(img), origin) for img, origin in images], watch
    return [_Item(img, str(config.annotations / f"{Path(img).stem}.xml"), origin) for img, origin in images], watch


def _coco_items(config: DatasetConfig, file: str, problems: list[Problem]) -> list[_Item]:
    data = _read_json(file)
    cat_to_class: dict[Any, int] = {}
    index = {n: i for i, n in enumerate(config.names)}
    for cat in data.get("categories") or []:
        if cat.get("name") in index:
            cat_to_class[cat.get("id")] = index[cat["name"]]
        else:
            problems.append(
                Problem(file, None, "warning", f"category {cat.get('name')!r} not in names, its boxes skipped")
            )
    objects: dict[Any, list[tuple]] = {}
    for ann in data.get("annotations") or []:
        where = f"annotation id {ann.get('id')}"
        if ann.get("iscrowd"):
            continue
        cid = ann.get("category_id")
        if cid not in cat_to_class:
            if not any(c.get("id") == cid for c in data.get("categories") or []):
                problems.append(Problem(file, None, "error", f"{where}: unknown category_id {cid!r}"))
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            problems.append(Problem(file, None, "error", f"{where}: bbox must be [x, y, w, h], got {bbox!r}"))
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            problems.append(Problem(file, None, "error", f"{where}: non-numeric bbox {bbox!r}"))
            continue
        objects.setdefault(ann.get("image_id"), []).append((None, where, cat_to_class[cid], x, y, x + w, y + h))
    folder = Path(file).parent
    items = []
    for im in data.get("images") or []:
        name = str(im.get("file_name", ""))
        candidates = [config.images / name, folder / name, config.root / name]
        image = next((str(c) for c in candidates if c.is_file()), str(candidates[0]))
        items.append(_Item(image, file, None, objects.pop(im.get("id"), [])))
    for image_id, objs in objects.items():
        problems.append(Problem(file, None, "error", f"{len(objs)} annotations for unknown image_id {image_id!r}"))
    return items


# --------------------------------------------------------------------------- images


def inspect_image(path: str) -> tuple[int, int, Problem | None]:
    """Size after EXIF rotation and the one problem of an image file (``error``: unusable).

    Never raises: whatever PIL raises becomes an ``error`` problem and a size of ``(0, 0)``.
    """
    try:
        with Image.open(path) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            orientation = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "MPO", "TIFF", "PNG", "WEBP") else 1
            if fmt in ("JPEG", "MPO"):
                im.verify()
                with open(path, "rb") as f:
                    f.seek(-min(64, os.path.getsize(path)), 2)
                    if b"\xff\xd9" not in f.read():
                        return 0, 0, Problem(path, None, "error", "truncated JPEG (no end marker), skipped")
            else:
                im.load()
        depth16 = mode.startswith("I") or _png_bit_depth(path) == 16
    except Exception as exc:  # PIL raises many types; the image is skipped with the reason
        if not os.path.exists(path):
            return 0, 0, Problem(path, None, "error", "image file does not exist")
        return 0, 0, Problem(path, None, "error", f"unreadable image ({type(exc).__name__}: {exc}), skipped")
    if w < 2 or h < 2:
        return 0, 0, Problem(path, None, "error", f"image of {w}x{h} pixels, skipped")
    notes = []
    if orientation in (5, 6, 7, 8):
        notes.append(f"EXIF orientation {orientation}: stored {w}x{h}, used rotated {h}x{w}")
        w, h = h, w
    elif orientation not in (1, 2, 3, 4):
        notes.append(f"invalid EXIF orientation {orientation!r} ignored")
    kind = []
    if depth16:
        kind.append("16-bit")
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        kind.append("greyscale")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        kind.append("with alpha")
    if kind:
        notes.append(f"{' '.join(kind)} image ({mode}) read as 8-bit RGB")
    return h, w, (Problem(path, None, "warning", "; ".join(notes)) if notes else None)


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 25 else 8


# --------------------------------------------------------------------------- labels


def _read_yolo(label: str, w: int, h: int, problems: list[Problem]) -> list[tuple] | None:
    """Objects of a YOLO txt, or None when the file does not exist (a background image)."""
    try:
        text = Path(label).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(label, None, "error", f"unreadable label file ({exc}), image used without boxes"))
        return []
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 5 and not (len(cols) >= 7 and len(cols) % 2 == 1):
            problems.append(
                Problem(label, n, "error", f"{len(cols)} columns; expected 5 (class cx cy w h) or a polygon")
            )
            continue
        try:
            values = [float(c) for c in cols]
        except ValueError:
            problems.append(Problem(label, n, "error", f"non-numeric value in {line.strip()!r}"))
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append(Problem(label, n, "error", f"NaN or inf in {line.strip()!r}"))
            continue
        cls = values[0]
        if len(cols) == 5:
            cx, cy, bw, bh = values[1:]
            x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
        else:
            xs, ys = np.array(values[1::2]) * w, np.array(values[2::2]) * h
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
        objects.append((n, "", cls, x1, y1, x2, y2))
    return objects


def _read_voc(label: str, names: list[str], problems: list[Problem]) -> list[tuple] | None:
    """Objects of a VOC XML with their line numbers, or None when the file does not exist."""
    if not os.path.exists(label):
        return None
    objects: list[tuple] = []
    stack: list[str] = []
    current: dict[str, Any] = {}
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
        if len(stack) >= 2 and stack[1] == "object" and tag in ("name", "xmin", "ymin", "xmax", "ymax"):
            current[tag] = value
        elif tag == "object" and len(stack) == 1:
            objects.append(dict(current))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        with open(label, "rb") as f:
            parser.ParseFile(f)
    except (OSError, xml.parsers.expat.ExpatError) as exc:
        problems.append(Problem(label, getattr(exc, "lineno", None), "error", f"unreadable XML ({exc})"))
        return []
    index = {n: i for i, n in enumerate(names)}
    out = []
    for obj in objects:
        line, name = obj["line"], obj.get("name", "")
        if name not in index:
            problems.append(Problem(label, line, "error", f"class {name!r} is not in names {names}"))
            continue
        try:
            x1, y1, x2, y2 = (float(obj[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, ValueError):
            problems.append(Problem(label, line, "error", "bndbox needs numeric xmin, ymin, xmax, ymax"))
            continue
        out.append((line, "", index[name], x1 - 1, y1 - 1, x2, y2))
    return out


def check_boxes(
    file: str, objects: Iterable[tuple], w: int, h: int, nc: int, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate raw objects ``(line, where, class, x1, y1, x2, y2)`` (pixels) of one image.

    Returns ``(boxes (N, 4) float32 xyxy, classes (N,) int64)`` of the usable objects; problems
    (bad class, non-finite, empty, outside, clipped, duplicate) are appended to ``problems``.
    """
    boxes, classes, keys = [], [], set()
    for line, where, cls, x1, y1, x2, y2 in objects:
        pre = f"{where}: " if where else ""
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            problems.append(Problem(file, line, "error", f"{pre}NaN or inf coordinate"))
            continue
        if cls != int(cls) or not 0 <= cls < nc:
            problems.append(Problem(file, line, "error", f"{pre}class {cls:g} out of range 0..{nc - 1}"))
            continue
        if x2 <= x1 or y2 <= y1:
            problems.append(Problem(file, line, "error", f"{pre}box of zero or negative size {x2 - x1:g}x{y2 - y1:g}"))
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            problems.append(Problem(file, line, "error", f"{pre}box wholly outside the {w}x{h} image"))
            continue
        out = max(-x1, -y1, x2 - w, y2 - h)
        if out > 0:
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
            if out > CLIP_TOLERANCE:
                problems.append(Problem(file, line, "warning", f"{pre}box {out:.1f} px outside the image, clipped"))
        key = (int(cls), round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2))
        if key in keys:
            problems.append(Problem(file, line, "warning", f"{pre}duplicate box dropped"))
            continue
        keys.add(key)
        boxes.append((x1, y1, x2, y2))
        classes.append(int(cls))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _validate(config: DatasetConfig, item: _Item) -> tuple[ImageRecord | None, list[Problem]]:
    problems: list[Problem] = []
    if item.origin is not None and not os.path.exists(item.image):
        problems.append(Problem(*item.origin, "error", f"image {item.image} does not exist"))
        return None, problems
    if config.format != "coco" and not os.path.exists(item.image):
        what = "label file" if config.format == "yolo" else "annotation"
        problems.append(Problem(item.label or item.image, None, "error", f"{what} for a missing image {item.image}"))
        return None, problems
    h, w, problem = inspect_image(item.image)
    if problem is not None:
        problems.append(problem)
    if problem is not None and problem.severity == "error":
        return None, problems
    if config.format == "coco":
        objects = item.objects or []
        label = item.label or item.image
    elif config.format == "yolo":
        objects = _read_yolo(item.label, w, h, problems)
        label = item.label
    else:
        objects = _read_voc(item.label, config.names, problems)
        label = item.label
        if objects is None:
            problems.append(Problem(label, None, "warning", f"no annotation for {item.image}: used as background"))
    boxes, classes = check_boxes(label, objects or [], w, h, config.nc, problems)
    return ImageRecord(item.image, h, w, boxes, classes), problems


# --------------------------------------------------------------------------- cache and entry point


def _fingerprint(config: DatasetConfig, items: list[_Item], watch: list[str]) -> str:
    digest = hashlib.sha1(f"{CACHE_VERSION}|{config.format}|{config.names}".encode())
    files = [f for it in items for f in (it.image, it.label if config.format != "coco" else None) if f]
    for f in [*watch, *files]:
        try:
            st = os.stat(f)
            digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{f}|-\n".encode())
    for it in items:
        digest.update(f"{it.origin}".encode())
    return digest.hexdigest()


def _cache_file(config: DatasetConfig, split: str) -> Path:
    key = hashlib.sha1(f"{config.root}|{split}|{config.splits[split]}".encode()).hexdigest()[:16]
    return cache_dir() / "labels" / f"{Path(config.root).name}-{split}-{key}.json"


def _read_cache(file: Path, fingerprint: str) -> tuple[list[ImageRecord], list[Problem], int] | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION or data.get("fingerprint") != fingerprint:
            return None
        records = [ImageRecord(r[0], r[1], r[2], r[3], r[4]) for r in data["records"]]
        problems = [Problem(*p) for p in data["problems"]]
        return records, problems, int(data["n_images"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _write_cache(file: Path, fingerprint: str, records, problems, n_images: int) -> None:
    data = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "n_images": n_images,
        "records": [[r.path, r.height, r.width, r.boxes.tolist(), r.classes.tolist()] for r in records],
        "problems": [[p.file, p.line, p.severity, p.message] for p in problems],
    }
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, file)
    except OSError as exc:
        LOGGER.debug("label cache not written to %s: %s", file, exc)


def load_records(
    config: DatasetConfig | str | dict, split: str = "train", cache: bool = True, workers: int = 8
) -> tuple[list[ImageRecord], DataReport]:
    """Validate one split and return its usable images with a report of every problem.

    Bad images and objects are skipped (``error``) or repaired (``warning``); the problems are
    logged once, as a summary, on the ``yolotr`` logger.

    Raises:
        DataError: the split is not in the YAML, or no image of it is usable.
    """
    config = load_dataset_config(config)
    if split not in config.splits:
        raise DataError(f"{config.source}: no '{split}' key: add the {split} images to the dataset YAML")
    problems: list[Problem] = []
    items, watch = _items(config, split, problems)
    fingerprint = _fingerprint(config, items, watch)
    cache_file = _cache_file(config, split)
    cached = _read_cache(cache_file, fingerprint) if cache else None
    if cached is not None:
        records, found, n_images = cached
    else:
        with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
            results = list(pool.map(lambda it: _validate(config, it), items))
        records = [r for r, _ in results if r is not None]
        found = [p for _, ps in results for p in ps]
        n_images = len(items)
        if cache:
            _write_cache(cache_file, fingerprint, records, found, n_images)
    problems += found
    report = _report(config, split, records, problems, n_images)
    if problems:
        LOGGER.warning("%s: dataset problems:\n%s", config.source, report.summary(max_problems=20))
    if not records:
        raise DataError(f"{config.source}: split '{split}' has no usable image\n{report.summary(max_problems=20)}")
    return records, report


def _report(config: DatasetConfig, split: str, records, problems, n_images: int) -> DataReport:
    counts = np.bincount(
        np.concatenate([r.classes for r in records]) if records else np.zeros(0, np.int64), minlength=config.nc
    )
    return DataReport(
        split=split,
        names=list(config.names),
        n_images=n_images,
        n_usable=len(records),
        n_boxes=int(counts.sum()),
        n_background=sum(len(r.classes) == 0 for r in records),
        problems=list(problems),
        class_counts=[int(c) for c in counts[: config.nc]],
    )
