"""Checks of a model YAML's top-level keys and rows, for :func:`yolotr.nn.builder.build_layers`.

Each check raises a ``ConfigError`` that names the file, the row and the argument (or logs a warning for a key
that builds nothing), so that a mistake in a YAML never reaches a module's constructor as a torch traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import math

from torch import nn

from yolotr.errors import ConfigError, did_you_mean, is_number

KNOWN_KEYS = (
    "nc",
    "depth_multiple",
    "width_multiple",
    "anchors",
    "backbone",
    "head",
    "activation",
    "scales",
    "scale",
    "reg_max",
    "bn_eps",
    "bn_momentum",
    "yaml_file",
    "ch",
    "channels",
    "kpt_shape",
    "end2end",
    "inplace",
    "text_model",
)


SCALE_FIELDS = ("depth", "width", "max_channels")


def check_class_count(value, name: str, where: str, nc: int) -> None:
    """Refuse a head's class count that is not a positive whole number (``nc`` is resolved before), naming the
    nearest top-level key for a misspelt name (``ncc``), and one written as a number other than ``nc``: the
    model's classes (and an ``nc`` override by the data) would not reach the head, whose outputs then did not
    fit the labels (an IndexError deep in the loss)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = did_you_mean(value, ("nc",)) if isinstance(value, str) else ""
        raise ConfigError(f"{where}: {name}'s number of classes must be a positive integer or nc, got {value!r}{hint}")
    if value != nc:
        raise ConfigError(
            f"{where}: {name} is given {value} classes but the model has nc = {nc}; write nc in the row (the class "
            "count then follows nc and the data's classes)"
        )


def positive_number(value, what: str, where: str, high: float = math.inf) -> float:
    """``value`` as a float in ``(0, high]`` (numeric strings such as YAML's ``1e-5`` included);
    ``ConfigError`` naming ``where`` and ``what`` otherwise."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        bound = "" if high == math.inf else f" and at most {high:g}"
        raise ConfigError(f"{where}: {what} must be a number greater than 0{bound}, got {value!r}")
    return float(value)


def anchors_per_level(anchors, source: str) -> int:
    """The number of anchors per level of the ``anchors`` key: an integer, or ``[w1, h1, w2, h2, ...]`` per level."""
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors >= 1:
        return anchors
    if (
        isinstance(anchors, list)
        and anchors
        and all(isinstance(level, list) and level and len(level) % 2 == 0 for level in anchors)
        and len({len(level) for level in anchors}) == 1
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for lv in anchors for v in lv)
    ):
        return len(anchors[0]) // 2
    raise ConfigError(
        f"{source}: 'anchors' must be the number of anchors per level (e.g. 3) or one list of positive "
        f"[w1, h1, w2, h2, ...] per level, all of the same length; got {anchors!r}"
    )


def warn_unknown_keys(cfg: dict, source: str) -> None:
    """Warn about top-level keys of a model dict that neither a builder nor a layer's arguments use (a
    misspelled ``depth_multiple`` would otherwise be ignored), with the closest known key."""
    rows = [row for part in ("backbone", "head") if isinstance(cfg.get(part), list) for row in cfg[part]]
    args = [row[3] for row in rows if isinstance(row, list) and len(row) == 4 and isinstance(row[3], list)]
    used = {a for row_args in args for a in row_args if isinstance(a, str)}
    for key in cfg:
        if key not in KNOWN_KEYS and key not in used:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known keys: {', '.join(KNOWN_KEYS)})"
            logging.getLogger("yolotr").warning("%s: unknown top-level key '%s' is ignored%s", source, key, hint)


def warn_unused_keys(cfg: dict, in_channels: int, source: str) -> None:
    """Warn of known top-level keys that build nothing here: ``ch`` / ``channels`` other than the image channels
    the model is built for, and YOLOv5's multiples beside ``scales`` (which win)."""
    log = logging.getLogger("yolotr")
    for key in ("ch", "channels"):
        if key in cfg and cfg[key] != in_channels:
            log.warning(
                "%s: '%s: %s' is not used: the model takes %d-channel images (yolotr reads every image as RGB; "
                "DetectionModel(..., ch=N) builds another count)", source, key, cfg[key], in_channels,
            )  # fmt: skip
    multiples = [k for k in ("depth_multiple", "width_multiple") if k in cfg]
    if cfg.get("scales") and multiples:
        log.warning("%s: %s ignored: 'scales' sets depth and width", source, " and ".join(multiples))


