"""The training configuration: ``cfg/default.yaml`` plus overrides, checked key by key."""

from __future__ import annotations

import copy
import math
import numbers
import os
from functools import lru_cache
from pathlib import Path

import yaml

from yolotr.engine.amp import check_amp
from yolotr.engine.multi_scale import check_multi_scale
from yolotr.errors import ConfigError, did_you_mean, setting_hint
from yolotr.yaml_loading import read_yaml_file

DEFAULT_CFG = Path(__file__).resolve().parent.parent / "cfg" / "default.yaml"

# The values a numeric setting accepts: ">= x", "> x", or an interval ("[0, 1]", "[0, 1)", "(0, 1]").
RANGES = {
    key: rule
    for rule, keys in {
        ">= 1": "epochs batch nbs imgsz val_period max_det nan_max_bad_steps nan_window tal_topk",
        ">= 0": "patience workers freeze close_mosaic save_period save_period_steps warmup_min_iters time_limit "
        "mmap_threshold_mb nan_max_rollbacks seed "
        "warmup_epochs warmup_bias_lr grad_clip weight_decay "
        "box cls obj fl_gamma af_box af_cls dfl",
        # cls_pw and obj_pw are YOLOv5's BCE positive weights: 0 would give every positive target no loss (the
        # package's cls_pw, a class-weight power whose 0 turns it off, is another setting under the same name)
        "> 0": "lr0 lrf ema_tau anchor_t amp_init_scale cls_pw obj_pw",
        "[0, 180]": "degrees",
        "[0, 90)": "shear",
        "[0, 0.001]": "perspective",  # YOLOv5's and the package's documented range
        "[0, 1]": "mosaic mixup copy_paste cutmix fliplr flipud bgr translate val_conf ema_decay label_smoothing "
        "hsv_h hsv_s hsv_v",
        "[0, 1)": "momentum warmup_momentum scale",
        "(0, 1]": "nan_lr_factor fraction",
    }.items()
    for key in keys.split()
}
# Counts: a whole number is needed (``epochs: 2.5`` is refused; ``2.0`` is read as 2).
WHOLE_NUMBERS = set(
    "epochs patience batch nbs imgsz workers seed freeze close_mosaic save_period save_period_steps val_period max_det "
    "warmup_min_iters nan_max_bad_steps nan_window nan_max_rollbacks tal_topk".split()
)


def check_true_false_auto(value, source: str = "arguments", key: str = "lean_activations"):
    """``True``, ``False`` or ``"auto"`` (also the words ``true``/``false``), else a ``ConfigError``."""
    words = {"true": True, "false": False, "auto": "auto"}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ConfigError(f"{source}: setting '{key}' must be true, false or auto, got {value!r}")


def _number_or_auto(value, source: str, key: str, low: float, high: float, wanted: str):
    """``"auto"``, or ``value`` (a number, also written as a string) within ``[low, high]``, else a ConfigError
    saying what was ``wanted``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high or not math.isfinite(number):
        raise ConfigError(f"{source}: setting '{key}' must be {wanted} or auto, got {value!r}")
    return number


def check_number_or_auto(value, source: str = "arguments", key: str = "lr_transformer_scale"):
    """A number ``>= 0`` (also written as a string) or ``"auto"``, else a ``ConfigError``."""
    return _number_or_auto(value, source, key, 0.0, math.inf, "a number >= 0")


def check_fraction_or_auto(value, source: str = "arguments", key: str = "val_iou"):
    """A number in ``[0, 1]`` (also written as a string) or ``"auto"``, else a ``ConfigError``."""
    return _number_or_auto(value, source, key, 0.0, 1.0, "a number in [0, 1]")


# Settings that take one of a few words, each with the function that checks (and normalises) a value.
ADAM_LIKE = ("Adam", "Adamax", "NAdam", "RAdam")  # the ultralytics package's other choices, with RMSprop
OPTIMIZER_NAMES = ("SGD", "AdamW", "MuSGD", *ADAM_LIKE, "RMSprop", "auto")


def check_optimizer(value, source: str = "arguments", key: str = "optimizer") -> str:
    """One of :data:`OPTIMIZER_NAMES` in any case (``sgd``, ``adamw``), given back as spelled there."""
    names = {n.lower(): n for n in OPTIMIZER_NAMES}
    if isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    raise ConfigError(
        f"{source}: setting '{key}' must be one of {', '.join(OPTIMIZER_NAMES)}, got {value!r}"
        + (did_you_mean(value.lower(), list(names)) if isinstance(value, str) else "")
    )


def check_classes(value, source: str = "arguments", key: str = "classes") -> list[int]:
    """Class ids: a whole number ``>= 0`` or a non-empty list of them (``2``, ``[0, 2]``; repeats dropped), given
    back as a list; else a ``ConfigError``. Whether each is a class of the dataset is checked against its names
    (:func:`~yolotr.data.subset.check_class_ids`)."""
    items = value if isinstance(value, list | tuple) else [value]
    ids = []
    for item in items:
        if isinstance(item, str) and item.strip().lstrip("-").isdigit():
            item = int(item)  # "--set classes=[0,2]" gives numbers already; a list typed with quotes does not
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise ConfigError(
                f"{source}: setting '{key}' must be a class id (a whole number >= 0) or a list of them, got {value!r}"
            )
        ids.append(item)
    if not ids:
        raise ConfigError(f"{source}: setting '{key}' is an empty list: it would keep no object (null keeps all)")
    return list(dict.fromkeys(ids))


def check_save_period(value, source: str = "arguments", key: str = "save_period") -> int:
    """A whole number of epochs (also written as a string); one below 0 is read as 0 (none): -1 is YOLOv5's and the
    package's default ("disabled if < 1"), so their settings files and flags carry it. Else a ``ConfigError``."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{source}: setting '{key}' must be a whole number of epochs (0 or less: none), got {value!r}"
        )
    return max(value, 0)


