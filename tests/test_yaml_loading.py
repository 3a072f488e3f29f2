"""Users' YAML files (model, dataset, --cfg) refuse a key given twice in one mapping, which PyYAML would keep
the last of without a word; merge keys may still override."""

from __future__ import annotations

import pytest
import yaml

from yolotr.yaml_loading import load_yaml


@pytest.mark.parametrize(
    ("text", "line"),
    [("nc: 80\ndepth_multiple: 0.33\nnc: 3\n", 1), ("names: {0: cat, 0: dog}\n", 1)],
)
def test_a_repeated_key_is_an_error_naming_both_places(text, line):
    with pytest.raises(yaml.YAMLError, match=rf"duplicate key .* \(first on line {line}\)"):
        load_yaml(text)


def test_everything_else_reads_as_safe_load_reads_it():
    text = "base: &b {lr0: 0.01, epochs: 3}\nrun:\n  <<: *b\n  epochs: 5\nlist: [1, 2, {a: 1}]\n"
    assert load_yaml(text) == yaml.safe_load(text)