def model_scale(cfg: dict, source: str) -> tuple[str, float, float, float]:
    """``(scale, depth, width, max_channels)`` of a model dict.

    With ``scales:`` the dict's ``scale`` letter picks the row (the first one, with a warning, when
    none is given); without it ``depth_multiple`` and ``width_multiple`` apply and nothing is capped.
    """
    scales = cfg.get("scales")
    if not scales:
        depth = positive_number(cfg.get("depth_multiple", 1.0), "'depth_multiple'", source)
        return "", depth, positive_number(cfg.get("width_multiple", 1.0), "'width_multiple'", source), math.inf
    if not isinstance(scales, dict) or not all(isinstance(v, list) and len(v) == 3 for v in scales.values()):
        raise ConfigError(f"{source}: 'scales' must map a letter to [depth, width, max_channels]")
    scale = cfg.get("scale")
    if not scale and len(scales) == 1:
        scale = next(iter(scales))
    elif not scale:
        scale = next(iter(scales))
        logging.getLogger("yolotr").warning(
            "%s: no model scale given (a name like yolov8n.yaml gives one); using scale '%s'", source, scale
        )
    if scale not in scales:
        raise ConfigError(f"{source}: unknown scale {scale!r}; this YAML has scales {', '.join(map(str, scales))}")
    depth, width, max_channels = (
        positive_number(v, f"scale {scale!r} {what}", source) for v, what in zip(scales[scale], SCALE_FIELDS)
    )
    return str(scale), depth, width, max_channels


def check_sources(source, index: int, where: str) -> list[int]:
    sources = [source] if isinstance(source, int) else source
    if not isinstance(sources, list) or not sources or not all(isinstance(s, int) for s in sources):
        raise ConfigError(f"{where}: 'from' must be an int or a list of ints, got {source!r}")
    for s in sources:
        valid = (0 <= s < index) or (s < 0 and index + s >= 0) or (index == 0 and s == -1)
        if not valid:
            usable = f"-1..-{index} or 0..{index - 1}" if index else "only -1, the input image"
            raise ConfigError(
                f"{where}: 'from' index {s} does not name an earlier layer (layer {index} can use {usable})"
            )
    return sources


def numeric_parameter(p: inspect.Parameter) -> bool:
    """Whether a constructor parameter takes a number (or numbers): its default is one (or a tuple of
    them), or, without a default, its annotation names int, float or bool and not str."""
    if p.default is not inspect.Parameter.empty and p.default is not None:
        d = p.default
        return isinstance(d, int | float) or (isinstance(d, tuple) and all(isinstance(x, int | float) for x in d))
    ann = str(p.annotation)
    return p.annotation is not inspect.Parameter.empty and "str" not in ann and any(t in ann for t in ("int", "float"))


SIZE_PARAMETERS = {"k": "kernel size", "s": "stride"}  # of the conv and csp modules: 0 or less fails inside torch


def check_numeric_args(cls: type[nn.Module], args: list, row_args: list, name: str, where: str) -> None:
    """A numeric argument of a ``conv``/``csp`` module (kernel, stride, repeats, ratios, by the
    constructor's default or annotation) given as a string (``[64, abc, 2]``) is a ``ConfigError``
    naming the layer, the argument and its place in the row, instead of Python's words from deep
    inside the module (or, for a stride, a crash at the first forward pass); so is a kernel size or stride
    below 1."""

    def bad(value) -> bool:
        return isinstance(value, str) or (isinstance(value, list | tuple) and any(bad(v) for v in value))

    for p, value in zip(inspect.signature(cls).parameters.values(), args):
        place = next((k for k, a in enumerate(row_args) if a is value), None)
        nth = f" (args[{place}] of the row)" if place is not None else ""
        if bad(value) and numeric_parameter(p):
            kind = "true or false" if isinstance(p.default, bool) else "a number"
            quoted = isinstance(value, str) and is_number(value)
            hint = " (a number in quotes: remove the quotes)" if quoted else ""
            raise ConfigError(f"{where}: {name}'s argument '{p.name}'{nth} must be {kind}, got {value!r}{hint}")
        sizes = value if isinstance(value, list | tuple) else [value]
        if p.name in SIZE_PARAMETERS and any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in sizes):
            what = SIZE_PARAMETERS[p.name]
            raise ConfigError(f"{where}: {name}'s {what} '{p.name}'{nth} must be at least 1, got {value!r}")


def check_same_rule_input(cls: type[nn.Module], args: list, c1: int, name: str, where: str) -> None:
    """A module whose arguments are given verbatim (rule ``same``: ``SwinV2_CSPB``, ``Conv2``, ``RepVGGDW``) and
    whose first parameter is its input channels (``c1``, or ``ed`` for both): that argument must be the channels it
    gets, and (its output channels being its input's) so must a second ``c2``; otherwise the next layer was blamed
    for the mismatch."""
    params = list(inspect.signature(cls).parameters)
    for i, p in enumerate(params[:2]):
        if p in ("c1", "c2", "ed") and len(args) > i and isinstance(args[i], int) and not isinstance(args[i], bool):
            if args[i] != c1:
                raise ConfigError(
                    f"{where}: {name}'s {p} (args[{i}]) is {args[i]} but its input has {c1} channels; "
                    f"{name} keeps its input's channels, so write {c1}"
                )
