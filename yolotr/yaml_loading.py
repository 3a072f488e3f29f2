"""YAML files users write (model, dataset and settings files), read as ``yaml.safe_load`` reads them except that
a key given twice in one mapping is an error: PyYAML keeps the last value without a word, so a second
``nc: 3`` below ``nc: 80`` built another model, and a second ``backbone:`` showed up as a layer's bad ``from``."""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.constructor import ConstructorError

from yolotr.file_sniff import describe_head, describe_text, read_head

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


def read_yaml_file(path: str | Path, what: str, error: type[Exception]):
    """The document of the YAML file ``path`` (a ``what``: "dataset YAML", "model YAML", "configuration"), parsed
    by :func:`load_yaml`; the caller checks its shape.

    Raises:
        error: naming the file: one that cannot be read; one that is not text, or is a web page (a download that
            returned HTML), saying what it looks like; malformed YAML, with its line where PyYAML gives one.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        looks = describe_head(read_head(path)) or "binary data (not UTF-8 text)"
        raise error(f"{path}: not a {what}: it looks like {looks}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e}") from None
    # a page saved under the file's name (no YAML document of ours starts with a tag), even where it parses
    if text.lstrip("\ufeff \t\r\n").startswith("<") and (looks := describe_text(text)).startswith("an HTML page"):
        raise error(f"{path}: not a {what}: it looks like {looks}")
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}: line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{where}: malformed YAML: {problem}") from None
