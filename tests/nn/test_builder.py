"""The YAML builder against the official YOLOv5 reference: parameter counts, keys, shapes, errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.conftest import SHARED, shared_path
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn.builder import parse_activation

REFERENCE = SHARED / "reference" / "yolov5" / "param_counts.json"
STOCK = sorted(p.stem for p in (SHARED / "reference" / "yolov5-yaml").glob("*.yaml") if p.stem != "anchors")
SMALL = {"yolov5n", "yolov5s", "yolov5s-transformer", "yolov5s-ghost", "yolov3-tiny", "yolov5n6", "yolov5-p34"}


@pytest.mark.parametrize("name", STOCK or ["<missing>"])
def test_stock_yaml_matches_official_parameter_count(name):
    ref = json.loads(shared_path("reference", "yolov5", "param_counts.json").read_text())["models"][name]
    model = DetectionModel(shared_path("reference", "yolov5-yaml", f"{name}.yaml"))
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    assert len(model.state_dict()) == ref["state_dict_tensors"]
    assert model.stride.tolist() == [float(s) for s in ref["stride"]]
    if name in SMALL:
        model.eval()
        with torch.no_grad():
            decoded, raw = model(torch.rand(1, 3, 256, 256))
        strides = ref["stride"]
        assert [tuple(r.shape) for r in raw] == [(1, 3, 256 // s, 256 // s, 85) for s in strides]
        assert decoded.shape == (1, sum(3 * (256 // s) ** 2 for s in strides), 85)
        assert torch.isfinite(decoded).all()


def test_state_dict_keys_follow_yolov5_names():
    model = DetectionModel("yolov5n.yaml")
    keys = list(model.state_dict())
    assert keys[0] == "model.0.conv.weight"
    assert "model.2.m.0.cv1.bn.running_mean" in keys
    assert "model.24.anchors" in keys and "model.24.m.2.bias" in keys


def test_shipped_configs_equal_stock(shared):
    counts = json.loads((shared / "reference" / "yolov5" / "param_counts.json").read_text())["models"]
    for size in "ns":
        model = DetectionModel(f"yolov5{size}.yaml")
        assert sum(p.numel() for p in model.parameters()) == counts[f"yolov5{size}"]["params"]


def test_nc_override_changes_head_only():
    model = DetectionModel("yolov5n.yaml", nc=3)
    assert model.model[-1].m[0].out_channels == 3 * 8
    assert model.nc == 3


def test_activation_key_is_parsed_not_evaluated():
    act = parse_activation("nn.LeakyReLU(0.1)", "x")()
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == 0.1
    with pytest.raises(ConfigError, match="cannot read"):
        parse_activation("os.system('echo hi')", "x")
    with pytest.raises(ConfigError, match="not allowed"):
        parse_activation("nn.Linear(3, 3)", "x")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_activation("nn.LeakyReLU(__import__('os'))", "x")


def test_activation_applies_to_that_model_only():
    cfg = yaml.safe_load(open(shared_path("reference", "yolov5-yaml", "yolov5s-LeakyReLU.yaml")))
    leaky = DetectionModel(cfg)
    plain = DetectionModel("yolov5n.yaml")
    assert isinstance(leaky.model[0].act, torch.nn.LeakyReLU)
    assert isinstance(plain.model[0].act, torch.nn.SiLU)


def _tiny_cfg(rows_backbone, rows_head=None):
    return {
        "nc": 2,
        "depth_multiple": 0.33,
        "width_multiple": 0.25,
        "anchors": [[10, 13, 16, 30, 33, 23]],
        "backbone": rows_backbone,
        "head": rows_head if rows_head is not None else [[[-1], 1, "Detect", ["nc", "anchors"]]],
        "yaml_file": "tiny.yaml",
    }


def test_unknown_module_names_file_layer_and_row():
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv3", [64]]])
    with pytest.raises(ConfigError) as e:
        DetectionModel(cfg)
    message = str(e.value)
    assert "tiny.yaml" in message and "layer 1" in message and "Conv3" in message and "did you mean" in message


def test_wrong_argument_count():
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2, None, 1, 1, True, 7, 8]]])
    with pytest.raises(ConfigError, match=r"tiny.yaml: layer 0 .*wrong arguments for Conv"):
        DetectionModel(cfg)


def test_bad_from_index():
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]], [[-1, 5], 1, "Concat", [1]]])
    with pytest.raises(ConfigError, match=r"layer 1 .*'from' index 5"):
        DetectionModel(cfg)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 80\nbackbone: [[-1, 1, Conv, [64, 3]]\nhead: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: malformed YAML"):
        DetectionModel(bad)


def test_missing_yaml():
    with pytest.raises(ConfigError, match="no-such-model.yaml: no such model YAML"):
        DetectionModel("no-such-model.yaml")


def test_fuse_keeps_outputs():
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        before = model(x)[1]
        model.fuse()
        after = model(x)[1]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_anchor_order_is_fixed_when_reversed():
    cfg = yaml.safe_load(open(shared_path("reference", "yolov5-yaml", "yolov5n.yaml")))
    cfg["anchors"] = cfg["anchors"][::-1]
    model = DetectionModel(cfg)
    head = model.model[-1]
    pixels = head.anchors * head.stride.view(-1, 1, 1)
    assert pixels[0, 0].tolist() == [10, 13] and pixels[-1, -1].tolist() == [373, 326]


def test_info_reports_params_and_gflops():
    info = DetectionModel("yolov5s.yaml").info(imgsz=640, verbose=False)
    assert info["params"] == 7235389
    assert 16.0 < info["gflops"] < 16.8  # the official YOLOv5s figure is 16.5 GFLOPs at 640
    assert "SPPF" in info["table"]
    assert info["attention_gflops"] == 0 and "attention" not in info["table"]


def test_info_detailed_lists_every_parameter_tensor():
    """The package's ``model.info(detailed=True)`` was a TypeError."""
    from yolotr import YOLO

    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    table = model.info(imgsz=64, verbose=False, detailed=True)["table"].splitlines()
    names = [name for name, _ in model.model.named_parameters()]
    rows = [line.split() for line in table if line.split() and line.split()[0].isdigit() and len(line.split()) > 7]
    assert [r[1] for r in rows[: len(names)]] == names and rows[0][2] == "True" and rows[0][3] == "432"
    assert len(model.info(imgsz=64, verbose=False)["table"].splitlines()) == len(table) - len(names) - 1


