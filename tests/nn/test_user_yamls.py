"""Model YAMLs as users write them (found by a QA pass of 187 blog- and paper-style files): each way one built
a model other than the file says, or failed far from its cause, is now named at its row or key."""

from __future__ import annotations

import logging

import pytest
import yaml

from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel, load_model_yaml

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _yolov8n(**changes) -> dict:
    cfg = load_model_yaml("yolov8n.yaml")
    cfg.update(changes)
    return cfg


def test_a_class_count_written_in_the_head_row_must_be_nc():
    """``Detect, [2]`` under ``nc: 80`` built a 2-class head in an 80-class model; training on 3 classes then
    ended in an IndexError inside the assigner."""
    cfg = _yolov8n()
    cfg["head"][-1] = [[15, 18, 21], 1, "Detect", [2]]
    with pytest.raises(ConfigError, match=r"layer 22 .*Detect is given 2 classes but the model has nc = 80; write nc"):
        DetectionModel(cfg)
    with pytest.raises(ConfigError, match="Detect is given 2 classes but the model has nc = 3"):
        DetectionModel(cfg, nc=3)
    cfg["head"][-1][3] = [80]
    assert DetectionModel(cfg).model[-1].nc == 80  # a number equal to nc is nc


@pytest.mark.parametrize(("stem", "params"), [("yolov8s_c3tr", 11_166_560), ("yolov8sc3tr", 11_166_560)])
def test_the_scale_letter_is_read_as_the_package_reads_it(tmp_path, stem, params):
    """``yolov8s_c3tr.yaml`` built scale n (3.0M parameters) where the package builds s."""
    cfg = load_model_yaml("yolov8.yaml")
    cfg.pop("yaml_file")
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = DetectionModel(path)
    assert model.yaml["scale"] == "s" and sum(p.numel() for p in model.parameters()) == params


def test_p2_after_the_version_is_not_a_scale(tmp_path):
    cfg = load_model_yaml("yolov8-p2.yaml")
    cfg.pop("yaml_file")
    path = tmp_path / "yolov8p2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert "scale" not in load_model_yaml(path)  # no letter: the first scale is used, with a warning
    DetectionModel(path)


def test_a_repeated_key_is_named_with_its_lines(tmp_path):
    base = yaml.safe_dump({k: v for k, v in load_model_yaml("yolov5n.yaml").items() if k != "yaml_file"})
    path = tmp_path / "dup.yaml"
    path.write_text(base + "nc: 3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line \d+: malformed YAML: duplicate key 'nc' \(first on line"):
        DetectionModel(path)


