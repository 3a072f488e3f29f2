"""Checkpoints: ours (atomic save, ``weights_only`` load) and those of YOLOv5 and ``ultralytics``.

:func:`read_checkpoint` says what a file is. Before torch sees it,
:func:`~yolotr.models.checkpoint_sniff.sniff_checkpoint` reads its first bytes and refuses what is no
checkpoint, saying what it looks like; whatever torch's readers raise on a damaged file becomes a
:class:`~yolotr.errors.CheckpointError` naming the file. Pickled model objects (official YOLOv5 and
``ultralytics`` ``.pt`` files) are rebuilt without their code by
:class:`~yolotr.models.foreign_pickle.RestrictedUnpickler`; their weights are read out by module path
and loaded by name into a model rebuilt from the YAML stored in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import pickle
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from yolotr.errors import CheckpointError, ConfigError
from yolotr.files import write_atomically
from yolotr.models.checkpoint_sniff import sniff_checkpoint
from yolotr.models.checkpoint_upgrade import upgrade_model_yaml
from yolotr.models.foreign_pickle import (
    ForeignObject,
    describe_value,
    foreign_state_dict,
    restricted_pickle_module,
)
from yolotr.models.model_names import missing_weights_message

LOGGER = logging.getLogger("yolotr")
FORMAT_VERSION = 2  # 2: SPPF rows that name their pool count (models/checkpoint_upgrade.py)


def load_foreign_pickle(path: str | Path):
    """Load a pickled checkpoint through :class:`RestrictedUnpickler` (no foreign code runs)."""
    return torch_load(path, pickle_module=restricted_pickle_module(str(path)), weights_only=False)


def torch_load(path: str | Path, **kwargs):
    """``torch.load`` on CPU; anything its readers raise on a damaged file becomes ``CheckpointError``.

    ``pickle.UnpicklingError`` of the ``weights_only`` reader passes through: it means "pickled
    objects other than tensors", which the caller answers with the restricted unpickler (or, reading a
    caption checkpoint, with the words that it is a detector's).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            return torch.load(path, map_location="cpu", **kwargs)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if kwargs.get("weights_only") and "Weights only load failed" in str(e):
            raise
        raise _unreadable(path, e) from None
    except Exception as e:  # noqa: BLE001 - torch's readers raise KeyError, IndexError, AttributeError, ... on junk
        raise _unreadable(path, e) from None


def _unreadable(path: str | Path, e: BaseException) -> CheckpointError:
    """The error for a file that looked like a checkpoint but that torch cannot read."""
    looks = sniff_checkpoint(path)[1]
    return CheckpointError(
        f"{path}: cannot read checkpoint: it looks like {looks}, but torch cannot read it "
        f"({type(e).__name__}: {_first_line(e)}); is the file truncated or damaged? download or copy it again"
    )


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, cut to its first sentence when long."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    if len(line) > 100 and ". " in line:
        line = line[: line.index(". ") + 1]
    return line if len(line) <= 160 else line[:157] + "..."


@dataclass
class LoadReport:
    """What a weight transfer did: loaded keys, shape mismatches, missing and unexpected keys."""

    loaded: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, first: int = 5) -> str:
        """One paragraph: counts and the first names of each group."""

        def head(items) -> str:
            shown = [
                f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" if isinstance(k, str) and a is not None else str(k)
                for k, a, b in items[:first]
            ]
            return ", ".join(shown) + (", ..." if len(items) > first else "")

        parts = [f"loaded {len(self.loaded)}"]
        if self.mismatched:
            parts.append(f"shape mismatches {len(self.mismatched)}: {head(self.mismatched)}")
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {head([(k, None, None) for k in self.missing])}")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)}: {head([(k, None, None) for k in self.unexpected])}")
        return "; ".join(parts + self.notes)


