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

Adding a module is one line in :data:`MODULES` (or a call to :func:`register`).
"""

from __future__ import annotations

import difflib
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

RULES = ("conv", "csp", "concat", "detect", "batchnorm", "same")


@dataclass(frozen=True)
class ModuleSpec:
    """A registered module: its class and its argument rule (one of :data:`RULES`)."""

    name: str
    cls: type[nn.Module]
    rule: str


MODULES: dict[str, ModuleSpec] = {}


def register(name: str, cls: type[nn.Module], rule: str) -> None:
    """Make ``name`` usable in model YAMLs. ``nn.X`` names may be given with or without ``nn.``."""
    if rule not in RULES:
        raise ValueError(f"unknown argument rule {rule!r} for {name}; expected one of {RULES}")
    MODULES[name] = ModuleSpec(name, cls, rule)


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
