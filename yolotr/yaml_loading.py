"""YAML files users write (model, dataset and settings files), read as ``yaml.safe_load`` reads them except that
a key given twice in one mapping is an error: PyYAML keeps the last value without a word, so a second
``nc: 3`` below ``nc: 80`` built another model, and a second ``backbone:`` showed up as a layer's bad ``from``."""

from __future__ import annotations

import yaml
from yaml.constructor import ConstructorError

MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a mapping that repeats a key (``<<`` merges may still be overridden)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    mark = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if mark is not key_node.start_mark:  # also two on one line: {0: cat, 0: dog}
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {mark.line + 1})", key_node.start_mark
                    )
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """``text`` parsed as ``yaml.safe_load`` parses it; a repeated key raises ``yaml.YAMLError`` with its line."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