def check_copy_paste_mode(value, source: str = "arguments", key: str = "copy_paste_mode") -> str:
    """``"flip"``, the one mode of ``copy_paste`` (each pasted object is its own left-right mirror: YOLOv5's, and
    the package's default); the package's ``"mixup"`` (objects of another image) is refused by name."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word == "flip":
        return word
    if word == "mixup":
        raise ConfigError(
            f"{source}: setting '{key}': the package's mixup mode (objects pasted from another image) is not "
            "implemented; copy_paste pastes each object's left-right mirror (flip, the package's default and YOLOv5's)"
        )
    raise ConfigError(f"{source}: setting '{key}' must be flip, got {value!r}")


CHOICE_CHECKS = {
    "copy_paste_mode": check_copy_paste_mode,
    "save_period": check_save_period,
    "multi_scale": check_multi_scale,
    "optimizer": check_optimizer,
    "amp": check_amp,
    "lean_activations": check_true_false_auto,
    "lr_transformer_scale": check_number_or_auto,
    "val_iou": check_fraction_or_auto,
    "classes": check_classes,
}


@lru_cache(maxsize=1)
def _defaults() -> dict:
    return yaml.safe_load(DEFAULT_CFG.read_text(encoding="utf-8"))


def default_config() -> dict:
    """A fresh copy of every default hyperparameter."""
    return copy.deepcopy(_defaults())


def load_cfg_file(path: str | Path) -> dict:
    """The settings of a ``--cfg`` YAML, checked as :func:`resolve_config` checks them, errors naming ``path``.

    Raises:
        ConfigError: for a file that cannot be read or parsed, one that is not a mapping of settings,
            an unknown key or a value of the wrong kind or out of range.
    """
    layer = read_yaml_file(path, "configuration", ConfigError)
    if layer is None:
        return {}
    if not isinstance(layer, dict):
        raise ConfigError(
            f"{path}: a configuration must be a mapping of settings (key: value), not a {type(layer).__name__}"
        )
    _apply(default_config(), str(path), layer)
    return layer


def resolve_config(overrides: dict | None = None, cfg_file: str | Path | None = None) -> dict:
    """Defaults, then the keys of ``cfg_file``, then ``overrides`` (None values are ignored).

    A setting whose default is true/false takes only true or false; one whose default is a number takes
    numbers (a string such as ``"1e-3"``, which YAML leaves a string, is read as one) within its
    :data:`RANGES` entry.

    Raises:
        ConfigError: for a key that is not a known setting, or a value of the wrong kind or out of range
            (naming the key and where it came from).
    """
    cfg = default_config()
    if cfg_file is not None:
        _apply(cfg, str(cfg_file), load_cfg_file(cfg_file))
    _apply(cfg, "arguments", overrides or {})
    if cfg["nan_max_bad_steps"] > cfg["nan_window"]:  # the window never holds that many: no roll back, ever
        raise ConfigError(
            f"nan_max_bad_steps ({cfg['nan_max_bad_steps']}) must be at most nan_window ({cfg['nan_window']}): the "
            "guard rolls back after nan_max_bad_steps skipped steps within nan_window optimizer steps, so a "
            "larger count would never roll back, and a persistent fault would skip every step to the end"
        )
    return cfg


def _apply(cfg: dict, source: str, layer: dict) -> None:
    """Set the keys of ``layer`` in ``cfg``, each checked by :func:`_checked` (None values are ignored). Unknown
    keys are refused all at once, each with its hint: a reference's file (YOLOv5's hyp.scratch-low.yaml, the
    package's args.yaml) given as ``--cfg`` shows every key to remove in one run."""
    unknown = [key for key in layer if key not in cfg]
    if len(unknown) == 1:
        key = unknown[0]
        hint = setting_hint(str(key), cfg, "train")
        raise ConfigError(f"{source}: unknown setting '{key}'{hint} (the settings are the keys of {DEFAULT_CFG})")
    if unknown:
        lines = "".join(f"\n  {key}{setting_hint(str(key), cfg, 'train') or ''}" for key in unknown)
        raise ConfigError(
            f"{source}: {len(unknown)} unknown settings (the settings are the keys of {DEFAULT_CFG}):{lines}"
        )
    for key, value in layer.items():
        if value is not None:
            cfg[key] = _checked(source, key, value, cfg[key])


