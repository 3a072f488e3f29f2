"""COCO: the 80 class names of the COCO-trained YOLO checkpoints, and reading an instances JSON.

An instances JSON is an object with ``images`` (each with an ``id`` and a ``file_name``),
``annotations`` (``image_id``, ``category_id``, ``bbox`` as ``[x, y, w, h]`` in pixels, optional
``iscrowd`` 0 or 1; crowd annotations are skipped; optional ``segmentation``, read by
:mod:`yolotr.data.coco_segments`) and ``categories`` (an integer ``id`` and a ``name``). A JSON whose
shape is wrong raises :class:`~yolotr.errors.DataError` naming the file, the entry and the key; a problem of
one annotation goes with its image, which is then left out.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from yolotr.data.validation import MALFORMED, UNKNOWN_CLASS, UNKNOWN_IMAGE, Item, Problem, error, warning
from yolotr.errors import DataError

COCO_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)


def read_json(file: str) -> dict:
    """The top-level object of a COCO JSON.

    Raises:
        DataError: naming the file when it cannot be read or is not a JSON object.
    """
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"{file}: cannot read COCO JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file}: a COCO JSON must be an object with images and annotations")
    return data


def coco_names(file: str) -> list[str]:
    """The category names of an instances JSON, in the order of their ids."""
    cats = _coco_categories(read_json(file), file)
    return [cats[i] for i in sorted(cats)]


def _coco_list(data: dict, key: str, file: str) -> list[dict] | None:
    """The entries under ``key`` of a COCO JSON, or None when the key is absent.

    Raises:
        DataError: naming the file and key when the value is not a list, or the entry when one
            is not an object.
    """
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise DataError(f"{file}: key '{key}': expected a list of objects, got {type(value).__name__}")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise DataError(f"{file}: {key}[{i}]: expected an object, got {entry!r:.60}")
    return value


def _coco_categories(data: dict, file: str) -> dict[int, str]:
    """Category id -> name of a COCO JSON, in the file's order.

    Raises:
        DataError: naming the file, the entry and the key when a category has no integer ``id``
            or no ``name``, or repeats an id; naming both ids when two categories share a name
            (classes map to categories by name).
    """
    cats: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for i, cat in enumerate(_coco_list(data, "categories", file) or []):
        for key in ("id", "name"):
            if key not in cat:
                raise DataError(f"{file}: categories[{i}]: no '{key}' key")
        cid = cat["id"]
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise DataError(f"{file}: categories[{i}]: key 'id': expected an integer, got {cid!r}")
        if cid in cats:
            raise DataError(f"{file}: categories[{i}]: id {cid} is used by two categories")
        name = cat["name"]
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{file}: categories[{i}]: key 'name': expected a class name, got {name!r}")
        if name in by_name:
            raise DataError(
                f"{file}: categories[{i}]: the name {name!r} is both category id {by_name[name]} and id {cid}: "
                "classes map to categories by name, so names must differ"
            )
        cats[cid], by_name[name] = name, cid
    return cats


def _coco_images(data: dict, file: str) -> list[dict]:
    """The image entries of a COCO JSON, each with a hashable ``id`` and a ``file_name``.

    Raises:
        DataError: naming the file, the entry and the key when ``images`` is missing or not a
            list of objects, an image has no ``id`` or ``file_name``, or two images share an id.
    """
    images = _coco_list(data, "images", file)
    if images is None:
        raise DataError(f"{file}: no 'images' key: a COCO JSON lists its images")
    first: dict[Any, int] = {}
    for i, im in enumerate(images):
        image_id = im.get("id")
        if image_id is None or not isinstance(image_id, Hashable):
            raise DataError(f"{file}: images[{i}]: key 'id': expected an image id, got {image_id!r}")
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            raise DataError(
                f"{file}: images[{i}] (id {image_id!r}): key 'file_name': expected a file name, got {name!r}"
            )
        if image_id in first:
            raise DataError(f"{file}: images[{i}]: id {image_id!r} is also the id of images[{first[image_id]}]")
        first[image_id] = i
    return images


def coco_items(file: str, names: list[str], folders: list[Path], problems: list[Problem]) -> list[Item]:
    """One item per image of an instances JSON, with its parsed annotations and their errors.

    An image's ``file_name`` is looked up in ``folders`` in order, then beside the JSON (the first
    folder when it is nowhere). Categories map to ``names`` by name.

    An annotation error (unknown category_id, malformed bbox or segmentation) goes with its image, which is then
    left out; a box of zero or negative width or height is skipped with a warning (the package's converter
    skips it too); annotations of an image_id the JSON does not list are one error of the file. Each item
    carries the image's ``width`` and ``height`` from the JSON: boxes are scaled from them to the image
    (:func:`yolotr.data.validation.size_scale`) when the image was resized after it was annotated.

    An annotation with a ``segmentation`` has it after its box, as in the JSON: it is read when the image is
    validated (:func:`~yolotr.data.coco_segments.with_polygon`, not when a label cache answers), and the box then
    becomes the polygon's extent, as the package trains it after ``convert_coco(use_segments=True)``; one without
    (or with an empty one) keeps its ``bbox`` and stays a box.
    """
    data = read_json(file)
    cats = _coco_categories(data, file)
    images = _coco_images(data, file)
    annotations = _coco_list(data, "annotations", file)
    if annotations is None:
        problems.append(warning(file, None, "no 'annotations' key: every image is used as a background"))
    elif not annotations and images:
        problems.append(warning(file, None, "'annotations' is empty: every image is used as a background"))
    cat_to_class: dict[int, int] = {}
    index = {n: i for i, n in enumerate(names)}
    for cid, name in cats.items():
        if name in index:
            cat_to_class[cid] = index[name]
        else:
            problems.append(warning(file, None, f"category {name!r} not in names, its boxes skipped"))
    objects: dict[Any, list[tuple]] = {}
    errors: dict[Any, list[Problem]] = {}
    for i, ann in enumerate(annotations or []):
        where = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{i}]"
        image_id, cid, bbox, crowd = ann.get("image_id"), ann.get("category_id"), ann.get("bbox"), ann.get("iscrowd")
        for key, value in (("image_id", image_id), ("category_id", cid)):
            if not isinstance(value, Hashable):
                raise DataError(f"{file}: annotations[{i}]: key '{key}': expected an id, got {value!r:.60}")
        found = errors.setdefault(image_id, [])
        objects.setdefault(image_id, [])
        if crowd not in (None, 0, 1):
            found.append(error(file, None, MALFORMED, f"{where}: iscrowd must be 0 or 1, got {crowd!r}"))
            continue
        if crowd:
            continue
        if cid not in cat_to_class:
            if cid not in cats:
                found.append(error(file, None, UNKNOWN_CLASS, f"{where}: unknown category_id {cid!r}"))
            continue
        if not isinstance(bbox, list) or len(bbox) != 4:
            found.append(error(file, None, MALFORMED, f"{where}: bbox must be [x, y, w, h], got {bbox!r}"))
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            found.append(error(file, None, MALFORMED, f"{where}: non-numeric bbox {bbox!r}"))
            continue
        if not (w > 0 and h > 0):  # COCO files hold some degenerate boxes; the package's converter skips them too
            found.append(warning(file, None, f"{where}: bbox of zero or negative size {w:g}x{h:g} skipped"))
            continue
        segmentation = ann.get("segmentation")  # read when the image is validated (coco_segments.with_polygon)
        extra = (segmentation,) if segmentation else ()
        objects[image_id].append((None, where, cat_to_class[cid], x, y, x + w, y + h, *extra))
    items = []
    for im in images:
        image_id = im.get("id")
        image = _image_path(file, folders, im["file_name"])
        size = (im["width"], im["height"]) if "width" in im and "height" in im else None
        items.append(Item(image, file, None, objects.pop(image_id, []), errors.pop(image_id, []), size))
    for image_id, objs in objects.items():
        n = len(objs) + len(errors.get(image_id, []))
        if n:
            problems.append(error(file, None, UNKNOWN_IMAGE, f"{n} annotations for unknown image_id {image_id!r}"))
    return items


def _image_path(file: str, folders: list[Path], name: str) -> str:
    """Where an image's ``file_name`` is: under ``folders[0]``, beside the JSON, under the other
    folders, in that order (``folders[0]`` when it is nowhere)."""
    candidates = [folders[0] / name, Path(file).parent / name, *(f / name for f in folders[1:])]
    return next((str(c) for c in candidates if c.is_file()), str(candidates[0]))


def coco_ids(file: str, names: list[str], folders: list[Path]) -> tuple[dict[str, Any], list[int | None], list[int]]:
    """The ids of an instances JSON that a results file names detections by.

    Returns the image path (as :func:`coco_items` gives it) -> image ``id``, per class of ``names``
    its category ``id`` (matched by name, as :func:`coco_items` maps them; None for a class the JSON
    has no category of), and every category ``id`` of the JSON.

    Raises:
        DataError: as :func:`coco_items`, for a JSON of the wrong shape.
    """
    data = read_json(file)
    categories = _coco_categories(data, file)
    by_name = {name: cid for cid, name in categories.items()}
    images = {_image_path(file, folders, im["file_name"]): im["id"] for im in _coco_images(data, file)}
    return images, [by_name.get(name) for name in names], list(categories)
