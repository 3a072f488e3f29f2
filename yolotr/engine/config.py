"""The training configuration: ``cfg/default.yaml`` plus overrides, checked key by key."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

from yolotr.errors import ConfigError

DEFAULT_CFG = Path(__file__).resolve().parent.parent / "cfg" / "default.yaml"


@lru_cache(maxsize=1)
def _defaults() -> dict:
    return yaml.safe_load(DEFAULT_CFG.read_text(encoding="utf-8"))


def default_config() -> dict:
    """A fresh copy of every default hyperparameter."""
    return copy.deepcopy(_defaults())


def resolve_config(overrides: dict | None = None, cfg_file: str | Path | None = None) -> dict:
    """Defaults, then the keys of ``cfg_file``, then ``overrides`` (None values are ignored).

    A setting whose default is true/false takes only true or false; one whose default is a number takes
    numbers (a string such as ``"1e-3"``, which YAML leaves a string, is read as one).

    Raises:
        ConfigError: for a key that is not a known setting, or a value of the wrong kind (naming the key
            and where it came from).
    """
    cfg = default_config()
    layers = []
    if cfg_file is not None:
        try:
            layers.append((str(cfg_file), yaml.safe_load(Path(cfg_file).read_text(encoding="utf-8")) or {}))
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{cfg_file}: cannot read configuration: {e}") from None
    layers.append(("arguments", overrides or {}))
    for source, layer in layers:
        for key, value in layer.items():
            if key not in cfg:
                raise ConfigError(f"{source}: unknown setting '{key}' (see {DEFAULT_CFG.name} for the keys)")
            if value is not None:
                cfg[key] = _checked(source, key, value, cfg[key])
    return cfg


def _checked(source: str, key: str, value, default):
    """``value`` for ``key``, of the kind of its default (see :func:`resolve_config`)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: setting '{key}' must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}") from None
            value = int(number) if isinstance(default, int) and number.is_integer() else number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}")
    return value
