"""Checkpoints: ours (atomic save, ``weights_only`` load) and official YOLOv5 ``.pt`` files.

Official YOLOv5 checkpoints are pickled ``Model`` objects whose classes live in YOLOv5's source
tree. :class:`RestrictedUnpickler` rebuilds them without that code: every class it meets must be
a known YOLOv5 or ``torch.nn`` module name, which becomes an inert :class:`ForeignObject` holding
the pickled attributes; tensors rebuild through torch's own functions; anything else (``os.system``,
``builtins.eval``, an unknown class) raises :class:`~yolotr.errors.CheckpointError` before it runs.
The weights are then read out of the inert tree by module path and loaded by name into a model
rebuilt from the YAML stored in the checkpoint.

Before torch sees a file, :func:`sniff_checkpoint` reads its first bytes: only a zip archive holding a
``data.pkl`` (torch's format since 1.6) or a pickle stream (the legacy format) goes on to torch;
anything else (a text file, an HTML page, an empty file, another zip, random bytes) is refused with
what it looks like. Whatever torch's readers raise on a damaged file becomes a
:class:`~yolotr.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import shutil
import tempfile
import types
import warnings
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
# The ``ultralytics`` package's pickled classes of the detection line (YOLOv8 / YOLO11 / YOLO12 and its
# YOLOv5/YOLOv3 ports), admitted as inert stubs exactly like YOLOv5's.
ULTRALYTICS_MODULES = {
    "ultralytics.nn.tasks": {"DetectionModel", "BaseModel"},
    "ultralytics.nn.modules.conv": {"Conv", "Conv2", "DWConv", "Concat", "Focus", "GhostConv", "LightConv", "RepConv"},
    "ultralytics.nn.modules.block": {
        "DFL",
        "SPP",
        "SPPF",
        "C1",
        "C2",
        "C2f",
        "C3",
        "C3x",
        "C3k",
        "C3k2",
        "C3TR",
        "C3Ghost",
        "GhostBottleneck",
        "Bottleneck",
        "BottleneckCSP",
        "Attention",
        "PSABlock",
        "C2PSA",
        "AAttn",
        "ABlock",
        "A2C2f",
    },
    "ultralytics.nn.modules.head": {"Detect"},
}
KNOWN_MODULE_CLASSES = {**YOLOV5_MODULES, **ULTRALYTICS_MODULES}
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
        if name in KNOWN_MODULE_CLASSES.get(module, ()) or _is_torch_module_class(module, name):
            return _stub(module, name)
        if module.startswith(("ultralytics.nn.", "models.")) and name[:1].isupper():
            raise CheckpointError(
                f"{self.source}: the pickled model uses module class '{name}' ({module}), which yolotr does not "
                "implement; refused without running anything (register the block in yolotr/nn/registry.py and "
                "yolotr/models/weights.py to import it)"
            )
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
    return _torch_load(path, pickle_module=_restricted_pickle_module(str(path)), weights_only=False)


def _torch_load(path: str | Path, **kwargs):
    """``torch.load`` on CPU; anything its readers raise on a damaged file becomes ``CheckpointError``.

    ``pickle.UnpicklingError`` of the ``weights_only`` reader passes through: it means "pickled
    objects other than tensors", which the caller answers with the restricted unpickler.
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


SNIFF_BYTES = 4096
MAGIC = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
)


