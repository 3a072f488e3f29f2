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

    Raises:
        ConfigError: for a key that is not a known setting (naming it and where it came from).
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
                cfg[key] = value
    return cfg
