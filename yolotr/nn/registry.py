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
``custom``    the spec's own ``complete(args, c_in, n, where) -> (args, c2, n)`` (the package's RT-DETR rows,
              YOLOv5's ``Contract`` / ``Expand``).
``detr``      a head completed by ``complete`` (RT-DETR's decoder: the input channels go in second).

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
from yolotr.nn.conv import Conv, ConvTranspose, DWConv, DWConvTranspose2d, Focus, GhostConv
from yolotr.nn.head import Detect
from yolotr.nn.swin import SwinV2_CSPB
from yolotr.nn.wavelet import HWD

RULES = ("conv", "csp", "concat", "detect", "detect_af", "batchnorm", "same", "custom", "detr")


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
    complete: Callable[[list, list[int], int, str], tuple[list, int, int]] | None = None


MODULES: dict[str, ModuleSpec] = {}
# the package's modules of other tasks and model kinds, named as such when a YAML uses one
PACKAGE_ONLY = {
    **dict.fromkeys(("Segment", "Segment26", "Proto", "Proto26"), "segmentation"),
    **dict.fromkeys(("Pose", "Pose26"), "pose estimation"),
    **dict.fromkeys(("OBB", "OBB26"), "oriented boxes"),
    "Classify": "classification",
    **dict.fromkeys(("WorldDetect", "C2fAttn", "ImagePoolingAttn", "BNContrastiveHead"), "YOLO-World"),
    **dict.fromkeys(("YOLOEDetect", "YOLOESegment", "YOLOESegment26", "SAVPE", "LRPCHead"), "YOLOE"),
    **dict.fromkeys(("TorchVision", "Index", "Silence"), "torchvision backbones"),
    "SemanticSegment": "semantic segmentation",
    "Depth": "depth estimation",
}


def register(
    name: str,
    cls: type[nn.Module],
    rule: str,
    at_scale: Callable[[list, str], list] | None = None,
    modern_head: bool = False,
    end2end: bool = False,
    complete: Callable[[list, list[int], int, str], tuple[list, int, int]] | None = None,
) -> None:
    """Make ``name`` usable in model YAMLs. ``nn.X`` names may be given with or without ``nn.``.

    ``end2end`` marks a head that can run without NMS (a YAML's ``end2end: True`` requires one).
    ``complete`` (rules ``custom`` and ``detr``): the row's arguments, input channels, repeat count and
    where (for messages) -> constructor arguments, output channels, repeat count."""
    if rule not in RULES:
        raise ValueError(f"unknown argument rule {rule!r} for {name}; expected one of {RULES}")
    if (rule in ("custom", "detr")) != (complete is not None):
        raise ValueError(f"{name}: rules 'custom' and 'detr' (and only they) need a 'complete' function")
    MODULES[name] = ModuleSpec(name, cls, rule, at_scale, modern_head, end2end, complete)


def lookup(name: str) -> ModuleSpec:
    """The spec registered under ``name``; ``KeyError`` with close matches in its message otherwise."""
    for key in (name, name[3:] if name.startswith("nn.") else f"nn.{name}"):
        if key in MODULES:
            return MODULES[key]
    if name in PACKAGE_ONLY:
        raise KeyError(
            f"unknown module {name!r}: an ultralytics module of {PACKAGE_ONLY[name]}, which yolotr does not build "
            "(it builds detection models; docs/adding-a-module.md adds a block of your own)"
        )
    close = difflib.get_close_matches(name, list(MODULES), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    ascii_hint = "; it has a letter that is not ASCII (a Cyrillic С?)" if not name.isascii() else ""
    raise KeyError(f"unknown module {name!r}{hint}{ascii_hint} (to add one: docs/adding-a-module.md)")


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
for _cls in (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.Hardswish, nn.Mish, nn.ELU, nn.Sigmoid, nn.Tanh):
    register(f"nn.{_cls.__name__}", _cls, "same")  # an activation row, as the package builds one
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
from yolotr.nn.csp import C1, C2, C2f, C3k, C3k2, C3x, KBottleneck, KBottleneckCSP  # noqa: E402
from yolotr.nn.head_af import AnchorFreeDetect  # noqa: E402
from yolotr.nn.psa import C2PSA, A2C2f, C2fPSA  # noqa: E402


def _c3k2_at_scale(args: list, scale: str) -> list:
    """The package's rule: C3k2 uses C3k inner blocks at scales m, l and x (``args[3]`` is ``c3k``)."""
    if scale in ("m", "l", "x"):
        args = [*args[:3], True, *args[4:]]
    return args


def _a2c2f_at_scale(args: list, scale: str) -> list:
    """The package's rule: A2C2f gets a residual (gamma) and MLP ratio 1.2 at scales l and x."""
    return [*args, True, 1.2] if scale in ("l", "x") else args


for _name, _cls in {
    "C2f": C2f,
    "C2": C2,
    "C1": C1,
    "C3x": C3x,
    "C3k": C3k,
    "C2PSA": C2PSA,
    "C2fPSA": C2fPSA,
    "KBottleneckCSP": KBottleneckCSP,
}.items():
    register(_name, _cls, "csp")
register("C3k2", C3k2, "csp", at_scale=_c3k2_at_scale, modern_head=True)
register("A2C2f", A2C2f, "csp", at_scale=_a2c2f_at_scale, modern_head=True)
register("AnchorFreeDetect", AnchorFreeDetect, "detect_af")
register("KBottleneck", KBottleneck, "conv")
register("ConvTranspose", ConvTranspose, "conv")
register("nn.ConvTranspose2d", nn.ConvTranspose2d, "conv")
register("DWConvTranspose2d", DWConvTranspose2d, "conv")

# YOLOv9's GELAN blocks: yolotr/nn/gelan.py. CBLinear's output channels are its list of split widths (only
# CBFuse reads them); CBFuse has the channels of its last input.
from yolotr.nn.gelan import ELAN1, SPPELAN, AConv, ADown, CBFuse, CBLinear, RepNCSPELAN4  # noqa: E402

for _name, _cls in {
    "RepNCSPELAN4": RepNCSPELAN4,
    "ELAN1": ELAN1,
    "AConv": AConv,
    "ADown": ADown,
    "SPPELAN": SPPELAN,
}.items():
    register(_name, _cls, "conv")


def _cblinear_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    widths = args[0] if args else None
    if not (isinstance(widths, list) and widths and all(isinstance(c, int) and c > 0 for c in widths)):
        raise ConfigError(f"{where}: CBLinear's row is [[c, ...], k, s, ...] (output widths first), got {args!r}")
    return [c_in[0], *args], widths, n


def _cbfuse_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    if len(c_in) < 2 or not (args and isinstance(args[0], list) and len(args[0]) == len(c_in) - 1):
        raise ConfigError(
            f"{where}: CBFuse takes [[i, ...]], one index per CBLinear input, and its last input is the map to add to"
        )
    return list(args), c_in[-1], n


register("CBLinear", CBLinear, "custom", complete=_cblinear_rule)
register("CBFuse", CBFuse, "custom", complete=_cbfuse_rule)

# The NMS-free line (YOLOv10 / YOLO26): yolotr/nn/v10_blocks.py, head_e2e.py. A ``Detect`` row of a YAML with
# ``end2end: True`` and no ``anchors`` builds E2EDetect (yolotr/nn/builder.py).
from yolotr.nn.head_e2e import E2EDetect, V10Detect  # noqa: E402
from yolotr.nn.v10_blocks import CIB, PSA, C2fCIB, SCDown  # noqa: E402

for _name, _cls in {"SCDown": SCDown, "PSA": PSA, "CIB": CIB}.items():
    register(_name, _cls, "conv")
register("C2fCIB", C2fCIB, "csp", modern_head=True)  # the package: a C2fCIB makes the head modern
register("E2EDetect", E2EDetect, "detect_af", end2end=True)
register("v10Detect", V10Detect, "detect_af", end2end=True)

# RT-DETR (HGNetV2 / ResNet backbones, AIFI, RepC3, the deformable decoder): yolotr/nn/hgnet.py, detr.py, head_detr.py.
# The package's own argument rules: no width multiple on HGStem/HGBlock (and the repeat count goes into
# HGBlock), AIFI and the decoder get the input channels, ResNetLayer names its input channels itself.
from yolotr.errors import ConfigError  # noqa: E402
from yolotr.nn.detr import AIFI  # noqa: E402
from yolotr.nn.head_detr import RTDETRDecoder  # noqa: E402
from yolotr.nn.hgnet import HGBlock, HGStem, LightConv, RepC3, RepConv, ResNetLayer  # noqa: E402


def _hg_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    if len(args) < 2:
        raise ConfigError(f"{where}: HGStem/HGBlock need [middle channels, output channels, ...]")
    return [c_in[0], *args], args[1], n


def _hgblock_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    args, c2, n = _hg_rule(args, c_in, n, where)
    return [*args[:4], n, *args[4:]], c2, 1  # the row's repeat count is the block's conv count


def _aifi_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    return [c_in[0], *args], c_in[0], n


def _resnet_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    if len(args) < 4 or args[0] != c_in[0]:
        raise ConfigError(
            f"{where}: ResNetLayer's row is [c1, c2, stride, is_first, n] with c1 the input's channels "
            f"({c_in[0]}), got {args!r}"
        )
    return list(args), args[1] if args[3] else 4 * args[1], n


def _detr_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    if not args:
        raise ConfigError(f"{where}: RTDETRDecoder needs the number of classes as its first argument")
    return [args[0], list(c_in), *args[1:]], c_in[0], n


register("HGStem", HGStem, "custom", complete=_hg_rule)
register("HGBlock", HGBlock, "custom", complete=_hgblock_rule)
register("AIFI", AIFI, "custom", complete=_aifi_rule)
register("ResNetLayer", ResNetLayer, "custom", complete=_resnet_rule)
register("LightConv", LightConv, "conv")
register("RepConv", RepConv, "conv")
register("RepC3", RepC3, "csp")
register("RTDETRDecoder", RTDETRDecoder, "detr", end2end=True, complete=_detr_rule)

# YOLOv5's less used modules (yolotr/nn/yolov5_extra.py), with YOLOv5's rules: C3SPP is completed like a conv (the
# row's number repeats the whole block); Contract / Expand take [gain] and multiply / divide the channels by gain**2
# (per repeat: YOLOv5 counts one whatever the row's number).
from yolotr.nn.yolov5_extra import C3SPP, Contract, CrossConv, Expand, MixConv2d  # noqa: E402


def _gain(args: list, name: str, where: str) -> int:
    gain = args[0] if args else 2
    if len(args) > 1 or isinstance(gain, bool) or not isinstance(gain, int) or gain < 1:
        raise ConfigError(f"{where}: {name}'s row is [gain] (a positive integer, default 2), got {args!r}")
    return gain


def _contract_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    gain = _gain(args, "Contract", where)
    return [gain], c_in[0] * gain ** (2 * n), n


def _expand_rule(args: list, c_in: list[int], n: int, where: str) -> tuple[list, int, int]:
    gain = _gain(args, "Expand", where)
    if c_in[0] % gain ** (2 * n):
        times = f" {n} times" if n > 1 else ""
        raise ConfigError(
            f"{where}: Expand({gain}){times} needs input channels divisible by {gain ** (2 * n)}, got {c_in[0]}"
        )
    return [gain], c_in[0] // gain ** (2 * n), n


for _name, _cls in {"MixConv2d": MixConv2d, "CrossConv": CrossConv, "C3SPP": C3SPP}.items():
    register(_name, _cls, "conv")
register("Contract", Contract, "custom", complete=_contract_rule)
register("Expand", Expand, "custom", complete=_expand_rule)

# The package's Conv2 and RepVGGDW (yolotr/nn/conv.py, v10_blocks.py): its builder reads them as it reads nn modules,
# arguments verbatim (Conv2's [c1, c2, ...], RepVGGDW's [channels]) and output channels the input's.
from yolotr.nn.conv import Conv2  # noqa: E402
from yolotr.nn.v10_blocks import RepVGGDW  # noqa: E402

register("Conv2", Conv2, "same")
register("RepVGGDW", RepVGGDW, "same")