def test_info_names_the_flops_of_attentions_matrix_products():
    """yolo12n's YAML says 6.7 GFLOPs (thop, which counts modules and leaves out ``bmm``); the flop counter
    counts its area attention's products too (about 1 GFLOP at 640), and the summary says how much."""
    info = DetectionModel("yolo12n.yaml").info(imgsz=640, verbose=False)
    assert 0.9 < info["attention_gflops"] < 1.1
    assert 6.3 < info["gflops"] - info["attention_gflops"] < 6.8
    assert f"({info['attention_gflops']:.1f} of them in attention's matrix products" in info["table"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("activation", 'nn.LeakyReLU("x")', r"key 'activation': activation 'nn.LeakyReLU\(\"x\"\)'"),
        ("anchors", "three", r"'anchors' must be the number of anchors per level"),
        ("anchors", [[10, 13, 16]], r"'anchors' must be the number of anchors per level"),
        ("anchors", [], r"'anchors' must be the number of anchors per level"),
        ("bn_eps", "small", r"'bn_eps' must be a number greater than 0, got 'small'"),
        ("bn_momentum", 2, r"'bn_momentum' must be a number greater than 0 and at most 1, got 2"),
        ("depth_multiple", "third", r"'depth_multiple' must be a number greater than 0, got 'third'"),
        ("width_multiple", 0, r"'width_multiple' must be a number greater than 0, got 0"),
        ("nc", True, r"'nc' must be a positive integer, got True"),
    ],
)
def test_top_level_values_of_the_wrong_kind_name_file_and_key(key, value, message):
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]])
    cfg[key] = value
    with pytest.raises(ConfigError, match=rf"^tiny\.yaml: {message}"):
        DetectionModel(cfg)


def test_yaml_numbers_written_as_strings_still_build():
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]])
    cfg.update(bn_eps="1.0e-5", bn_momentum=0.1, depth_multiple="0.33")
    model = DetectionModel(cfg)
    assert model.model[0].bn.eps == pytest.approx(1e-5)


def test_scales_values_must_be_numbers():
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]], [[[-1], 1, "Detect", ["nc"]]])
    del cfg["anchors"], cfg["depth_multiple"], cfg["width_multiple"]
    cfg.update(scales={"n": [0.33, "quarter", 1024]}, scale="n")
    with pytest.raises(ConfigError, match=r"tiny\.yaml: scale 'n' width must be a number"):
        DetectionModel(cfg)
    cfg.update(scales={"n": [0.33, 0.25, 1024]}, reg_max="x")
    with pytest.raises(ConfigError, match=r"tiny\.yaml: 'reg_max' must be a positive integer, got 'x'"):
        DetectionModel(cfg)


