"""Training configuration: defaults, overrides, unknown keys and values of the wrong kind."""

from __future__ import annotations

import pytest

from yolotr.engine.config import default_config, resolve_config
from yolotr.errors import ConfigError


def test_overrides_replace_defaults_and_none_keeps_them():
    cfg = resolve_config({"epochs": 3, "lr0": None, "lean_activations": False})
    assert cfg["epochs"] == 3
    assert cfg["lr0"] == default_config()["lr0"]
    assert cfg["lean_activations"] is False


def test_unknown_key_is_named_with_its_source(tmp_path):
    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text("epochs: 2\nlean_activation: true\n")
    with pytest.raises(ConfigError, match=r"my\.yaml: unknown setting 'lean_activation'"):
        resolve_config(cfg_file=cfg_file)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lean_activations", "maybe", "must be true or false"),
        ("ema", 1, "must be true or false"),
        ("mmap_threshold_mb", "abc", "must be a number"),
        ("epochs", True, "must be a number"),
        ("lr0", [0.1], "must be a number"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=rf"arguments: setting '{key}' {message}, got"):
        resolve_config({key: value})


def test_numbers_yaml_leaves_as_strings_are_read_as_numbers():
    cfg = resolve_config({"lr0": "1e-3", "epochs": "5", "mmap_threshold_mb": 0.5, "time_limit": 2})
    assert cfg["lr0"] == pytest.approx(1e-3)
    assert cfg["epochs"] == 5 and isinstance(cfg["epochs"], int)
    assert cfg["mmap_threshold_mb"] == 0.5
    assert cfg["time_limit"] == 2


def test_settings_with_a_text_default_take_other_kinds():
    cfg = resolve_config({"amp": True, "device": "cpu"})
    assert cfg["amp"] is True and cfg["device"] == "cpu"