def compare_state_dicts(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Which keys of ``state`` fit ``model`` by name and shape."""
    own = model.state_dict()
    constants = non_persistent_buffers(model)
    report = LoadReport()
    skipped = []
    for key, value in state.items():
        if key in constants:
            skipped.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    if skipped:
        report.notes.append(f"skipped {len(skipped)} constant tables the model rebuilds itself ({skipped[0]}, ...)")
    return report


def non_persistent_buffers(model: nn.Module) -> set[str]:
    """Names of buffers a model computes itself and leaves out of its ``state_dict``."""
    names = set()
    for prefix, module in model.named_modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


def match_class_width(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Give ``model``'s anchor-free head the class-branch width of ``state``'s, as the package does: when it
    fine-tunes an 80-class checkpoint to another class count it keeps the source's hidden width (80; a head
    built for 1 class has ``max(ch[0], min(nc, 100))`` = 64), so its fine-tuned checkpoints have that width,
    and a fine-tune from a checkpoint transfers the branch's hidden layers. Only when the head's input widths
    are the checkpoint's (the same model scale). Whether the head was rebuilt."""
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if not hasattr(head, "widen_class_branch"):
        return False
    prefix = f"model.{len(layers) - 1}."
    last = state.get(f"{prefix}cv3.0.{len(head.cv3[0]) - 1}.weight")
    inputs = [state.get(f"{prefix}cv2.{i}.0.conv.weight") for i in range(head.nl)]
    if last is None or last.dim() != 4 or any(w is None or w.dim() != 4 for w in inputs):
        return False
    if [int(w.shape[1]) for w in inputs] != [m[0].conv.in_channels for m in head.cv2]:
        return False
    width = int(last.shape[1])
    if width == head.class_width:
        return False
    head.widen_class_branch(width)
    return True


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> LoadReport:
    """Load ``state`` into ``model``; every key and shape must match, else ``CheckpointError``."""
    match_class_width(model, state)
    report = compare_state_dicts(model, state)
    if report.mismatched or report.missing or report.unexpected:
        raise CheckpointError(f"{source}: checkpoint does not fit the model: {report.summary()}")
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    return report


def transfer_weights(
    model: nn.Module, state: dict[str, torch.Tensor], rename: list[tuple[str, str]] | None = None
) -> LoadReport:
    """Copy every tensor of ``state`` whose (renamed) key and shape fit ``model``; report the rest.

    ``rename`` holds ``(old_prefix, new_prefix)`` rules applied in order to each checkpoint key.
    The tensors are copied into the model's own parameters (so the model really changes).
    """
    renamed, used = {}, set()
    for key, value in state.items():
        for old, new in rename or []:
            if key.startswith(old):
                key = new + key[len(old) :]
                used.add((old, new))
        renamed[key] = value
    unused = [f"{old}={new}" for old, new in rename or [] if (old, new) not in used]
    if unused:
        example = ", ".join(list(state)[:3])
        raise ConfigError(f"weights_rename: {', '.join(unused)} matches no checkpoint key (its keys: {example}, ...)")
    if match_class_width(model, renamed):
        LOGGER.info("weight transfer: the class branch takes the checkpoint's width, as the package's fine-tune")
    report = compare_state_dicts(model, renamed)
    model.load_state_dict({k: renamed[k] for k in report.loaded}, strict=False)
    LOGGER.info("weight transfer: %s", report.summary())
    return report


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write ``checkpoint`` atomically: a temporary file in the same folder, fsync, then rename.

    Raises:
        CheckpointError: the file could not be written (a full disk, no permission), naming it and the space
            left on its disk; a file of that name written before is unchanged.
    """
    try:
        return write_atomically(path, lambda f: torch.save(checkpoint, f))
    except (OSError, RuntimeError) as e:  # torch's writer reports a full disk as "unexpected pos"
        free = shutil.disk_usage(Path(path).parent).free / 2**20 if Path(path).parent.is_dir() else math.nan
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: could not be written ({first}; {free:.0f} MB free on its disk); a {Path(path).name} written "
            "before is unchanged"
        ) from e


def model_checkpoint(model: nn.Module, **extra) -> dict:
    """Our checkpoint of a ``DetectionModel``: plain types and tensors only (``weights_only`` loadable).

    ``imgsz``, the training image size (from the training settings, :func:`training_settings`, unless given), is
    kept at the top level: ``predict`` and ``export`` use it when not told otherwise.
    """
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}  # loads on any machine
    cfg = training_settings(extra)
    if extra.get("imgsz") is None and cfg.get("imgsz") is not None:
        extra["imgsz"] = cfg["imgsz"]
    return {
        "format": "yolotr",
        "format_version": FORMAT_VERSION,
        "model_yaml": model.yaml,
        "names": list(model.names),
        "state_dict": state,
        "fitness_rule": getattr(model, "fitness_rule", None),  # what train_state's best_fitness was scored by
        **extra,
    }


def training_settings(checkpoint: dict) -> dict:
    """The settings a checkpoint's model was trained with: ``train_args`` (our ``best.pt``, which carries no
    optimizer state, and the ``ultralytics`` package's checkpoints), the resumable ``train_state``'s ``cfg``
    (our ``last.pt``) or ``opt`` (official YOLOv5); ``{}`` when it has none of them."""
    for settings in (
        checkpoint.get("train_args"),
        (checkpoint.get("train_state") or {}).get("cfg"),
        checkpoint.get("opt"),
    ):
        if isinstance(settings, dict) and settings:
            return settings
    return {}


def read_checkpoint(path: str | Path) -> tuple[str, object]:
    """Read a checkpoint file and say what it is.

    Returns ``("yolotr", dict)`` for ours, ``("state_dict", dict)`` for a plain tensor dict (as
    published PyTorch YOLOv4 files are) and ``("yolov5", dict)`` for an official YOLOv5 pickle.

    Raises:
        CheckpointError: the file is missing, is not a checkpoint (the message says what it looks
            like: a text file, an HTML page, an empty file, another zip, random bytes, ...), is
            truncated or damaged, or holds something other than these three kinds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(missing_weights_message(path))
    try:
        kind, looks = sniff_checkpoint(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if kind == "other":
        raise CheckpointError(f"{path}: not a checkpoint: it looks like {looks}")
    if kind == "zip":
        check_zip_crc(path)
    try:
        obj = torch_load(path, weights_only=True)
    except pickle.UnpicklingError:
        obj = load_foreign_pickle(path)
        if not (isinstance(obj, dict) and isinstance(obj.get("model") or obj.get("ema"), ForeignObject)):
            raise CheckpointError(
                f"{path}: not a YOLOv5 checkpoint (no pickled 'model'; holds {describe_value(obj)})"
            ) from None
        return "yolov5", obj
    if isinstance(obj, dict) and obj.get("format") == "yolotr":
        if obj.get("task") == "caption":
            raise CheckpointError(
                f"{path}: a yolotr caption checkpoint, not a detector: it captions with 'yolotr caption predict' "
                "(and 'caption val')"
            )
        lacking = [key for key in ("model_yaml", "state_dict") if not isinstance(obj.get(key), dict)]
        if lacking:
            raise CheckpointError(
                f"{path}: a yolotr checkpoint without {' and '.join(map(repr, lacking))}; is it damaged?"
            )
        upgrade_model_yaml(obj["model_yaml"], int(obj.get("format_version") or 1), str(path))
        return "yolotr", obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state_dict", obj
    raise CheckpointError(
        f"{path}: not a checkpoint yolotr knows: a PyTorch file holding {describe_value(obj)}, not one of "
        "yolotr's checkpoints, an official YOLOv5 .pt or a state_dict of tensors"
    )


def check_zip_crc(path: Path) -> None:
    """Refuse a zip-format checkpoint whose bytes changed after it was written (torch's reader does not
    check the CRC-32 each member carries, so damaged tensor bytes would load as wrong weights).

    Reads the whole file once (about 20 ms for 4 MB).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # no readable zip directory (a file cut short): torch's reader fails and says what it looks like
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged checkpoint: its member {bad!r} fails its CRC-32 check (bytes changed after it was "
            "written); download or copy it again"
        )


def pickled_origin(checkpoint: dict) -> str:
    """Who wrote a pickled-model checkpoint: ``"ultralytics <version>"``, ``"YOLOv5 pip package <version>"`` or
    ``"official YOLOv5"``."""
    model = checkpoint.get("ema") or checkpoint.get("model")
    if getattr(model, "qualname", "").startswith("ultralytics."):
        return f"ultralytics {checkpoint.get('version', '')}".strip()
    if getattr(model, "qualname", "").startswith("yolov5."):
        return f"YOLOv5 pip package {checkpoint.get('yolov5pip_version', '')}".strip()
    return "official YOLOv5"


def yolov5_model_parts(checkpoint: dict, path: str | Path) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """From an official YOLOv5 checkpoint: the model YAML dict, the float32 state dict, class names."""
    model = checkpoint.get("ema") or checkpoint.get("model")
    attrs = vars(model)
    cfg = attrs.get("yaml")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: the pickled model carries no YAML dict; cannot rebuild it")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in foreign_state_dict(model).items()}
    names = attrs.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list | tuple):
        names = [str(i) for i in range(int(cfg.get("nc", 0)))]
    return dict(cfg), state, [str(n) for n in names]
