"""Model YAML (already parsed to a dict) -> ``nn.Sequential`` of layers.

The loop is YOLOv5's ``parse_model``: each row ``[from, number, module, args]`` is checked,
its arguments completed by the module's registry rule, depth and width multiples applied, and
the input-channel bookkeeping carried along. Nothing is ``eval``-ed: argument names resolve
against the YAML's own keys, and the ``activation:`` key is parsed from an allow-list.

Two grammars share the loop. YOLOv5's: ``depth_multiple``, ``width_multiple`` and ``anchors``.
The ``ultralytics`` package's (YOLOv8 / YOLO11 / YOLO12): ``scales`` maps a letter to
``[depth, width, max_channels]``, the dict's ``scale`` picks one, output channels are capped at
``max_channels`` before the width is applied, and without ``anchors`` a ``Detect`` row builds the
anchor-free head (:class:`yolotr.nn.head_af.AnchorFreeDetect`).
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from yolotr.errors import ConfigError, did_you_mean
from yolotr.nn import registry
from yolotr.nn.conv import Conv
from yolotr.nn.yaml_checks import (
    anchors_per_level,
    check_class_count,
    check_numeric_args,
    check_same_rule_input,
    check_sources,
    model_scale,
    warn_unknown_keys,
    warn_unused_keys,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        nn.SiLU,
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.Mish,
        nn.Hardswish,
        nn.GELU,
        nn.ELU,
        nn.Sigmoid,
        nn.Tanh,
        nn.Identity,
    )
}
CONSTANTS = {"None": None, "True": True, "False": False}
UPSAMPLE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear", "area")
HEAD_RULES = ("detect", "detect_af", "detr")


@dataclass
class LayerRow:
    """One built layer: its index, ``from``, repeat count, module name, final arguments."""

    index: int
    source: int | list[int]
    number: int
    module: str
    args: list
    params: int


@dataclass
class BuiltLayers:
    """What :func:`build_layers` returns."""

    layers: nn.Sequential
    save: list[int]
    channels: list[int]
    rows: list[LayerRow] = field(default_factory=list)


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return math.ceil(x / divisor) * divisor


def parse_activation(text: str, where: str) -> Callable[[], nn.Module]:
    """``"nn.LeakyReLU(0.1)"`` (or ``torch.nn.``, as the package's yolov6.yaml writes it) -> a factory of that
    activation; only :data:`ACTIVATIONS` are allowed.

    The activation is built and run once on a zero tensor, so arguments of the wrong kind (which
    PyTorch checks only in ``forward``) are a ``ConfigError`` naming ``where`` here.
    """
    try:
        node = ast.parse(str(text).strip(), mode="eval").body
        if isinstance(node, ast.Call):
            func, args, kwargs = node.func, node.args, node.keywords
        else:
            func, args, kwargs = node, [], []
        name = func.attr if isinstance(func, ast.Attribute) else func.id
        if isinstance(func, ast.Attribute) and ast.unparse(func.value) not in ("nn", "torch.nn"):
            raise ValueError
        values = [ast.literal_eval(a) for a in args]
        keywords = {k.arg: ast.literal_eval(k.value) for k in kwargs}
    except (SyntaxError, ValueError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot read activation {text!r}; write e.g. nn.LeakyReLU(0.1)") from e
    if name not in ACTIVATIONS:
        raise ConfigError(f"{where}: activation {name!r} is not allowed; choose one of {sorted(ACTIVATIONS)}")
    try:
        ACTIVATIONS[name](*values, **keywords)(torch.zeros(1))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{where}: activation {text!r}: {e}") from None
    return functools.partial(ACTIVATIONS[name], *values, **keywords)


@contextlib.contextmanager
def conv_activation(factory: Callable[[], nn.Module] | None) -> Iterator[None]:
    """Use ``factory`` as ``Conv``'s default activation while building, then restore it."""
    previous = Conv.default_act
    if factory is not None:
        Conv.default_act = factory
    try:
        yield
    finally:
        Conv.default_act = previous


def _resolve(arg, cfg: dict):
    """A YAML argument: names of top-level YAML keys (``nc``, ``anchors``) and None/True/False resolve."""
    if isinstance(arg, str):
        if arg in CONSTANTS:
            return CONSTANTS[arg]
        if arg in cfg and arg not in ("backbone", "head"):
            return cfg[arg]
    return arg


PACKAGE_GRAMMAR_NAMES = {"Bottleneck": "KBottleneck", "BottleneckCSP": "KBottleneckCSP"}


def _registry_name(name: str, anchor_free: bool, end2end: bool) -> str:
    """The registry name a YAML module name builds. In a YAML without ``anchors`` (the package's grammar)
    ``Detect`` is the anchor-free head (the end-to-end one with ``end2end: True``), and ``Bottleneck`` /
    ``BottleneckCSP`` are the package's, whose bottleneck convs are both 3x3 (:data:`PACKAGE_GRAMMAR_NAMES`);
    in YOLOv5's grammar every name is YOLOv5's."""
    if name == "Detect" and anchor_free:
        return "E2EDetect" if end2end else "AnchorFreeDetect"
    return PACKAGE_GRAMMAR_NAMES.get(name, name) if anchor_free else name


def build_layers(cfg: dict, in_channels: int = 3, source: str = "<dict>") -> BuiltLayers:
    """Build the layers of a YOLOv5-format model dict.

    Args:
        cfg: the parsed YAML (``nc``, ``depth_multiple``, ``width_multiple``, ``anchors``,
            ``backbone``, ``head``, optional ``activation``).
        in_channels: image channels.
        source: the YAML's file name, used in error messages.

    Unknown top-level keys are logged as a warning (:func:`warn_unknown_keys`).

    Raises:
        ConfigError: naming ``source``, the layer index and the row, for an unknown module, an
            argument count the module does not accept, a ``from`` index that is not earlier, or a
            head that is not the one last layer; naming ``source`` and the key for a top-level value
            of the wrong kind (``nc``, ``anchors``, multiples, ``scales``, ``reg_max``).
    """
    warn_unknown_keys(cfg, source)
    warn_unused_keys(cfg, in_channels, source)
    for key in ("backbone", "head"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"{source}: missing or malformed '{key}' (a list of [from, number, module, args] rows)")
    rows_in = cfg["backbone"] + cfg["head"]
    if not rows_in:
        raise ConfigError(f"{source}: 'backbone' and 'head' have no layers; the last layer must be a Detect head")
    nc = cfg.get("nc")
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"{source}: 'nc' must be a positive integer, got {nc!r}")
    scale, gd, gw, max_channels = model_scale(cfg, source)
    anchor_free = "anchors" not in cfg
    no = None if anchor_free else anchors_per_level(cfg["anchors"], source) * (nc + 5)
    reg_max = cfg.get("reg_max", 16)
    if isinstance(reg_max, bool) or not isinstance(reg_max, int) or reg_max < 1:
        raise ConfigError(f"{source}: 'reg_max' must be a positive integer, got {reg_max!r}")
    end2end = cfg.get("end2end", False)
    if not isinstance(end2end, bool):
        raise ConfigError(f"{source}: 'end2end' must be True or False, got {end2end!r}")
    legacy_head = True
    act = cfg.get("activation")
    factory = parse_activation(act, f"{source}: key 'activation'") if act else None

    layers, save, rows = [], [], []
    ch = [in_channels]
    with conv_activation(factory):
        for i, row in enumerate(rows_in):
            where = f"{source}: layer {i} {row!r}"
            if not isinstance(row, list) or len(row) != 4 or not isinstance(row[3], list):
                raise ConfigError(f"{where}: a row must be [from, number, module, [args]]")
            f, n, name, args = row
            sources = check_sources(f, i, where)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"{where}: 'number' must be a positive integer, got {n!r}")
            try:
                spec = registry.lookup(_registry_name(str(name), anchor_free, end2end))
            except KeyError as e:
                raise ConfigError(f"{where}: {e.args[0]}") from None
            if spec.rule in HEAD_RULES and end2end and not spec.end2end:
                raise ConfigError(
                    f"{where}: 'end2end: True' needs a head with a one-to-one branch (an anchor-free Detect, i.e. a "
                    f"YAML without 'anchors', or v10Detect); {name} here cannot run end to end: remove 'end2end'"
                )
            if spec.rule in HEAD_RULES and i != len(rows_in) - 1:
                raise ConfigError(f"{where}: {name} is a head and must be the last layer (layer {len(rows_in) - 1})")
            if spec.rule in HEAD_RULES and not isinstance(f, list):
                raise ConfigError(
                    f"{where}: a head's 'from' is the list of layers it reads (e.g. [15, 18, 21]), got {f!r}"
                )
            if spec.rule in HEAD_RULES and n != 1:
                raise ConfigError(f"{where}: a head is built once; its 'number' must be 1, got {n}")
            if spec.rule == "detect_af" and len(args) > 1:
                raise ConfigError(
                    f"{where}: the anchor-free {name} takes only [nc]; a YAML without a top-level 'anchors' key "
                    "builds the anchor-free head (add 'anchors' for YOLOv5's anchor-based Detect)"
                )
            legacy_head = legacy_head and not spec.modern_head
            args = [_resolve(a, cfg) for a in args]
            if any(isinstance(a, dict) for a in args):
                raise ConfigError(
                    f"{where}: a row's args are positional; write {name}'s arguments in order, not as a mapping"
                )
            if spec.cls is nn.Upsample and len(args) > 2 and args[2] not in UPSAMPLE_MODES:
                raise ConfigError(
                    f"{where}: unknown upsampling mode {args[2]!r}{did_you_mean(str(args[2]), UPSAMPLE_MODES)}"
                )
            n = max(round(n * gd), 1) if n > 1 else n
            c_in = [ch[s] for s in sources]
            c1 = c_in[0]
            if spec.rule in ("conv", "csp"):
                if not args:
                    raise ConfigError(f"{where}: {name} needs its output channels as the first argument")
                c2 = args[0]
                if isinstance(c2, bool) or not isinstance(c2, int | float):
                    close = difflib.get_close_matches(str(c2), [str(k) for k in cfg], n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ConfigError(
                        f"{where}: {name}'s output channels must be a number or a top-level key, got {c2!r}{hint}"
                    )
                if not math.isfinite(c2) or c2 < 1:
                    raise ConfigError(f"{where}: {name}'s output channels must be at least 1, got {c2!r}")
                if c2 != no:
                    c2 = make_divisible(min(c2, max_channels) * gw, 8)
                args = [c1, c2, *args[1:]]
                if spec.rule == "csp":
                    args.insert(2, n)
                    n = 1
                if spec.at_scale is not None:
                    args = spec.at_scale(args, scale)
                check_numeric_args(spec.cls, args, row[3], str(name), where)
            elif spec.complete is not None:  # rules "custom" and "detr": the module's own completion
                if spec.rule == "detr" and args:
                    check_class_count(args[0], str(name), where, nc)
                args, c2, n = spec.complete(args, c_in, n, where)
            elif spec.rule == "batchnorm":
                args, c2 = [c1], c1
            elif spec.rule == "concat":
                c2 = sum(c_in)
            elif spec.rule == "detect_af":
                if not args:
                    raise ConfigError(f"{where}: {name} needs the number of classes as its argument")
                check_class_count(args[0], str(name), where, nc)
                args = [args[0], reg_max, c_in, legacy_head]
                c2 = c1
            elif spec.rule == "detect":
                words = [a for a in args[:2] if isinstance(a, str)]
                if words:
                    raise ConfigError(f"{where}: unknown name {words[0]!r}{did_you_mean(words[0], ('nc', 'anchors'))}")
                if len(args) < 2:
                    raise ConfigError(f"{where}: {name} takes [nc, anchors] (write [nc, anchors] in the row)")
                check_class_count(args[0], str(name), where, nc)
                args.append(c_in)
                if len(args) > 1 and isinstance(args[1], int):
                    args[1] = [list(range(args[1] * 2))] * len(sources)
                if len(args) > 2 and isinstance(args[1], list | tuple) and len(args[1]) != len(sources):
                    raise ConfigError(
                        f"{where}: {name} has {len(args[1])} anchor levels but {len(sources)} input(s) {f!r}; "
                        "'from' needs one layer per anchor level"
                    )
                c2 = c1
            else:
                c2 = c1
                check_same_rule_input(spec.cls, args, c1, str(name), where)
                check_numeric_args(spec.cls, args, row[3], str(name), where)
            try:
                inspect.signature(spec.cls).bind(*args)
            except TypeError as e:
                raise ConfigError(f"{where}: wrong arguments for {name}{tuple(args)}: {e}") from None
            try:
                with warnings.catch_warnings():  # a layer of 0 channels is refused below, in words of its row
                    warnings.filterwarnings("ignore", "Initializing zero-element tensors", UserWarning)
                    module = nn.Sequential(*(spec.cls(*args) for _ in range(n))) if n > 1 else spec.cls(*args)
            except (TypeError, ValueError, AssertionError, RuntimeError, ArithmeticError) as e:
                raise ConfigError(f"{where}: cannot build {name}{tuple(args)}: {e}") from None
            layers_of = (m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))
            empty = next((m for m in layers_of if m.weight.numel() == 0), None)
            if empty is not None:
                raise ConfigError(
                    f"{where}: {name}{tuple(args)} builds a layer with no channels ({empty}); "
                    "is an expansion ratio or a channel count 0?"
                )
            params = sum(p.numel() for p in module.parameters())
            module.i, module.f, module.type = i, f, str(name)
            save.extend(s % i for s in sources if s != -1)
            layers.append(module)
            rows.append(LayerRow(i, f, n, str(name), args, params))
            if i == 0:
                ch = []
            ch.append(c2)
    if spec.rule not in HEAD_RULES:
        raise ConfigError(f"{source}: the last layer ({len(rows_in) - 1}, {name}) must be a Detect head")
    return BuiltLayers(nn.Sequential(*layers), sorted(set(save)), ch, rows)
