"""Pickled model objects without their code: a restricted unpickler that rebuilds them as inert stubs.

Official YOLOv5 and ``ultralytics`` checkpoints are pickled ``Model`` objects whose classes live in
those projects' source trees (YOLOv5's pip package pickles them as ``yolov5.models.*``).
:class:`RestrictedUnpickler` rebuilds them without that code: every class it meets must be a known
YOLOv5 / ``ultralytics`` or ``torch.nn`` module name, which becomes an inert :class:`ForeignObject`
holding the pickled attributes; tensors rebuild through torch's own functions, ``pathlib`` paths as their
text; anything else (``os.system``, ``builtins.eval``, an unknown class) raises
:class:`~yolotr.errors.CheckpointError` before it runs. :func:`foreign_state_dict` then reads the
weights out of the inert tree by module path.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import types

import torch
from torch import nn

from yolotr.errors import CheckpointError

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
# The ``ultralytics`` package's pickled classes of the detection line (YOLOv8 / YOLO11 / YOLO12 / YOLOv10 /
# YOLO26 and its YOLOv5/YOLOv3 ports), admitted as inert stubs exactly like YOLOv5's.
ULTRALYTICS_MODULES = {
    "ultralytics.nn.tasks": {"DetectionModel", "BaseModel"},
    "ultralytics.nn.modules.conv": {
        "Conv",
        "Conv2",
        "DWConv",
        "Concat",
        "Focus",
        "GhostConv",
        "LightConv",
        "RepConv",
        "ConvTranspose",
        "DWConvTranspose2d",
    },
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
        "C2fPSA",
        "AAttn",
        "ABlock",
        "A2C2f",
        # YOLOv10 (yolotr/nn/v10_blocks.py)
        "SCDown",
        "C2fCIB",
        "CIB",
        "RepVGGDW",
        "PSA",
        # YOLOv9 (yolotr/nn/gelan.py)
        "RepBottleneck",
        "RepCSP",
        "RepNCSPELAN4",
        "ELAN1",
        "AConv",
        "ADown",
        "SPPELAN",
        "CBLinear",
        "CBFuse",
    },
    # Detect is also YOLO26's end-to-end head; v10Detect YOLOv10's (yolotr/nn/head_e2e.py); RTDETRDecoder RT-DETR's
    "ultralytics.nn.modules.head": {"Detect", "v10Detect", "RTDETRDecoder"},
}
# RT-DETR (yolotr/nn/hgnet.py, detr.py, deform_attn.py, head_detr.py)
ULTRALYTICS_MODULES["ultralytics.nn.tasks"] |= {"RTDETRDetectionModel"}
ULTRALYTICS_MODULES["ultralytics.nn.modules.block"] |= {"HGStem", "HGBlock", "RepC3", "ResNetBlock", "ResNetLayer"}
ULTRALYTICS_MODULES["ultralytics.nn.modules.transformer"] = {
    "AIFI",
    "TransformerEncoderLayer",
    "MLP",
    "MSDeformAttn",
    "DeformableTransformerDecoderLayer",
    "DeformableTransformerDecoder",
}
# nn.MultiheadAttention's output projection: a torch.nn class that torch.nn does not export by name
TORCH_MODULE_CLASSES = {("torch.nn.modules.linear", "NonDynamicallyQuantizableLinear")}
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
# YOLOv5's pip package (``pip install yolov5``) pickles the same classes under ``yolov5.models.*``
PIP_YOLOV5_PREFIX = "yolov5."
# a path in the pickled training options (YOLOv5's ``opt``): read as its text, never as a path object that
# could touch the file system (a Windows path rebuilt on Linux would raise)
PATH_CLASSES = {
    "PosixPath": pathlib.PurePosixPath,
    "PurePosixPath": pathlib.PurePosixPath,
    "WindowsPath": pathlib.PureWindowsPath,
    "PureWindowsPath": pathlib.PureWindowsPath,
}


def _path_text(pure: type[pathlib.PurePath]):
    def rebuild(*parts: str) -> str:
        return str(pure(*parts))

    return rebuild


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
    if (module, name) in TORCH_MODULE_CLASSES:
        return True
    if not module.startswith("torch.nn.modules."):
        return False
    cls = getattr(nn, name, None)
    return isinstance(cls, type) and issubclass(cls, nn.Module)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits tensors, plain containers and known module classes (as stubs) only."""

    source = "<checkpoint>"

    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins"}.get(module, module)
        known = module.removeprefix(PIP_YOLOV5_PREFIX) if module.startswith(PIP_YOLOV5_PREFIX + "models.") else module
        if module in ("pathlib", "pathlib._local") and name in PATH_CLASSES:
            return _path_text(PATH_CLASSES[name])
        if (module, name) in SAFE_CALLABLES:
            return SAFE_CALLABLES[(module, name)]
        if module == "torch" and name in DTYPES:
            return getattr(torch, name)
        if name in KNOWN_MODULE_CLASSES.get(known, ()) or _is_torch_module_class(module, name):
            return _stub(module, name)
        if known.startswith(("ultralytics.nn.", "models.")) and name[:1].isupper():
            raise CheckpointError(
                f"{self.source}: the pickled model uses module class '{name}' ({module}), which yolotr does not "
                "implement; refused without running anything (register the block in yolotr/nn/registry.py and "
                "yolotr/models/foreign_pickle.py to import it)"
            )
        raise CheckpointError(
            f"{self.source}: refuses to unpickle '{module}.{name}': not a tensor, container or known "
            "YOLOv5/torch.nn module class (the file may be corrupt or malicious)"
        )


def restricted_pickle_module(source: str) -> types.ModuleType:
    """A ``pickle``-like module for ``torch.load(pickle_module=...)`` whose Unpickler is restricted."""
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"source": source})
    module = types.ModuleType("yolotr_restricted_pickle")
    module.Unpickler = unpickler
    module.load = lambda f, **kw: unpickler(f, **kw).load()
    module.__name__ = "yolotr_restricted_pickle"
    return module


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


def describe_value(obj: object) -> str:
    """``a dict with keys 'a', 'b', ...`` / ``a plain int``: what a loaded object is, in a few words."""
    if isinstance(obj, dict):
        keys = [repr(k) for k in list(obj)[:5]]
        return f"a dict with keys {', '.join(keys)}{', ...' if len(obj) > 5 else ''}" if keys else "an empty dict"
    if isinstance(obj, int | float | str | bytes | bool | type(None)):
        return f"a plain {type(obj).__name__}"
    return f"a {type(obj).__name__}"
