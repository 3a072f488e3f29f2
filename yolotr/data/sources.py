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
  A line with an odd number >= 7 of columns is a polygon (``class x1 y1 x2 y2 ...``): its bounding box,
  and its points, which the augmentation warps (:attr:`ImageRecord.segments`). A missing label file is a
  background image.
- ``coco``: each split entry is an instances JSON; ``bbox`` is ``[x, y, w, h]`` in pixels;
  categories map to ``names`` by name (or, without ``names``, to their order sorted by id);
  ``iscrowd`` annotations are skipped; a ``segmentation`` (polygons, or a non-crowd RLE mask) becomes the
  object's polygon, as in the package after ``convert_coco(use_segments=True)`` (:mod:`yolotr.data.coco_segments`).
- ``voc``: one ``<annotations>/<stem>.xml`` per image; ``<name>`` maps to ``names``. VOC corners
  are 1-based inclusive pixel indices, so ``(xmin, ymin, xmax, ymax)`` becomes the continuous box
  ``(xmin - 1, ymin - 1, xmax, ymax)``. ``difficult`` objects, and objects of a class not in ``names``
  (a warning), are left out as in the package's VOC converter.

:mod:`yolotr.data.dataset_yaml` reads the YAML; this module lists each split's images and label files (a
COCO JSON is read by :mod:`yolotr.data.coco`); every image is then checked by :mod:`yolotr.data.validation` (an image
with an ``error`` in its labels is left out, a ``warning`` was repaired) and the outcome is cached
by :mod:`yolotr.data.label_cache`. All problems of a split are collected into one
:class:`DataReport`, like a compiler.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from yolotr.data.coco import coco_items
from yolotr.data.dataset_yaml import FORMATS, DatasetConfig, is_json, load_dataset_config
from yolotr.data.label_cache import (
    CACHE_VERSION,
    CachedSplit,
    cache_dir,
    cache_file,
    fingerprint,
    read_cache,
    write_cache,
)
from yolotr.data.label_check import check_boxes, validate_item
from yolotr.data.report import DataReport, split_report
from yolotr.data.validation import (
    CLIP_TOLERANCE,
    IMAGE_SUFFIXES,
    ORPHAN_LABEL,
    UNREAD_IMAGE_SUFFIXES,
    ImageRecord,
    Item,
    Problem,
    error,
    inspect_image,
    unread_images_note,
    warning,
)
from yolotr.errors import DataError, did_you_mean

__all__ = [
    "CACHE_VERSION",
    "CLIP_TOLERANCE",
    "FORMATS",
    "IMG_FORMATS",
    "DataReport",
    "DatasetConfig",
    "ImageRecord",
    "Problem",
    "cache_dir",
    "check_boxes",
    "inspect_image",
    "load_dataset_config",
    "load_records",
    "scan_split",
]

LOGGER = logging.getLogger("yolotr")

IMG_FORMATS = IMAGE_SUFFIXES  # .pfm (float pixels) is not: Pillow cannot check it, training reads 8-bit
LOGGED_PROBLEMS = 5  # problems that load_records logs; `yolotr check-data` lists them all
WHERE_LABELS = {
    "yolo": "YOLO labels are read from a labels/ folder beside images/ (images/a.jpg -> labels/a.txt); "
    "for Pascal VOC XML or a COCO JSON set format: voc or format: coco",
    "voc": "VOC labels are read from annotations/<image stem>.xml (the 'annotations' key moves them)",
    "coco": "COCO labels are the JSON's 'annotations' of each image",
}


# --------------------------------------------------------------------------- items of a split


def _list_images(folder: Path) -> list[str]:
    """The images under ``folder``, at any depth, leaving out hidden files and folders (a name that starts with a
    dot: Jupyter's ``.ipynb_checkpoints`` copies, macOS's ``._`` files), as the package's listing does."""
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMG_FORMATS | UNREAD_IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    if note := unread_images_note(found, str(folder)):  # HEIC photos, ...: said, not silently left out
        LOGGER.warning(note)
    return sorted(str(p) for p in found if p.suffix.lower() in IMG_FORMATS and p.is_file())


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
                lines = p.read_text(encoding="utf-8-sig").splitlines()
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
            problems.append(warning(*(origin or (img, None)), f"{img} listed twice, kept once"))
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
                why = _why_no_image(Path(entry) / label.relative_to(folder).with_suffix(""))
                problems.append(error(str(label), None, ORPHAN_LABEL, f"label file without an image{why}, ignored"))