def test_output_channels_that_name_no_key():
    cfg = _tiny_cfg([[-1, 1, "Conv", ["abc", 3, 2]]])
    with pytest.raises(ConfigError, match=r"tiny\.yaml: layer 0 .*Conv's output channels must be a number .*'abc'"):
        DetectionModel(cfg)


@pytest.mark.parametrize(
    "row, message",
    [
        (
            [-1, 1, "Conv", [64, "abc", 2]],
            r"layer 0 .*Conv's argument 'k' \(args\[1\] of the row\) must be a number, got 'abc'",
        ),
        ([-1, 1, "Conv", [64, 3, "two"]], r"layer 0 .*Conv's argument 's' \(args\[2\] of the row\) must be a number"),
        ([-1, 1, "SPP", [64, [5, "nine"]]], r"layer 0 .*SPP's argument 'k' .*must be a number, got \[5, 'nine'\]"),
        ([-1, 2, "C3", [64, "yes"]], r"layer 0 .*C3's argument 'shortcut' .*must be true or false, got 'yes'"),
    ],
)
def test_a_non_numeric_argument_names_the_layer_and_argument(row, message):
    """Not Python's words from inside the module (``unsupported operand type(s) for //``), nor a stride
    that builds and crashes at the first forward pass."""
    with pytest.raises(ConfigError, match=r"tiny\.yaml: " + message):
        DetectionModel(_tiny_cfg([row]))


def test_empty_model_is_refused():
    with pytest.raises(ConfigError, match=r"tiny\.yaml: 'backbone' and 'head' have no layers"):
        DetectionModel(_tiny_cfg([], []))


def test_detect_must_be_the_last_layer():
    middle = [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Detect", ["nc", "anchors"]], [-1, 1, "Conv", [64, 3, 2]]]
    with pytest.raises(ConfigError, match=r"tiny\.yaml: layer 1 .*Detect is a head and must be the last layer"):
        DetectionModel(_tiny_cfg(middle))
    headless = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]], [[-1, 1, "Conv", [64, 3, 2]]])
    with pytest.raises(ConfigError, match=r"tiny\.yaml: the last layer \(1, Conv\) must be a Detect head"):
        DetectionModel(headless)


def test_misspelled_top_level_key_warns_with_a_suggestion(caplog):
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]])
    cfg["depth_mutliple"] = cfg.pop("depth_multiple")
    DetectionModel(cfg)
    assert "tiny.yaml: unknown top-level key 'depth_mutliple' is ignored; did you mean 'depth_multiple'?" in caplog.text


@pytest.mark.parametrize("detect_args", [["nc", "anchors"], ["nc", "anchor"]])
def test_misspelled_anchors_key_is_not_silently_anchor_free(detect_args, caplog):
    cfg = _tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]], [[[-1], 1, "Detect", detect_args]])
    cfg["anchor"] = cfg.pop("anchors")
    with pytest.raises(ConfigError, match=r"tiny\.yaml: layer 1 .*the anchor-free Detect takes only \[nc\]"):
        DetectionModel(cfg)
    assert ("did you mean 'anchors'?" in caplog.text) == (detect_args[1] == "anchors")


def test_top_level_key_used_by_a_layer_is_not_unknown(caplog):
    cfg = _tiny_cfg([[-1, 1, "Conv", ["stem_width", 3, 2]]])
    cfg["stem_width"] = 32
    DetectionModel(cfg)
    assert "unknown top-level key" not in caplog.text


def test_shipped_configs_have_no_unknown_keys():
    from yolotr.models.detection import CFG_DIR
    from yolotr.nn.yaml_checks import KNOWN_KEYS

    for path in CFG_DIR.glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) <= set(KNOWN_KEYS), path.name


