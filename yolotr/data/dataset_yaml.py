"""The dataset YAML: ``path``, the splits, ``names`` / ``nc``, ``format`` and the optional keys, resolved into a
:class:`DatasetConfig` (see :mod:`yolotr.data.sources` for what each format's labels are)."""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolotr.data.coco import coco_names
from yolotr.data.label_cache import cache_dir
from yolotr.errors import DataError
from yolotr.yaml_loading import read_yaml_file

LOGGER = logging.getLogger("yolotr")

FORMATS = ("yolo", "coco", "voc")
KEYS = (
    "path", "train", "val", "test", "names", "nc", "format", "images", "annotations", "download", "kpt_shape",
    "flip_idx", "channels",
)  # fmt: skip


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
    keypoint_values: int = 0  # a pose set's kpt_shape product: the columns after each label row's box
    channels: int = 3  # the images' channels (the package's key); grey images are read as RGB

    @property
    def nc(self) -> int:
        return len(self.names)


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
    cfg = read_yaml_file(file, "dataset YAML", DataError)
    if not isinstance(cfg, dict):
        raise DataError(f"{file}: a dataset YAML must be a mapping with path, train, val and names")
    return _parse_config(cfg, Path(os.path.abspath(file)).parent, str(file))


def _parse_config(cfg: dict, base: Path, source: str) -> DatasetConfig:
    for key in cfg:  # a misspelt key would be ignored, and its setting with it
        near = difflib.get_close_matches(str(key), KEYS, n=1, cutoff=0.75)
        if key not in KEYS and near:
            raise DataError(f"{source}: unknown key {key!r}: did you mean {near[0]!r}?")
    root = Path(_path_value(cfg, "path", source) or ".").expanduser()
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
            if not str(entry).strip():  # Path("") is ".": the dataset root, every split's images at once
                raise DataError(
                    f"{source}: key '{split}': an empty path; name the split's folder, list file or images, or leave "
                    "the key out"
                )
            resolved.append(_split_path(root, entry))
        splits[split] = resolved
    if not splits:
        raise DataError(f"{source}: no 'train' or 'val' key: name the images of each split")
    fmt = cfg.get("format")
    if fmt is None:
        all_entries = [e for v in splits.values() for e in v]
        fmt = "coco" if all_entries and all(is_json(e) for e in all_entries) else "yolo"
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
        images=_sub(root, _path_value(cfg, "images", source), "images"),
        annotations=_sub(root, _path_value(cfg, "annotations", source), "annotations"),
        source=source,
        keypoint_values=_keypoint_values(cfg.get("kpt_shape"), source),
        channels=_channels(cfg.get("channels"), source),
    )


def _split_path(root: Path, entry: str | os.PathLike) -> str:
    """A split entry as an absolute path under ``root``. An entry ``../x`` that does not exist there is taken as
    ``x`` under ``root`` when that exists, as the package does: Roboflow's exports write ``train: ../train/images``
    beside a YAML that sits in the dataset's own folder."""
    p = Path(entry).expanduser()
    if p.is_absolute():
        return str(p)
    path = root / p
    if not path.exists() and str(entry).startswith("../") and (root / str(entry)[3:]).exists():
        LOGGER.debug("split entry %s does not exist; %s does and is used", path, root / str(entry)[3:])
        path = root / str(entry)[3:]
    return str(path)  # ".." as written: through a symlinked dataset folder the OS resolves it, not the text


def is_json(entry: str) -> bool:
    return entry.lower().endswith(".json")


def _channels(value: Any, source: str) -> int:
    """The ``channels`` key of the package's dataset YAMLs: 3 (or absent) is what yolotr reads; 1 (its
    coco8-grayscale.yaml) is read as RGB with a warning, the model taking 3 channels.

    Raises:
        DataError: for another count (the package's 10-channel multispectral sets), which yolotr does not read.
    """
    if value is None or value == 3:
        return 3
    if value == 1:
        LOGGER.warning(
            "%s: channels: 1: yolotr reads every image as 3-channel RGB (a grey image repeated), so the model takes "
            "3 channels where the package builds a 1-channel one", source,
        )  # fmt: skip
        return 1
    raise DataError(
        f"{source}: key 'channels': {value!r}; yolotr reads RGB (3-channel) and grey images only, not "
        "multispectral ones"
    )