def test_keys_that_build_nothing_are_warned_of(caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        model = DetectionModel(_yolov8n(ch=1, width_multiple=0.25))
    assert model.model[0].conv.in_channels == 3
    assert "'ch: 1' is not used: the model takes 3-channel images" in caplog.text
    assert "width_multiple ignored: 'scales' sets depth and width" in caplog.text


def test_a_swin_stage_that_changes_channels_is_named_at_its_row():
    """``SwinV2_CSPB, [256, 128]`` was blamed on the next layer ("SPPF does not fit its input")."""
    cfg = load_model_yaml("yolov8n-swinv2.yaml")
    i, row = next((i, r) for i, r in enumerate(cfg["backbone"]) if r[2] == "SwinV2_CSPB")
    cfg["backbone"][i] = [row[0], row[1], row[2], [row[3][0], row[3][0] // 2, *row[3][2:]]]
    with pytest.raises(ConfigError, match=rf"layer {i} .*SwinV2_CSPB's c2 \(args\[1\]\) is \d+ but its input has"):
        DetectionModel(cfg)


def test_a_head_given_one_layer_is_told_to_list_them():
    cfg = _yolov8n()
    cfg["head"][-1] = [21, 1, "Detect", ["nc"]]
    with pytest.raises(ConfigError, match=r"a head's 'from' is the list of layers it reads .*got 21"):
        DetectionModel(cfg)


def test_the_packages_c2fpsa_dwconvtranspose_and_activation_rows_build():
    """Rows the package builds that yolotr called unknown; counts read from the package (8.4.190) at 3 classes."""
    cfg = load_model_yaml("yolo11n.yaml")
    cfg["backbone"][-1] = [-1, 2, "C2fPSA", [1024]]
    assert sum(p.numel() for p in DetectionModel(cfg, nc=3).parameters()) == 2_623_193
    cfg = _yolov8n()
    cfg["head"][0] = [-1, 1, "DWConvTranspose2d", [512, 2, 2]]
    assert sum(p.numel() for p in DetectionModel(cfg, nc=3).parameters()) == 2_996_201
    cfg = _yolov8n()
    cfg["backbone"].insert(1, [-1, 1, "nn.ReLU", []])
    cfg["head"] = [[r[0] if isinstance(r[0], int) else [f + (f > 0) for f in r[0]], *r[1:]] for r in cfg["head"]]
    DetectionModel(cfg, nc=3)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("Segment", "an ultralytics module of segmentation, which yolotr does not build"),
        ("CBAM", r"unknown module 'CBAM' \(to add one: docs/adding-a-module.md\)"),
        ("С3", "not ASCII"),
    ],
)
def test_unknown_modules_say_what_they_are_and_where_to_add_one(module, message):
    cfg = _yolov8n()
    cfg["backbone"][2] = [-1, 1, module, [64]]
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([-1, 1, "nn.Upsample", [{"scale_factor": 2, "mode": "nearest"}]], "args are positional"),
        ([-1, 1, "nn.Upsample", [None, 2, "nearst"]], "unknown upsampling mode 'nearst'; did you mean nearest"),
        ([-1, 1, "nn.Upsample", [None, 2, 3]], "unknown upsampling mode 3"),
        ([-1, 1, "Conv", [512, "3", 2]], r"argument 'k' \(args\[1\] of the row\) must be a number, got '3' \(a number"),
    ],
)
def test_row_arguments_torch_would_have_refused_deep_inside(row, message):
    """The package's builder evaluates these; torch's words were all a user got from yolotr."""
    cfg = _yolov8n()
    cfg["head"][0] = row
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)


def test_a_swin_stage_argument_in_quotes_is_named():
    cfg = load_model_yaml("yolov8n-swinv2.yaml")
    i, row = next((i, r) for i, r in enumerate(cfg["backbone"]) if r[2] == "SwinV2_CSPB")
    args = list(row[3])
    args[-1] = str(args[-1]) if isinstance(args[-1], int) else "8"
    cfg["backbone"][i] = [*row[:3], args]
    with pytest.raises(ConfigError, match=rf"layer {i} .*SwinV2_CSPB's argument '\w+' .* must be"):
        DetectionModel(cfg)


@pytest.mark.parametrize(
    ("layer", "row", "message"),
    [
        (10, [-1, 2, "C2PSA", [1024, False]], r"layer 10 .*cannot build C2PSA.*: 0\.0 cannot be raised"),
        (2, [-1, 2, "C3k2", [256, False, 0]], r"layer 2 .*C3k2.* builds a layer with no channels .*ratio or a"),
        (0, [-1, 1, "Conv", [float("nan"), 3, 2]], r"layer 0 .*Conv's output channels must be at least 1, got nan"),
        (0, [-1, 1, "Conv", [float("inf"), 3, 2]], r"layer 0 .*Conv's output channels must be at least 1, got inf"),
    ],
)
def test_rows_that_build_no_channels_are_named(layer, row, message):
    """An expansion ratio of 0 (``False`` in C2PSA's place of ``e``) divided by zero inside PSA or built
    convolutions of 0 channels that failed at the first forward; a NaN channel count failed in ``int()``."""
    cfg = load_model_yaml("yolo11n.yaml")
    (cfg["backbone"] + cfg["head"])[layer][:] = row
    with pytest.raises(ConfigError, match=message):
        DetectionModel(cfg)