def test_zero_channels_and_an_unknown_head_name_are_named_not_left_to_torch():
    with pytest.raises(ConfigError, match=r"tiny.yaml: layer 0 .*Conv's output channels must be at least 1, got 0"):
        DetectionModel(_tiny_cfg([[-1, 1, "Conv", [0, 3, 2]]]))
    with pytest.raises(
        ConfigError, match=r"layer 0 .*Conv's kernel size 'k' \(args\[1\] of the row\) must be at least 1"
    ):
        DetectionModel(_tiny_cfg([[-1, 1, "Conv", [16, 0, 2]]]))
    with pytest.raises(
        ConfigError, match=r"layer 0 .*Conv's stride 's' \(args\[2\] of the row\) must be at least 1, got -2"
    ):
        DetectionModel(_tiny_cfg([[-1, 1, "Conv", [16, 3, -2]]]))
    with pytest.raises(
        ConfigError, match=r"a model is built from a YAML name or path or a dict of its keys, not \[1, 2\]"
    ):
        DetectionModel([1, 2])
    head = [[[-1], 1, "Detect", ["nc", "anchorz"]]]
    with pytest.raises(ConfigError, match=r"layer 1 .*unknown name 'anchorz'; did you mean anchors\?"):
        DetectionModel(_tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]], head))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (  # a Conv given two inputs: a list reached conv2d
            [[-1, 1, "Conv", [16, 3, 2]], [[-1, 0], 1, "Conv", [32, 3, 2]]],
            r"layer 1 \[\[-1, 0\], 1, 'Conv', \[32, 3, 2\]\] does not fit its input\(s\) .*TypeError: conv2d",
        ),
        (  # an Upsample without a size or factor
            [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "nn.Upsample", []]],
            r"layer 1 \[-1, 1, 'nn.Upsample', \[\]\] does not fit .*either size or scale_factor",
        ),
        (  # a Concat along a dimension the maps lack
            [[-1, 1, "Conv", [16, 3, 2]], [[-1, 0], 1, "Concat", [5]]],
            r"layer 1 .*'Concat', \[5\]\] does not fit .*IndexError: Dimension out of range",
        ),
        (  # a Concat of maps of two sizes
            [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [[-1, 0], 1, "Concat", [1]]],
            r"layer 2 .*'Concat', \[1\]\] does not fit .*RuntimeError: Sizes of tensors must match",
        ),
    ],
)
def test_rows_whose_inputs_do_not_fit_name_the_layer_and_row(rows, message):
    """Errors of the measuring forward were a raw TypeError / ValueError / IndexError from torch, or a
    ConfigError that did not say which layer; each names the layer and its row, on one line."""
    with pytest.raises(ConfigError, match=message) as e:
        DetectionModel(_tiny_cfg(rows))
    assert str(e.value).startswith("tiny.yaml: layer") and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ([[-1], 2, "Detect", ["nc", "anchors"]], r"layer 1 .*a head is built once; its 'number' must be 1, got 2"),
        ([[-1], True, "Detect", ["nc", "anchors"]], r"'number' must be a positive integer, got True"),
        ([[-1], 1, "Detect", ["nc"]], r"Detect takes \[nc, anchors\]"),
        ([[-1], 1, "Detect", []], r"Detect takes \[nc, anchors\]"),
        ([[-1], 1, "Detect", [2.5, "anchors"]], r"Detect's number of classes must be a positive integer .*got 2.5"),
    ],
)
def test_malformed_anchor_based_head_rows_are_named(head, message):
    """A Detect row repeated twice built an nn.Sequential of heads that failed at the first forward; [nc] and
    [] failed with "object of type 'int' has no len()" and "can only concatenate list"."""
    with pytest.raises(ConfigError, match=message):
        DetectionModel(_tiny_cfg([[-1, 1, "Conv", [64, 3, 2]]], [head]))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["ncc"], r"got 'ncc'; did you mean nc\?"), ([2.5], "got 2.5"), ([0], "got 0")],
)
def test_anchor_free_head_class_count_is_checked(args, message):
    """'ncc' failed with "can only concatenate str (not int)", 2.5 with "out_channels must be divisible by groups"."""
    cfg = {
        "nc": 2,
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
        "head": [[[0, 1, 2], 1, "Detect", args]],
        "yaml_file": "af.yaml",
    }
    with pytest.raises(ConfigError, match=r"af\.yaml: layer 3 .*Detect's number of classes must be .*" + message):
        DetectionModel(cfg)


def test_from_index_message_of_the_first_layer_and_yaml_without_a_line(tmp_path):
    with pytest.raises(ConfigError, match=r"layer 0 can use only -1, the input image\)$"):
        DetectionModel(_tiny_cfg([[0, 1, "Conv", [64, 3, 2]]]))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"nc: 1\x00\n")
    with pytest.raises(ConfigError, match=r"binary\.yaml: malformed YAML: ") as e:
        DetectionModel(binary)
    assert "::" not in str(e.value)
