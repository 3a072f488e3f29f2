"""YAML module name -> class, and the rule that completes its arguments.

A rule says how a YAML row's ``args`` become constructor arguments and what the output channel
count is. The rules are YOLOv5's:

``conv``      ``args = [c1, c2 * width, *rest]`` with ``c1`` the input channels (Conv, SPPF, ...).
``csp``       like ``conv``, and the row's repeat count ``n`` goes in as the third argument (C3, ...).
``concat``    output channels are the sum of the inputs'.
``detect``    the list of input channels is appended; an integer ``anchors`` becomes placeholders.
``batchnorm`` ``args = [c1]``.
``same``      arguments verbatim, output channels equal input channels (YOLOv5's rule for any module
              it does not know, such as ``nn.Upsample``; a published block registered with this rule
              builds exactly as it does inside the official builder).
``detect_af`` the anchor-free head: ``[nc]`` becomes ``[nc, reg_max, input channels, legacy]``.

In the ``ultralytics`` grammar (a YAML without ``anchors``) a ``Detect`` row builds the anchor-free
head. Two of the package's scale-dependent rules are spec fields: ``at_scale`` rewrites a row's
completed arguments for a scale letter (C3k2 uses C3k blocks at m/l/x; A2C2f gets a residual and MLP
ratio 1.2 at l/x), and ``modern_head`` marks the modules after which the head's class branch is
depthwise (YOLO11/12) instead of YOLOv8's plain convs.

Adding a module is one line in :data:`MODULES` (or a call to :func:`register`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from yolotr.nn.attention import C3TR, TransformerC3
from yolotr.nn.blocks import (
    C3,
    SPP,
    SPPF,
    Bottleneck,
    BottleneckCSP,
    C3Ghost,
    Concat,
    GhostBottleneck,
)
from yolotr.nn.conv import Conv, DWConv, Focus, GhostConv
from yolotr.nn.head import Detect
from yolotr.nn.swin import SwinV2_CSPB
from yolotr.nn.wavelet import HWD

RULES = ("conv", "csp", "concat", "detect", "detect_af", "batchnorm", "same")


@dataclass(frozen=True)
class ModuleSpec:
    """A registered module: its class, its argument rule (one of :data:`RULES`) and, for the
    ``ultralytics`` grammar, its scale rule and whether it makes the head's class branch depthwise."""

    name: str
    cls: type[nn.Module]
    rule: str
    at_scale: Callable[[list, str], list] | None = None
    modern_head: bool = False
    end2end: bool = False


MODULES: dict[str, ModuleSpec] = {}


def register(
    name: str,
    cls: type[nn.Module],
    rule: str,
    at_scale: Callable[[list, str], list] | None = None,
    modern_head: bool = False,
    end2end: bool = False,
) -> None:
    """Make ``name`` usable in model YAMLs. ``nn.X`` names may be given with or without ``nn.``.

    ``end2end`` marks a head that can run without NMS (a YAML's ``end2end: True`` requires one)."""
    if rule not in RULES:
        raise ValueError(f"unknown argument rule {rule!r} for {name}; expected one of {RULES}")
    MODULES[name] = ModuleSpec(name, cls, rule, at_scale, modern_head, end2end)


def lookup(name: str) -> ModuleSpec:
    """The spec registered under ``name``; ``KeyError`` with close matches in its message otherwise."""
    for key in (name, name[3:] if name.startswith("nn.") else f"nn.{name}"):
        if key in MODULES:
            return MODULES[key]
    close = difflib.get_close_matches(name, list(MODULES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown module {name!r}{hint}")


for _name, _cls in {
    "Conv": Conv,
    "DWConv": DWConv,
    "Focus": Focus,
    "GhostConv": GhostConv,
    "GhostBottleneck": GhostBottleneck,
    "Bottleneck": Bottleneck,
    "SPP": SPP,
    "SPPF": SPPF,
}.items():
    register(_name, _cls, "conv")
for _name, _cls in {"C3": C3, "BottleneckCSP": BottleneckCSP, "C3Ghost": C3Ghost, "C3TR": C3TR}.items():
    register(_name, _cls, "csp")
register("Concat", Concat, "concat")
register("Detect", Detect, "detect")
register("nn.BatchNorm2d", nn.BatchNorm2d, "batchnorm")
for _cls in (nn.Upsample, nn.MaxPool2d, nn.AvgPool2d, nn.ZeroPad2d, nn.Identity, nn.Dropout):
    register(f"nn.{_cls.__name__}", _cls, "same")
register("TransformerC3", TransformerC3, "csp")
register("SwinV2_CSPB", SwinV2_CSPB, "same")
register("HWD", HWD, "conv")

# YOLOv4 (CSPDarknet53 + SPP + PANet): yolotr/nn/yolov4.py
from yolotr.nn.yolov4 import ConvStack, CSPDarknetStage, MishConv, SPPBlock, YOLOv4Detect  # noqa: E402

for _name, _cls in {"MishConv": MishConv, "ConvStack": ConvStack, "SPPBlock": SPPBlock}.items():
    register(_name, _cls, "conv")
register("CSPDarknetStage", CSPDarknetStage, "csp")
register("YOLOv4Detect", YOLOv4Detect, "detect")

# The anchor-free line (YOLOv8 / YOLO11 / YOLO12): yolotr/nn/csp.py, psa.py, head_af.py
from yolotr.nn.csp import C2, C2f, C3k, C3k2  # noqa: E402
from yolotr.nn.head_af import AnchorFreeDetect  # noqa: E402
from yolotr.nn.psa import C2PSA, A2C2f  # noqa: E402


def _c3k2_at_scale(args: list, scale: str) -> list:
    """The package's rule: C3k2 uses C3k inner blocks at scales m, l and x (``args[3]`` is ``c3k``)."""
    if scale in ("m", "l", "x"):
        args = [*args[:3], True, *args[4:]]
    return args


def _a2c2f_at_scale(args: list, scale: str) -> list:
    """The package's rule: A2C2f gets a residual (gamma) and MLP ratio 1.2 at scales l and x."""
    return [*args, True, 1.2] if scale in ("l", "x") else args


for _name, _cls in {"C2f": C2f, "C2": C2, "C3k": C3k, "C2PSA": C2PSA}.items():
    register(_name, _cls, "csp")
register("C3k2", C3k2, "csp", at_scale=_c3k2_at_scale, modern_head=True)
register("A2C2f", A2C2f, "csp", at_scale=_a2c2f_at_scale, modern_head=True)
register("AnchorFreeDetect", AnchorFreeDetect, "detect_af")

# The NMS-free line (YOLOv10 / YOLO26): yolotr/nn/v10_blocks.py, head_e2e.py. A ``Detect`` row of a YAML with
# ``end2end: True`` and no ``anchors`` builds E2EDetect (yolotr/nn/builder.py).
from yolotr.nn.head_e2e import E2EDetect, V10Detect  # noqa: E402
from yolotr.nn.v10_blocks import CIB, PSA, C2fCIB, SCDown  # noqa: E402

for _name, _cls in {"SCDown": SCDown, "PSA": PSA, "CIB": CIB}.items():
    register(_name, _cls, "conv")
register("C2fCIB", C2fCIB, "csp")
register("E2EDetect", E2EDetect, "detect_af", end2end=True)
register("v10Detect", V10Detect, "detect_af", end2end=True)
