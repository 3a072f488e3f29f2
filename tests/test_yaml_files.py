"""A dataset, model or settings YAML that is no YAML (a web page saved under its name, an image, binary data) says
what it looks like; malformed YAML gives its line; all three readers alike (``yaml_loading.read_yaml_file``)."""

from __future__ import annotations

import pytest

from yolotr.data.dataset_yaml import load_dataset_config
from yolotr.engine.config import load_cfg_file
from yolotr.errors import ConfigError, DataError
from yolotr.models.detection import DetectionModel

READERS = {
    "dataset YAML": (load_dataset_config, DataError),
    "model YAML": (DetectionModel, ConfigError),
    "configuration": (load_cfg_file, ConfigError),
}
FILES = {  # content -> what the message says after the file's name
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>x: y</body></html>\n": (
        "not a {what}: it looks like an HTML page (a download link that returned a web page instead of the file?)"
    ),
    b"<html><body><p>404: not found</p></body></html>\n": "not a {what}: it looks like an HTML page",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe": "not a {what}: it looks like a PNG image",
    b"\xff\xfe\x00\x01" * 64: "not a {what}: it looks like binary data (not UTF-8 text)",
    b"train: images\nval:\timages\n": "line 2: malformed YAML: found character '\\t' that cannot start any token",
    b"nc: 1\nnames: [a]\nnc: 2\n": "line 3: malformed YAML: duplicate key 'nc' (first on line 1)",
}


@pytest.mark.parametrize("what", sorted(READERS))
@pytest.mark.parametrize("content", list(FILES), ids=range(len(FILES)))
def test_a_yaml_that_is_no_yaml_says_what_it_looks_like(what, content, tmp_path):
    reader, error = READERS[what]
    path = tmp_path / "file.yaml"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        reader(path)
    expected = f"{path}: " + FILES[content].format(what=what)
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_settings_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read configuration: .*No such file"):
        load_cfg_file(tmp_path / "nope.yaml")