def check_fraction(key: str, value) -> float:
    """``value`` as a float in ``[0, 1]`` (a threshold such as ``conf`` or ``iou``), else a ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be a number between 0 and 1, got {value!r}")
    return float(value)


def check_flag(key: str, value) -> bool:
    """``value`` if it is ``True`` or ``False``, else a ``ConfigError`` (``key`` starts its message): ``"False"`` or
    ``2`` is refused, not read as true."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def check_count(key: str, value) -> int:
    """``value`` as an int >= 1 (``max_det``, ``batch``), else a ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{key} must be a whole number >= 1, got {value!r}")
    return int(value)


def in_range(value: float, rule: str) -> bool:
    """Whether ``value`` satisfies a :data:`RANGES` rule (never when it is NaN or infinite)."""
    if not math.isfinite(value):
        return False
    if rule.startswith(">="):
        return value >= float(rule[2:])
    if rule.startswith(">"):
        return value > float(rule[1:])
    low, high = (float(x) for x in rule[1:-1].split(","))
    return (low <= value if rule[0] == "[" else low < value) and (value <= high if rule[-1] == "]" else value < high)


# settings that name a file or folder: a path (for model and data also a config object given inline, so only
# what is clearly not one is refused); a number given for project or name is the folder's name ("name=123")
PATH_SETTINGS = {"model": True, "data": True, "weights": False, "project": False, "name": False}


def _checked_path(source: str, key: str, value):
    if key in ("project", "name") and isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value)
    if PATH_SETTINGS[key]:
        wrong = isinstance(value, bool | numbers.Number | list | tuple)
    else:
        wrong = not isinstance(value, str | os.PathLike)
    if wrong or (isinstance(value, str) and not value.strip()):
        raise ConfigError(f"{source}: setting '{key}' must be a path, got {value!r}")
    return value


def _checked_rules(source: str, value):
    if not isinstance(value, list | tuple) or not all(isinstance(rule, str) for rule in value):
        raise ConfigError(f"{source}: setting 'weights_rename' must be a list of old=new rules, got {value!r}")
    return list(value)


# keys the ultralytics package spells alike with another meaning: what a value out of our range says
OUT_OF_RANGE_HINTS = {
    "cls_pw": " (YOLOv5's weight of the positive class in the class BCE, 1.0 by default; the ultralytics package's "
    "cls_pw, a class-frequency weighting power where 0 is off, is not implemented: remove the key)",
}


def _checked(source: str, key: str, value, default):
    """``value`` for ``key``, of the kind of its default (see :func:`resolve_config`)."""
    if key in CHOICE_CHECKS:
        return CHOICE_CHECKS[key](value, source)
    if key in PATH_SETTINGS:
        return value if value is None and key == "weights" else _checked_path(source, key, value)
    if key == "weights_rename":
        return _checked_rules(source, value)
    if isinstance(default, bool):
        return check_flag(f"{source}: setting '{key}'", value)
    if isinstance(default, int | float):
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}") from None
            value = int(number) if isinstance(default, int) and number.is_integer() else number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}")
        if key in WHOLE_NUMBERS:
            if not float(value).is_integer():
                raise ConfigError(f"{source}: setting '{key}' must be a whole number, got {value!r}")
            value = int(value)
        rule = RANGES.get(key)
        if rule is not None and not in_range(value, rule):
            where = f"in {rule}" if rule[0] in "[(" else rule
            raise ConfigError(
                f"{source}: setting '{key}' must be {where}, got {value!r}{OUT_OF_RANGE_HINTS.get(key, '')}"
            )
    return value