def sniff_checkpoint(path: str | Path) -> tuple[str, str]:
    """What a file is, from its first bytes: ``(kind, description)``.

    ``kind`` is ``"zip"`` (torch's zip format: a ``.../data.pkl`` inside), ``"pickle"`` (a pickle
    stream: torch's legacy format, or any pickle) or ``"other"`` (not a checkpoint at all). The
    description says what the file looks like, for error messages: "a text file (first line:
    ...)", "an HTML page", "an empty file", "a zip archive that is not a PyTorch checkpoint
    (contains foo.txt, ...)", "random/binary data", ...
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head:
        return "other", "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path, head, size)
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return _sniff_pickle(path, size)
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"pytorch" in head[:32]):
        return "other", "an ONNX model (only `yolotr predict` runs .onnx files; the rest needs a .pt checkpoint)"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return "other", what
    text = _as_text(head)
    if text is not None:
        return "other", _describe_text(text)
    return "other", f"random/binary data ({size:,} bytes; neither a zip-format nor a pickle checkpoint)"


def _sniff_zip(path: Path, head: bytes, size: int) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        first = _first_zip_member(head)
        if first.endswith("data.pkl") or first.endswith("/version") or first.endswith("/byteorder"):
            return "zip", f"a PyTorch checkpoint cut short ({size:,} bytes; the zip directory at its end is missing)"
        return "zip", f"a damaged or truncated zip archive ({size:,} bytes; first member {first or '?'!r})"
    if any(n.endswith("/data.pkl") for n in names):
        return "zip", f"a PyTorch zip checkpoint ({len(names)} members)"
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return "other", f"a zip archive that is not a PyTorch checkpoint (contains {shown or 'nothing'})"


def _first_zip_member(head: bytes) -> str:
    """The name in the first local file header of a zip (readable even when the end is cut off)."""
    if len(head) < 30 or not head.startswith(b"PK\x03\x04"):
        return ""
    n = int.from_bytes(head[26:28], "little")
    return head[30 : 30 + n].decode("utf-8", "replace")


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy (pre-zip) format


def _sniff_pickle(path: Path, size: int) -> tuple[str, str]:
    """A pickle stream: torch's legacy format starts with its magic number; a plain value is no checkpoint.

    The first pickle is read with the restricted unpickler (nothing foreign runs).
    """
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = _restricted_pickle_module(str(path)).load(f)
    except Exception:  # noqa: BLE001 - a class we do not admit, or a damaged stream: torch decides
        return "pickle", f"a pickle stream ({size:,} bytes)"
    if isinstance(value, int) and value == LEGACY_MAGIC:
        return "pickle", f"a PyTorch checkpoint in the legacy format ({size:,} bytes)"
    if isinstance(value, dict) and isinstance(value.get("model") or value.get("ema"), ForeignObject):
        return "pickle", f"a pickled YOLOv5 checkpoint ({size:,} bytes)"
    return "other", f"a pickle of {_describe_value(value)} (written by pickle.dump, not torch.save)"


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 text when it plausibly is text (no NUL, mostly printable), else ``None``."""
    if b"\x00" in head:
        return None
    for cut in range(4):  # the read may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t\f" for c in text)
    return text if printable >= 0.95 * len(text) else None


def _describe_text(text: str) -> str:
    stripped = text.lstrip("\ufeff \t\r\n")
    lowered = stripped[:1024].lower()
    if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered or "<head" in lowered:
        return "an HTML page (a download link that returned a web page instead of the file?)"
    if stripped.startswith("version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run `git lfs pull`)"
    first = next((line.strip() for line in stripped.splitlines() if line.strip()), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"a text file (first line: {first!r})" if first else "a text file of blank lines"


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

    Raises:
        CheckpointError: the file is missing, is not a checkpoint (the message says what it looks
            like: a text file, an HTML page, an empty file, another zip, random bytes, ...), is
            truncated or damaged, or holds something other than these three kinds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        kind, looks = sniff_checkpoint(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if kind == "other":
        raise CheckpointError(f"{path}: not a checkpoint: it looks like {looks}")
    try:
        obj = _torch_load(path, weights_only=True)
    except pickle.UnpicklingError:
        obj = load_foreign_pickle(path)
        if not (isinstance(obj, dict) and isinstance(obj.get("model") or obj.get("ema"), ForeignObject)):
            raise CheckpointError(
                f"{path}: not a YOLOv5 checkpoint (no pickled 'model'; holds {_describe_value(obj)})"
            ) from None
        return "yolov5", obj
    if isinstance(obj, dict) and obj.get("format") == "yolotr":
        return "yolotr", obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "state_dict", obj
    raise CheckpointError(
        f"{path}: not a checkpoint yolotr knows: a PyTorch file holding {_describe_value(obj)}, not one of "
        "yolotr's checkpoints, an official YOLOv5 .pt or a state_dict of tensors"
    )


def _describe_value(obj: object) -> str:
    """``a dict with keys 'a', 'b', ...`` / ``a plain int``: what a loaded object is, in a few words."""
    if isinstance(obj, dict):
        keys = [repr(k) for k in list(obj)[:5]]
        return f"a dict with keys {', '.join(keys)}{', ...' if len(obj) > 5 else ''}" if keys else "an empty dict"
    if isinstance(obj, int | float | str | bytes | bool | type(None)):
        return f"a plain {type(obj).__name__}"
    return f"a {type(obj).__name__}"


def pickled_origin(checkpoint: dict) -> str:
    """Who wrote a pickled-model checkpoint: ``"ultralytics <version>"`` or ``"official YOLOv5"``."""
    model = checkpoint.get("ema") or checkpoint.get("model")
    if getattr(model, "qualname", "").startswith("ultralytics."):
        return f"ultralytics {checkpoint.get('version', '')}".strip()
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
