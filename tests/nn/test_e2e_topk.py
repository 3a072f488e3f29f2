"""The end-to-end head's top-k (:meth:`yolotr.nn.head_e2e.E2EDetect.topk`) against the ``ultralytics``
package's ``Detect.get_topk_index`` (8.4), live on random scores, for inputs with more and with fewer anchors
than ``max_det``, per class and class-agnostic; and the exported graph's real-row count at each input size.

The package gives ``min(max_det, anchors)`` rows; yolotr gives the same rows, then filler rows (zero box,
score -1, class 0) up to ``max_det`` so that the shape is fixed, as an exported graph's must be."""

from __future__ import annotations

import pytest
import torch

from yolotr.nn.head_e2e import E2EDetect

FILLER = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0, 0.0])


def _head(nc: int, max_det: int, agnostic: bool) -> E2EDetect:
    head = E2EDetect(nc=nc, reg_max=1, ch=(8, 8, 8)).eval()
    head.set_end2end(True, max_det=max_det, agnostic=agnostic)
    return head


def _random_rows(b: int, anchors: int, nc: int, seed: int) -> torch.Tensor:
    """``(B, anchors, 4 + nc)``: random boxes and distinct random scores in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(b, anchors, 4, generator=g) * 640
    scores = torch.randperm(b * anchors * nc, generator=g).view(b, anchors, nc).float() / (b * anchors * nc)
    return torch.cat((boxes, scores), -1)


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize(("anchors", "nc", "max_det"), [(84, 3, 300), (252, 3, 300), (8400, 80, 300), (21, 80, 50)])
def test_topk_equals_the_package(anchors: int, nc: int, max_det: int, agnostic: bool) -> None:
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics.nn.modules.head import Detect

    preds = _random_rows(2, anchors, nc, seed=anchors + nc)
    package = Detect(nc=nc, ch=(8, 8, 8))
    package.max_det, package.agnostic_nms = max_det, agnostic
    expected = package.postprocess(preds)  # (B, min(max_det, anchors), 6)
    got = _head(nc, max_det, agnostic).topk(preds)
    rows = min(max_det, anchors)
    assert expected.shape == (2, rows, 6) and got.shape == (2, max_det, 6)
    assert torch.equal(got[:, :rows], expected)
    assert (got[:, rows:] == FILLER).all()


def test_exported_graph_follows_the_anchor_count(tmp_path) -> None:
    """One ONNX file, dynamic size: as many real rows as the input has anchors below ``max_det``, the top
    ``max_det`` above it, equal to eager at each size."""
    ort = pytest.importorskip("onnxruntime")
    from yolotr.engine.exporter import export_model
    from yolotr.models.detection import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=3).eval()
    path = export_model(model, "onnx", tmp_path / "m.onnx", imgsz=96, dynamic_size=True).path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for (h, w), real in (((64, 64), 84), ((64, 128), 168), ((96, 96), 189), ((160, 160), 300)):
        x = torch.rand(1, 3, h, w)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        with torch.no_grad():
            expected = model(x)[0]
        assert int((got[0, :, 4] >= 0).sum()) == int((expected[0, :, 4] >= 0).sum()) == real
        assert (got[0, real:] == FILLER).all()
