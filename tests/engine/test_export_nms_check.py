"""The export check of a file with NMS inside, on near-tied scores: NMS in onnxruntime may keep other boxes
than torchvision's (yolov8n-ghost with untrained weights: "detections differ, max abs diff 550"), so rows that
differ are accepted when each is one of PyTorch's candidates, and refused when one is not."""

from __future__ import annotations

import torch

from yolotr.engine.export_check import _rows_are_candidates
from yolotr.engine.export_nms import WithNms
from yolotr.models.detection import DetectionModel
from yolotr.ops.boxes import ROWS


def test_kept_rows_must_be_candidates():
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=3).eval()
    model.model[-1].export = True
    module = WithNms(model, ROWS, 3, conf=0.001, iou=0.45, max_det=20).eval()
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rows = module(x).numpy()
    assert (rows[0, :, 4] > 0).sum() > 3
    other = rows.copy()
    other[0, [0, 1]] = other[0, [1, 0]]  # another pick among the candidates: accepted
    other[0, 2, 4] = 0.0
    assert _rows_are_candidates(module, x, other)
    broken = rows.copy()
    broken[0, 0, :4] += 16.0  # a box no candidate has: a broken graph
    assert not _rows_are_candidates(module, x, broken)
    wrong_class = rows.copy()
    wrong_class[0, 0, 5] = (wrong_class[0, 0, 5] + 1) % 3
    assert not _rows_are_candidates(module, x, wrong_class)
