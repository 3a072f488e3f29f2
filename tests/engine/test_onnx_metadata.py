"""ONNX files made elsewhere: the ``ultralytics`` package writes ``names`` as a Python dict repr."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from yolotr import YOLO
from yolotr.engine.onnx_model import OnnxModel, metadata_names
from yolotr.errors import CheckpointError


def tiny_onnx(path, metadata: dict[str, str]):
    """A (1, 3, 64, 64) -> (1, 6, 2048) reshape (the columns layout of a 2-class anchor-free export), with
    the given metadata."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 6, 2048])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["output0"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 2048])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_ultralytics_dict_names(tmp_path):
    # as the package's exporter writes them: str() of its names dict, stride an int, more keys
    meta = {"names": "{0: 'person', 1: \"o'clock sign\"}", "stride": "32", "task": "detect", "imgsz": "[64, 64]"}
    model = OnnxModel(tiny_onnx(tmp_path / "u.onnx", meta))
    assert model.names == ["person", "o'clock sign"]
    assert model.layout == "columns" and int(model.stride.max()) == 32
    assert YOLO(str(tmp_path / "u.onnx")).names == {0: "person", 1: "o'clock sign"}
    x = torch.rand(1, 3, 64, 64)
    (out,) = model(x)
    np.testing.assert_array_equal(out.numpy(), x.reshape(1, 6, 2048).numpy())


@pytest.mark.parametrize(
    ("text", "names"),
    [('["a", "b"]', ["a", "b"]), ('{"0": "a", "1": "b"}', ["a", "b"]), ("{1: 'b', 0: 'a'}", ["a", "b"]), ("", [])],
)
def test_names_forms(text, names):
    assert metadata_names(text, "m.onnx") == names


@pytest.mark.parametrize("text", ["__import__('os').system('echo hi')", "{0: 'a', 2: 'b'}", "42", "{0: 'a'"])
def test_bad_names_are_refused_not_run(tmp_path, text):
    path = tiny_onnx(tmp_path / "bad.onnx", {"names": text})
    with pytest.raises(CheckpointError, match=r"bad\.onnx: metadata 'names'"):
        OnnxModel(path)


def detections_onnx(path, metadata: dict[str, str]):
    """A (1, 3, 64, 64) -> (1, 300, 6) output, as the package's ``export(nms=True)`` writes (no ``layout`` key)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 2048, 6])
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [300])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["images", "shape"], ["flat"]),
            helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["output0"]),
        ],  # fmt: skip
        "nms",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 300, 6])],
        [shape, starts, ends, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("extra", "layout"),
    [
        ({"end2end": "False", "args": "{'batch': 1, 'nms': True, 'dynamic': False}"}, "detections"),  # NMS inside
        ({"end2end": "True", "args": "{'batch': 1}"}, "detections"),  # an NMS-free head
        ({"end2end": "False", "args": "{'batch': 1, 'nms': False}"}, "rows"),  # by its shape
    ],
)
def test_the_packages_files_after_nms_are_read_as_detections(tmp_path, extra, layout):
    """The package's ``nms=True`` export has a (1, 300, 6) output and no layout key; the shape made it rows of
    one class, and predict gave scores above 1 and boxes such as [0, 0, 0, 215]."""
    meta = {"names": "{0: 'a', 1: 'b'}", "stride": "32", "task": "detect", "imgsz": "[64, 64]", **extra}
    model = OnnxModel(detections_onnx(tmp_path / "n.onnx", meta))
    assert model.layout == layout and model.end2end == (layout == "detections")
