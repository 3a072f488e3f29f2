"""Training configuration: defaults, overrides, unknown keys and values of the wrong kind."""

from __future__ import annotations

import re

import pytest

from yolotr.engine.config import RANGES, default_config, load_cfg_file, resolve_config
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
        ("lean_activations", "maybe", "must be true, false or auto"),
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
    assert cfg["amp"] == "true" and cfg["device"] == "cpu"  # amp's words: auto | fp16 | bf16 | false | true


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model", 5, "must be a path"),
        ("data", True, "must be a path"),
        ("data", [1, 2], "must be a path"),
        ("project", True, "must be a path"),
        ("weights", 5, "must be a path"),
        ("name", "", "must be a path"),
        ("weights_rename", "abc", "must be a list of old=new rules"),
        ("weights_rename", 5, "must be a list of old=new rules"),
    ],
)
def test_path_and_rule_settings_refuse_other_kinds(key, value, message):
    """Paths and rename rules are checked by kind up front: they failed deep in pathlib (``name=123`` divided a
    path by an int) or, for ``weights_rename='abc'``, were read one character at a time."""
    with pytest.raises(ConfigError, match=rf"setting '{key}' {message}, got"):
        resolve_config({key: value})


def test_a_number_given_as_a_run_name_is_the_folders_name():
    cfg = resolve_config({"name": 123, "project": 7, "data": {"train": "a", "names": ["x"]}, "weights": None})
    assert cfg["name"] == "123" and cfg["project"] == "7" and cfg["data"]["names"] == ["x"]


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("batch", 0, ">= 1"),
        ("epochs", 0, ">= 1"),
        ("nbs", 0, ">= 1"),
        ("imgsz", 0, ">= 1"),
        ("workers", -1, ">= 0"),
        ("freeze", -2, ">= 0"),
        ("lr0", 0, "> 0"),
        ("lr0", "nan", "> 0"),
        ("lrf", -0.1, "> 0"),
        ("warmup_epochs", -1, ">= 0"),
        ("hsv_s", -0.5, "in [0, 1]"),
        ("hsv_v", 1.5, "in [0, 1]"),
        ("seed", -3, ">= 0"),
        ("mosaic", 1.5, "in [0, 1]"),
        ("fliplr", -0.1, "in [0, 1]"),
        ("flipud", 2, "in [0, 1]"),
        ("momentum", 1.0, "in [0, 1)"),
        ("nan_lr_factor", 0, "in (0, 1]"),
    ],
)
def test_values_out_of_range_are_refused(key, value, bound):
    with pytest.raises(ConfigError, match=rf"arguments: setting '{key}' must be {re.escape(bound)}, got"):
        resolve_config({key: value})


def test_every_range_names_a_setting_and_the_defaults_are_within_them():
    defaults = default_config()
    assert set(RANGES) <= set(defaults)
    resolve_config(dict(defaults))
    assert resolve_config({"batch": 1, "mosaic": 0, "fliplr": 1, "workers": 0})["batch"] == 1


def test_cfg_file_that_is_missing_or_not_a_mapping_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read configuration"):
        load_cfg_file(tmp_path / "nope.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs: 2\n- batch: 4\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a configuration must be a mapping"):
        resolve_config(cfg_file=listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert load_cfg_file(empty) == {}


def test_cfg_file_settings_are_checked_with_the_file_as_source(tmp_path):
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("epochs: 2\nbatch: 0\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: setting 'batch' must be >= 1, got 0"):
        load_cfg_file(cfg_file)
    cfg_file.write_text("epochs: 2\nmosiac: 0.5\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: unknown setting 'mosiac'"):
        load_cfg_file(cfg_file)
    cfg_file.write_text("epochs: 2\nlr0: 1e-3\n")
    assert load_cfg_file(cfg_file) == {"epochs": 2, "lr0": "1e-3"}
    assert resolve_config({"batch": 4}, cfg_file=cfg_file)["lr0"] == pytest.approx(1e-3)


def test_counts_must_be_whole_numbers():
    with pytest.raises(ConfigError, match="setting 'epochs' must be a whole number, got 2.5"):
        resolve_config({"epochs": 2.5})
    cfg = resolve_config({"epochs": 2.0, "batch": "8"})
    assert cfg["epochs"] == 2 and isinstance(cfg["epochs"], int) and cfg["batch"] == 8
    assert resolve_config({"mmap_threshold_mb": 0.5})["mmap_threshold_mb"] == 0.5  # not a count


def test_the_optimizer_is_one_of_its_names_in_any_case():
    assert [resolve_config({"optimizer": n})["optimizer"] for n in ("sgd", "ADAMW", "musgd", "Auto")] == [
        "SGD",
        "AdamW",
        "MuSGD",
        "auto",
    ]
    assert resolve_config({"optimizer": "rmsprop"})["optimizer"] == "RMSprop"  # the package's spelling
    with pytest.raises(
        ConfigError, match=r"'optimizer' must be one of SGD, AdamW, MuSGD, Adam, .*, got 'adamx'; did you mean adamax"
    ):
        resolve_config({"optimizer": "adamx"})
