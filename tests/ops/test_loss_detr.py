"""RT-DETR's set loss: every item of the package's loss dict on the recorded decoder outputs (with and without
denoising), the Hungarian matches, build_loss's choice, and a backward pass through a tiny RT-DETR."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from yolotr.models.detection import DetectionModel
from yolotr.ops.loss import build_loss
from yolotr.ops.loss_detr import RTDETRLoss
from yolotr.ops.matcher import HungarianMatcher, iou_cxcywh

from ..conftest import SHARED

ORACLE = SHARED / "reference" / "ultralytics-next" / "next_oracle.pt"
needs_oracle = pytest.mark.skipif(not ORACLE.is_file(), reason=f"{ORACLE} not found (set YOLOTR_SHARED)")
TINY = {
    "nc": 3,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],
        [-1, 1, "Conv", [24, 3, 2]],  # 2: P3/8
        [-1, 1, "Conv", [32, 3, 2]],  # 3: P4/16
        [-1, 1, "Conv", [32, 3, 2]],  # 4: P5/32
    ],
    "head": [
        [-1, 1, "AIFI", [64, 4]],
        [[2, 3, 5], 1, "RTDETRDecoder", ["nc", 32, 20, 4, 4, 2, 64]],  # nc, hd, nq, ndp, nh, ndl, d_ffn
    ],
}


@pytest.fixture(scope="module")
def oracle() -> dict:
    return torch.load(ORACLE, weights_only=True)["models"]["rtdetr-l"]


def _relative(ours: dict, theirs: dict) -> float:
    assert set(ours) == set(theirs)
    return max(abs(float(ours[k]) - float(theirs[k])) / max(abs(float(theirs[k])), 1e-12) for k in theirs)


@needs_oracle
def test_loss_dict_equals_the_package_without_denoising(oracle) -> None:
    loss = RTDETRLoss(SimpleNamespace(nc=80))
    for case in oracle["cases"]:
        raw = (case["train_dec_bboxes"], case["train_dec_scores"], case["train_enc_bboxes"], case["train_enc_scores"])
        ours = loss.loss_dict((*raw, None), case["targets"])
        assert _relative(ours, case["loss"]["loss_dict"]) <= 1e-4
        assert all(float(ours[k]) == 0.0 for k in ours if k.endswith("_dn"))
        total, items = loss((*raw, None), case["targets"])
        assert abs(float(total) - float(case["loss"]["total"])) <= 1e-4 * float(case["loss"]["total"])
        want = case["loss"]["items"]
        assert torch.allclose(items, torch.stack([want["giou_loss"], want["cls_loss"], want["l1_loss"]]), rtol=1e-4)
        # the matcher's assignment of every slice (encoder top-k, decoder layers 0-5)
        cls, boxes = case["targets"][:, 1].long(), case["targets"][:, 2:]
        for slice_boxes, slice_scores, want in zip(
            torch.cat((raw[2][None], raw[0])), torch.cat((raw[3][None], raw[1])), case["loss"]["match_indices"]
        ):
            got = loss.matcher(slice_boxes, slice_scores, boxes, cls, [len(cls)])
            for (q, t), (wq, wt) in zip(got, want):
                assert sorted(zip(q.tolist(), t.tolist())) == sorted(zip(wq.tolist(), wt.tolist()))


@needs_oracle
def test_loss_dict_equals_the_package_with_recorded_denoising(oracle) -> None:
    case = oracle["cases"][0]
    dn = case["denoise_case"]
    raw = (
        dn["train_dec_bboxes"],
        dn["train_dec_scores"],
        dn["train_enc_bboxes"],
        dn["train_enc_scores"],
        dn["dn_meta"],
    )
    ours = RTDETRLoss(SimpleNamespace(nc=80)).loss_dict(raw, case["targets"])
    assert _relative(ours, dn["loss"]["loss_dict"]) <= 1e-4
    assert float(ours["loss_class_dn"]) > 0 and float(ours["loss_giou_aux_dn"]) > 0


def test_giou_and_matcher_basics() -> None:
    a = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    b = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
    assert torch.allclose(iou_cxcywh(a, a), torch.ones(1), atol=1e-5)
    assert torch.allclose(iou_cxcywh(a, b), torch.tensor([0.02 / 0.06]), atol=1e-5)
    far = torch.tensor([[0.9, 0.5, 0.1, 0.1]])
    assert float(iou_cxcywh(a, far, giou=True)) < 0  # disjoint: GIoU below zero
    # two queries, two targets: each query goes to the box it sits on, whatever the order
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    logits = torch.zeros(1, 2, 2)
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    [(q, t)] = HungarianMatcher()(boxes, logits, gt, torch.tensor([0, 1]), [2])
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0}
    assert HungarianMatcher()(boxes, logits, gt[:0], torch.zeros(0, dtype=torch.long), [0])[0][0].numel() == 0


def test_build_loss_picks_the_set_loss_and_it_trains_a_tiny_rtdetr() -> None:
    torch.manual_seed(0)
    model = DetectionModel(TINY)
    loss = build_loss(model, {}, 64)
    assert isinstance(loss, RTDETRLoss) and loss.names == ("giou", "cls", "l1")
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.3, 0.6, 0.2, 0.2], [1, 0, 0.7, 0.3, 0.2, 0.3]])
    model.train()
    raw = model(torch.rand(2, 3, 64, 96), targets)
    assert raw[4] is not None and raw[0].shape[:3] == (2, 2, raw[4]["dn_num_split"][0] + 20)
    total, items = loss(raw, targets)
    assert total.ndim == 0 and torch.isfinite(total) and items.shape == (3,) and not items.requires_grad
    full = loss.loss_dict(raw, targets)
    assert len(full) == 12 and torch.isclose(total, sum(full.values())) and float(full["loss_bbox_dn"].detach()) > 0
    total.backward()
    head = model.model[-1]
    assert head.denoising_class_embed.weight.grad.abs().sum() > 0  # the denoising queries train their embedding
    assert model.model[0].conv.weight.grad.abs().sum() > 0
    assert head.dec_bbox_head[0].layers[-1].weight.grad.abs().sum() > 0
    # a batch without boxes: no denoising, box terms zero, the class term pushes everything to background
    model.zero_grad()
    raw = model(torch.rand(2, 3, 64, 96), targets[:0])
    assert raw[4] is None
    empty = loss.loss_dict(raw, targets[:0])
    values = {k: float(v.detach()) for k, v in empty.items()}
    assert values["loss_bbox"] == 0 and values["loss_giou"] == 0 and values["loss_class"] > 0
    sum(empty.values()).backward()
    model.eval()
    with torch.no_grad():
        det, raw = model(torch.rand(1, 3, 64, 96), targets)  # eval ignores targets: no denoising
    assert raw[4] is None and det.shape == (1, 20, 6)
    assert torch.isfinite(loss(raw, targets[:1])[0])  # the validator's loss on the eval output