def _why_no_image(stem: Path) -> str:
    """Why the image of a label's ``stem`` (its path without suffix) was not found, when a file there says:
    a format yolotr does not read, or a broken link; empty otherwise."""
    for candidate in sorted(stem.parent.glob(glob.escape(stem.name) + ".*")) if stem.parent.is_dir() else []:
        if candidate.is_symlink() and not candidate.exists():
            return f" ({candidate.name} is a broken link)"
        if candidate.suffix.lower() not in IMG_FORMATS and candidate.suffix.lower() != ".txt":
            return f" ({candidate.name}: {candidate.suffix} images are not read: {', '.join(sorted(IMG_FORMATS))} are)"
    return ""


def _items(config: DatasetConfig, split: str, problems: list[Problem]) -> tuple[list[Item], list[str]]:
    """The split's items and the extra files (list files, JSONs) the cache must watch."""
    entries = config.splits[split]
    watch = [e for e in entries if Path(e).is_file()]
    if config.format == "coco":
        items: list[Item] = []
        for entry in entries:
            if not is_json(entry):
                raise DataError(f"{config.source}: format coco: split '{split}' entry {entry} is not a JSON")
            items.extend(coco_items(entry, config.names, [config.images, config.root], problems))
        return items, watch
    for entry in entries:
        if is_json(entry):
            raise DataError(
                f"{config.source}: split '{split}' entry {entry} is a JSON, read as COCO only: set 'format: coco' "
                f"(every split then a COCO JSON), or name the split's images (format {config.format})"
            )
    images = _split_images(config, entries, problems)
    if config.format == "yolo":
        _orphan_labels(entries, {i for i, _ in images}, problems)
        return [Item(img, _yolo_label_path(img), origin) for img, origin in images], watch
    return [Item(img, str(config.annotations / f"{Path(img).stem}.xml"), origin) for img, origin in images], watch


# --------------------------------------------------------------------------- entry points


def scan_split(
    config: DatasetConfig | str | dict, split: str = "train", cache: bool = True, workers: int = 8
) -> tuple[list[ImageRecord], DataReport]:
    """Validate one split: its usable images and a report of every problem. Logs nothing.

    Unlike :func:`load_records`, a split without a usable image is returned, not raised.

    Raises:
        DataError: the split is not in the YAML, or its entries cannot be listed.
    """
    config = load_dataset_config(config)
    if split not in config.splits:
        hint = did_you_mean(split, config.splits) or f": add the {split} images to the dataset YAML"
        raise DataError(f"{config.source}: no '{split}' key{hint}")
    problems: list[Problem] = []
    items, watch = _items(config, split, problems)
    key = fingerprint(config.format, config.names, items, watch, config.keypoint_values)
    file = cache_file(config.root, split, config.splits[split])
    found = read_cache(file, key) if cache else None
    if found is None:
        with ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1))) as pool:
            check = functools.partial(
                validate_item, fmt=config.format, names=config.names, keypoint_values=config.keypoint_values
            )
            results = list(pool.map(check, items))
        found = CachedSplit(
            records=[c.record for c in results if c.record is not None],
            problems=[p for c in results for p in c.problems],
            left_out=[(it.image, c.reason) for it, c in zip(items, results) if c.record is None],
            n_images=len(items),
        )
        if cache:
            write_cache(file, key, found)
    return found.records, split_report(split, config.names, found, problems + found.problems)


def load_records(
    config: DatasetConfig | str | dict,
    split: str = "train",
    cache: bool = True,
    workers: int = 8,
    log: bool = True,
) -> tuple[list[ImageRecord], DataReport]:
    """Validate one split and return its usable images with a report of every problem.

    An image whose labels have an error is left out; a warning was repaired and the image is
    used. With ``log``, the split's headline is logged on the ``yolotr`` logger (a warning with
    the first :data:`LOGGED_PROBLEMS` problems when there are any).

    Raises:
        DataError: the split is not in the YAML, or no image of it is usable.
    """
    config = load_dataset_config(config)
    records, report = scan_split(config, split, cache, workers)
    if not records:
        raise DataError(
            f"{config.source}: split '{split}' has no usable image\n" + report.summary(LOGGED_PROBLEMS, config.source)
        )
    if log and report.problems:
        LOGGER.warning("%s", report.summary(LOGGED_PROBLEMS, config.source))
    elif log:
        LOGGER.info("%s", report.headline())
    if log and report.n_boxes == 0:
        LOGGER.warning("%s: %s", config.source, no_box_warning(config, split, len(records)))
    return records, report


def no_box_warning(config: DatasetConfig, split: str, images: int) -> str:
    """The warning for a split in which no image has a box: where its format's labels are read from (VOC XML
    without ``format: voc`` reads as all backgrounds). Training and ``check-data`` both give it."""
    return (
        f"split '{split}' has no box in any of its {images} images (format {config.format}): "
        f"{WHERE_LABELS[config.format]}"
    )
