"""What an end-to-end (YOLOv10 / YOLO26) head gives:
validation and the ONNX backend at the ``max_det`` asked for, raw maps on export,
and MuSGD's Muon updates on matrices only."""

from __future__ import annotations

import onnxruntime as ort
import torch

from yolotr.engine.exporter import export_model
from yolotr.engine.optim import build_optimizer
from yolotr.engine.validator import validate
from yolotr.models.detection import DetectionModel


def _yolo26n() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel("yolo26n.yaml", nc=3).eval()


def test_validation_keeps_the_max_det_it_is_given(tiny_shapes):
    model = _yolo26n()
    head = model.model[-1]
    rows = []
    hook = head.register_forward_hook(lambda module, inputs, output: rows.append(output[0].shape[1]))
    validate(model, tiny_shapes, imgsz=64, max_det=1000, workers=0, verbose=False)
    hook.remove()
    assert rows and set(rows) == {1000}  # the head's 300 before
    assert head.max_det == 300  # and the head is as it was after


def test_an_export_without_max_det_keeps_the_heads_own(tmp_path):
    """The ONNX backend exports without ``max_det``; a head set to 500 by predict got a file of 300 rows, which
    never matched PyTorch, so every size fell back to eager with a warning."""
    model = _yolo26n()
    model.model[-1].set_end2end(True, max_det=500)
    path = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=64).path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": torch.rand(1, 3, 64, 64).numpy()})[0].shape == (1, 500, 6)


def test_raw_export_of_an_end_to_end_head_gives_its_one_to_one_maps(tmp_path):
    model = _yolo26n()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = [m.numpy() for m in model(x)[1]["one2one"]]
    path = export_model(model, "onnx", tmp_path / "raw.onnx", imgsz=64, raw=True).path
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), torch.from_numpy(w), atol=1e-4, rtol=1e-4)
    export_model(model, "torchscript", tmp_path / "raw.torchscript", imgsz=64, raw=True)


def test_musgd_gives_muon_updates_to_matrices_and_kernels_only():
    """As the package's rule: Muon orthogonalises 2-D and 4-D weights. Swin V2's logit_scale (heads, 1, 1) is
    kept out of weight decay (the package's rule by name) and trains by plain SGD (it moved 100x further under
    Muon); a decayed kernel of another shape (a 3-D convolution's 5-D weight) goes to a plain SGD group."""
    torch.manual_seed(0)
    model = DetectionModel("yolo26n-swinv2.yaml", nc=3)
    model.model[0].add_module("extra", torch.nn.Conv3d(1, 2, 3))  # a 5-D weight, not used in the forward
    optimizer = build_optimizer(model, "MuSGD", 0.01, 0.9, 5e-4, 1.0)
    shapes = {id(p): p.ndim for p in model.parameters()}
    for g in optimizer.param_groups:
        dims = {shapes[id(p)] for p in g["params"]}
        assert dims <= {2, 4} if g["use_muon"] else True, g["name"]
    logit_scales = {id(p) for n, p in model.named_parameters() if n.endswith("logit_scale")}
    assert logit_scales
    homes = [g for g in optimizer.param_groups if logit_scales & {id(p) for p in g["params"]}]
    assert homes and all(not g["use_muon"] and g["weight_decay"] == 0 for g in homes)
    kernel = model.model[0].extra.weight
    (home,) = [g for g in optimizer.param_groups if any(p is kernel for p in g["params"])]
    assert not home["use_muon"] and home["name"].endswith("/sgd") and home["weight_decay"] > 0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_an_end_to_end_file_notes_the_settings_it_cannot_apply(tmp_path, caplog):
    """Its top-k is fixed at export: ``agnostic`` or more detections than its rows are said not to apply
    (an info line, as for a file with NMS inside), not silently dropped."""
    import logging

    from yolotr.engine.onnx_model import OnnxModel
    from yolotr.engine.predictor import Predictor

    path = export_model(_yolo26n(), "onnx", tmp_path / "m.onnx", imgsz=64, max_det=50).path
    file = OnnxModel(path)
    for settings, noted in (({}, False), ({"agnostic": True}, True), ({"max_det": 100}, True)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="yolotr"):
            Predictor(file, file.names, 64, conf=0.0, **{"max_det": 50, **settings})
        assert ("top 50 detections, chosen at export" in caplog.text) == noted, settings
