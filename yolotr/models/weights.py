"""Checkpoints: ours (atomic save, ``weights_only`` load) and official YOLOv5 ``.pt`` files.

Official YOLOv5 checkpoints are pickled ``Model`` objects whose classes live in YOLOv5's source
tree. :class:`RestrictedUnpickler` rebuilds them without that code: every class it meets must be
a known YOLOv5 or ``torch.nn`` module name, which becomes an inert :class:`ForeignObject` holding
the pickled attributes; tensors rebuild through torch's own functions; anything else (``os.system``,
``builtins.eval``, an unknown class) raises :class:`~yolotr.errors.CheckpointError` before it runs.
The weights are then read out of the inert tree by module path and loaded by name into a model
rebuilt from the YAML stored in the checkpoint.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import shutil
import tempfile
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from yolotr.errors import CheckpointError

LOGGER = logging.getLogger("yolotr")
FORMAT_VERSION = 1

YOLOV5_MODULES = {
    "models.yolo": {"Model", "DetectionModel", "Detect", "SegmentationModel", "Segment", "ClassificationModel"},
    "models.common": {
        "Conv",
        "DWConv",
        "Focus",
        "Bottleneck",
        "BottleneckCSP",
        "C3",
        "C3TR",
        "C3SPP",
        "C3Ghost",
        "C3x",
        "SPP",
        "SPPF",
        "Concat",
        "GhostConv",
        "GhostBottleneck",
        "TransformerLayer",
        "TransformerBlock",
        "Contract",
        "Expand",
        "Proto",
        "AutoShape",
        "DetectMultiBackend",
        "CrossConv",
    },
    "models.experimental": {"MixConv2d", "CrossConv", "Sum", "Ensemble"},
}
SAFE_CALLABLES = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}
DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


class ForeignObject:
    """An inert stand-in for a pickled object of a class we do not import: only its attributes."""

    qualname = "?"

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}>"


_STUBS: dict[str, type[ForeignObject]] = {}


def _stub(module: str, name: str) -> type[ForeignObject]:
    qualname = f"{module}.{name}"
    if qualname not in _STUBS:
        _STUBS[qualname] = type(name, (ForeignObject,), {"qualname": qualname})
    return _STUBS[qualname]


def _is_torch_module_class(module: str, name: str) -> bool:
    if not module.startswith("torch.nn.modules."):
        return False
    cls = getattr(nn, name, None)
    return isinstance(cls, type) and issubclass(cls, nn.Module)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits tensors, plain containers and known module classes (as stubs) only."""

    source = "<checkpoint>"

    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins"}.get(module, module)
        if (module, name) in SAFE_CALLABLES:
            return SAFE_CALLABLES[(module, name)]
        if module == "torch" and name in DTYPES:
            return getattr(torch, name)
        if name in YOLOV5_MODULES.get(module, ()) or _is_torch_module_class(module, name):
            return _stub(module, name)
        raise CheckpointError(
            f"{self.source}: refuses to unpickle '{module}.{name}': not a tensor, container or known "
            "YOLOv5/torch.nn module class (the file may be corrupt or malicious)"
        )


def _restricted_pickle_module(source: str) -> types.ModuleType:
    """A ``pickle``-like module for ``torch.load(pickle_module=...)`` whose Unpickler is restricted."""
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"source": source})
    module = types.ModuleType("yolotr_restricted_pickle")
    module.Unpickler = unpickler
    module.load = lambda f, **kw: unpickler(f, **kw).load()
    module.__name__ = "yolotr_restricted_pickle"
    return module


def load_foreign_pickle(path: str | Path):
    """Load a pickled checkpoint through :class:`RestrictedUnpickler` (no foreign code runs)."""
    try:
        return torch.load(
            path, map_location="cpu", pickle_module=_restricted_pickle_module(str(path)), weights_only=False
        )
    except CheckpointError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(e)}); is the file truncated?") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def foreign_state_dict(obj: ForeignObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a stub module tree, keyed like ``nn.Module.state_dict``."""
    state: dict[str, torch.Tensor] = {}
    attrs = vars(obj)
    for name, p in (attrs.get("_parameters") or {}).items():
        if p is not None:
            state[prefix + name] = p.detach()
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    for name, b in (attrs.get("_buffers") or {}).items():
        if b is not None and name not in non_persistent:
            state[prefix + name] = b
    for name, child in (attrs.get("_modules") or {}).items():
        if isinstance(child, ForeignObject):
            state.update(foreign_state_dict(child, f"{prefix}{name}."))
    return state


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


def load_exact(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> LoadReport:
    """Load ``state`` into ``model``; every key and shape must match, else ``CheckpointError``."""
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
    renamed = {}
    for key, value in state.items():
        for old, new in rename or []:
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    report = compare_state_dicts(model, renamed)
    model.load_state_dict({k: renamed[k] for k in report.loaded}, strict=False)
    LOGGER.info("weight transfer: %s", report.summary())
    return report


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write ``checkpoint`` atomically: a temporary file in the same folder, fsync, then rename."""
    return _write_atomically(path, lambda f: torch.save(checkpoint, f))


def copy_checkpoint(source: str | Path, path: str | Path) -> Path:
    """Copy a written checkpoint file atomically (no second serialization)."""
    with open(source, "rb") as src:
        return _write_atomically(path, lambda f: shutil.copyfileobj(src, f))


def _write_atomically(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_checkpoint(model: nn.Module, **extra) -> dict:
    """Our checkpoint of a ``DetectionModel``: plain types and tensors only (``weights_only`` loadable)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {
        "format": "yolotr",
        "format_version": FORMAT_VERSION,
        "model_yaml": model.yaml,
        "names": list(model.names),
        "state_dict": state,
        **extra,
    }


def read_checkpoint(path: str | Path) -> tuple[str, object]:
    """Read a checkpoint file and say what it is.

    Returns ``("yolotr", dict)`` for ours, ``("state_dict", dict)`` for a plain tensor dict (as
    published PyTorch YOLOv4 files are) and ``("yolov5", dict)`` for an official YOLOv5 pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = load_foreign_pickle(path)
        if not (isinstance(obj, dict) and isinstance(obj.get("model") or obj.get("ema"), ForeignObject)):
            raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (no pickled 'model')") from None
        return "yolov5", obj
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(e)}); is the file truncated?") from None
    if isinstance(obj, dict) and obj.get("format") == "yolotr":
        return "yolotr", obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state_dict", obj
    raise CheckpointError(f"{path}: unrecognised checkpoint contents ({type(obj).__name__})")


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