def _keypoint_values(kpt_shape: Any, source: str) -> int:
    """The number of values after each label row's box in a pose set (``kpt_shape: [17, 3]`` -> 51; 0 without).

    Raises:
        DataError: for a ``kpt_shape`` that is not ``[keypoints, 2 or 3]``.
    """
    if kpt_shape is None:
        return 0
    ok = (
        isinstance(kpt_shape, list)
        and len(kpt_shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in kpt_shape)
        and kpt_shape[0] >= 1
        and kpt_shape[1] in (2, 3)
    )
    if not ok:
        raise DataError(
            f"{source}: key 'kpt_shape': expected [number of keypoints, 2 or 3] (e.g. [17, 3]), got {kpt_shape!r}"
        )
    return kpt_shape[0] * kpt_shape[1]


def _path_value(cfg: dict, key: str, source: str) -> str | os.PathLike | None:
    """The path under ``key`` (None when absent).

    Raises:
        DataError: naming the key when its value is not a path.
    """
    value = cfg.get(key)
    if value is not None and not isinstance(value, str | os.PathLike):
        raise DataError(f"{source}: key '{key}': expected a path, got {value!r}")
    return value


def _sub(root: Path, value: str | os.PathLike | None, default: str) -> Path:
    """``value`` (default ``default``) as a path, relative to ``root`` unless absolute."""
    p = Path(value or default).expanduser()
    return p if p.is_absolute() else root / p


def _parse_names(cfg: dict, source: str) -> list[str]:
    """The class names of ``names`` (a list, or a mapping id -> name) checked against ``nc``.

    Raises:
        DataError: naming the key and entry when a name is not a string or number, is empty or
            repeats, when the ids of a mapping are not 0..n-1, or when ``nc`` disagrees.
    """
    names = cfg.get("names")
    nc = cfg.get("nc")
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise DataError(f"{source}: key 'names': ids must be integers 0..n-1, got {list(names)}")
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DataError(f"{source}: key 'names': ids must be 0..{len(keys) - 1}, got {keys}")
        names = [_class_name(names[k], f"names[{k}]", source) for k in keys]
    elif isinstance(names, list):
        names = [_class_name(n, f"names[{i}]", source) for i, n in enumerate(names)]
    elif names is not None:
        raise DataError(f"{source}: key 'names': expected a list or a mapping id -> name")
    seen: dict[str, int] = {}
    for i, name in enumerate(names or []):
        if name in seen:
            raise DataError(f"{source}: key 'names': {name!r} is both class {seen[name]} and class {i}")
        seen[name] = i
    if nc is not None:
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise DataError(f"{source}: key 'nc': expected a positive integer, got {nc!r}")
        if names is None:
            names = [f"class{i}" for i in range(nc)]
        elif len(names) != nc:
            raise DataError(f"{source}: 'nc' is {nc} but 'names' has {len(names)} entries")
    return names or []


def _class_name(value: Any, key: str, source: str) -> str:
    """One class name: a non-empty string, or a number taken as its text.

    Raises:
        DataError: naming ``key`` for anything else (null, a list, a YAML boolean such as ``no``).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        hint = " (YAML reads unquoted yes/no/on/off as booleans: quote the name)" if isinstance(value, bool) else ""
        raise DataError(f"{source}: key '{key}': a class name must be a string, got {value!r}{hint}")
    if not str(value).strip():
        raise DataError(f"{source}: key '{key}': empty class name")
    return str(value)


def _coco_names(splits: dict[str, list[str]], source: str) -> list[str]:
    """The category names of the splits' first COCO JSON, in the order of their ids."""
    for entries in splits.values():
        for entry in entries:
            if is_json(entry) and Path(entry).is_file():
                return coco_names(entry)
    raise DataError(f"{source}: no 'names' and no readable COCO JSON to take the categories from")
