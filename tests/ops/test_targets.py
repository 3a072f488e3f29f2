"""Malformed targets get a clear ``ValueError`` from every detection loss (and RT-DETR's denoising), naming the
row and what is wrong: before, a negative or fractional class, NaN or infinite coordinates, negative sizes and
boxes in pixels gave a loss without a word (YOLOv5's, the anchor-free ones, RT-DETR's), and a class id of
``nc`` or an image index of the batch size failed deep inside the assignment with an IndexError."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from yolotr.models.detection import DetectionModel
from yolotr.nn.denoising import denoising_group
from yolotr.ops.loss import build_loss
from yolotr.ops.loss_af import AnchorFreeLoss
from yolotr.ops.loss_detr import RTDETRLoss
from yolotr.ops.loss_e2e import E2ELoss
from yolotr.ops.targets import check_targets

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

NC, BATCH = 3, 2
GOOD = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3], [1, 2, 0.3, 0.4, 0.1, 0.1], [1, 0, 0.0, 1.0, 0.6, 0.2]])


def _bad(row: int, col: int, value: float) -> torch.Tensor:
    t = GOOD.clone()
    t[row, col] = value
    return t


BAD = {
    "negative class": (_bad(1, 1, -1), r"row 1 .*class ids must be whole numbers in 0\.\.2"),
    "class nc": (_bad(0, 1, NC), r"row 0 .*class ids must be whole numbers in 0\.\.2 \(the model has 3 classes\)"),
    "fractional class": (_bad(0, 1, 1.5), "class ids must be whole numbers"),
    "nan centre": (_bad(2, 2, float("nan")), r"row 2 \[1, 0, nan, .*NaN or infinity"),
    "infinite width": (_bad(0, 4, float("inf")), "NaN or infinity"),
    "negative width": (_bad(1, 5, -0.1), r"row 1 .*negative width or height"),
    "pixels": (GOOD * torch.tensor([1, 1, 640, 480, 640, 480]), "normalized to 0..1.*pixel coordinates"),
    "image index = batch": (_bad(2, 0, BATCH), r"row 2 .*image indices must be whole numbers in 0\.\.1"),
    "negative image index": (_bad(0, 0, -1), "image indices"),
    "fractional image index": (_bad(0, 0, 0.5), "image indices"),
    "integer targets": (GOOD.long(), "targets must be floating point"),
    "five columns": (GOOD[:, 1:], r"targets must be \(N, 6\)"),
}


def _af_loss(targets):
    maps = [torch.randn(BATCH, 4 * 16 + NC, 64 // s, 64 // s) for s in (8, 16, 32)]
    return AnchorFreeLoss({"nc": NC, "reg_max": 16, "stride": [8, 16, 32]}, {})(maps, targets)


def _e2e_loss(targets):
    maps = [torch.randn(BATCH, 4 + NC, 64 // s, 64 // s) for s in (8, 16, 32)]
    return E2ELoss({"nc": NC, "reg_max": 1, "stride": [8, 16, 32]})({"one2many": maps, "one2one": maps}, targets)


def _rtdetr_loss(targets):
    layers, queries = 2, 10
    raw = (
        torch.rand(layers, BATCH, queries, 4),
        torch.randn(layers, BATCH, queries, NC),
        torch.rand(BATCH, queries, 4),
        torch.randn(BATCH, queries, NC),
        None,
    )
    return RTDETRLoss(SimpleNamespace(nc=NC))(raw, targets)


def _rtdetr_denoising(targets):
    return denoising_group(targets, BATCH, NC, 10, torch.randn(NC, 8))


_V5 = {}


def _yolov5_loss(targets):
    if not _V5:
        torch.manual_seed(0)
        model = DetectionModel("yolov5n.yaml", nc=NC).train()
        _V5["raw"] = [r.detach() for r in model(torch.rand(BATCH, 3, 64, 64))]
        _V5["loss"] = build_loss(model, {}, imgsz=64)
    return _V5["loss"](_V5["raw"], targets)


LOSSES = {
    "yolov5": (_yolov5_loss, "DetectionLoss"),
    "anchor-free": (_af_loss, "AnchorFreeLoss"),
    "end-to-end": (_e2e_loss, "E2ELoss"),
    "rtdetr": (_rtdetr_loss, "RTDETRLoss"),
    "rtdetr-denoising": (_rtdetr_denoising, "RT-DETR denoising"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_malformed_targets_are_refused_naming_the_row(loss: str, case: str) -> None:
    fn, who = LOSSES[loss]
    targets, message = BAD[case]
    with pytest.raises(ValueError, match=f"^{who}: .*{message}"):
        fn(targets)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_well_formed_edge_targets_are_accepted(loss: str) -> None:
    """Centres on the border, classes 0 and nc - 1, boxes of zero width and of the whole image, float64, no rows."""
    edges = torch.tensor(
        [[1, 0, 0.0, 1.0, 0.6, 0.2], [0, NC - 1, 1.0, 0.0, 0.0, 0.3], [0, 1, 0.5, 0.5, 1.0, 1.0]], dtype=torch.float64
    )
    fn = LOSSES[loss][0]
    for targets in (edges, GOOD, torch.zeros(0, 6)):
        out = fn(targets)
        if loss != "rtdetr-denoising":
            assert torch.isfinite(out[0])


def test_check_targets_reads_the_extra_values_in_the_same_read() -> None:
    assert check_targets(GOOD, NC, BATCH, "x", extra=torch.tensor([7, 2])) == [7, 2]
    assert check_targets(torch.zeros(0, 6), NC, BATCH, "x", extra=torch.tensor([0, 0])) == [0, 0]
