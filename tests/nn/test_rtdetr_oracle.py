"""The package's RT-DETR-l checkpoint imports without the package and reproduces its recorded outputs
(``next_oracle.pt``): encoder selection, last decoder layer, final detections, and the training forward with
the recorded denoising queries."""

from __future__ import annotations

import sys

import pytest
import torch

from yolotr.engine.fast_backend import output_layout
from yolotr.models.loading import load_model
from yolotr.nn.head_detr import RTDETRDecoder
from yolotr.ops.boxes import DETECTIONS, kept_detections, xyxy2xywh

from ..conftest import SHARED

NEXT = SHARED / "reference" / "ultralytics-next"
ORACLE = NEXT / "next_oracle.pt"
pytestmark = pytest.mark.skipif(not ORACLE.is_file(), reason=f"{ORACLE} not found (set YOLOTR_SHARED)")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def oracle(one_thread) -> dict:
    return torch.load(ORACLE, weights_only=True)["models"]["rtdetr-l"]


@pytest.fixture(scope="module")
def model(oracle):
    already = "ultralytics" in sys.modules
    model = load_model(NEXT / oracle["checkpoint"])
    assert already or "ultralytics" not in sys.modules  # read through the restricted unpickler only
    return model


def _align(ours: torch.Tensor, theirs: torch.Tensor, tol: float) -> torch.Tensor:
    """For each of ``theirs`` rows ``(Q, 4)`` the index of our nearest row; near-equal encoder logits may swap
    queries, so rows are matched on their encoder boxes. Every row must find a partner within ``tol``."""
    distance = (theirs[:, None] - ours[None]).abs().amax(-1)
    nearest, index = distance.min(1)
    assert nearest.max() <= tol and index.unique().numel() == len(index)
    return index


def _as_set_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a[:, None, :5] - b[None, :, :5]).abs().amax(-1)
    return torch.where(a[:, None, 5] == b[None, :, 5], d, torch.inf).amin(1)


def test_eval_outputs_and_detections(model, oracle) -> None:
    head = model.model[-1]
    assert isinstance(head, RTDETRDecoder) and head.end2end and output_layout(model) == DETECTIONS
    assert (head.num_queries, head.decoder.eval_idx, head.num_denoising) == (300, 5, 100)
    for case in oracle["cases"]:
        floor = case["noise_floor"]["fused"]
        x = case["input_uint8"].float() / 255
        with torch.no_grad():
            det, (dec_boxes, dec_scores, enc_boxes, enc_scores, meta) = model(x)
        assert meta is None and dec_boxes.shape == (1, 1, 300, 4) and det.shape == (1, 300, 6)
        rows = _align(enc_boxes[0], case["eval_enc_bboxes"][0], 4 * floor["eval_enc_bboxes_aligned"])
        pairs = (
            (enc_scores[0, rows], case["eval_enc_scores"][0], floor["eval_enc_scores_aligned"]),
            (dec_boxes[0, 0, rows], case["eval_dec_bboxes"][0, 0], floor["eval_dec_bboxes_aligned"]),
            (dec_scores[0, 0, rows], case["eval_dec_scores"][0, 0], floor["eval_dec_scores_aligned"]),
        )
        for got, want, noise in pairs:
            assert (got - want).abs().max() <= 4 * noise
        # the package's eval output is normalized cxcywh; ours is xyxy in input pixels
        h, w = case["imgsz"]
        normalized = det[0].clone()
        normalized[:, :4] = xyxy2xywh(det[0, :, :4]) / torch.tensor([w, h, w, h])
        tol = 4 * floor["eval_output_as_set"]
        assert _as_set_distance(normalized, case["eval_output"][0]).max() <= tol
        assert _as_set_distance(case["eval_output"][0], normalized).max() <= tol
        # final detections at conf 0.0, max_det 300, as the predictor keeps them (no NMS: the head says so)
        kept = kept_detections(det[0], 0.0, None, 300)
        theirs = case["detections"]
        assert kept.shape == theirs.shape
        pixel_tol = 4 * floor["eval_output_as_set"] * max(h, w)
        assert _as_set_distance(kept, theirs).max() <= pixel_tol
        assert _as_set_distance(theirs, kept).max() <= pixel_tol


def test_training_forward_with_the_recorded_denoising_queries(model, oracle, monkeypatch) -> None:
    """Training mode with stored BatchNorm statistics: all six decoder layers, the recorded denoising queries
    decoded first behind their attention mask, the matching queries as without denoising."""
    case = oracle["cases"][0]
    dn = case["denoise_case"]
    head = model.model[-1]
    recorded = (
        head.denoising_class_embed.weight[dn["dn_class_labels"]],
        dn["dn_bbox_logits"],
        dn["attn_mask"],
        dn["dn_meta"],
    )
    monkeypatch.setattr(head, "denoising_queries", lambda targets, batch_size, k: recorded)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    try:
        with torch.no_grad():
            dec_boxes, dec_scores, enc_boxes, enc_scores, meta = model(
                case["input_uint8"].float() / 255, case["targets"]
            )
    finally:
        model.eval()
    assert meta is dn["dn_meta"] and dec_boxes.shape == (6, 1, 500, 4) and dec_scores.shape == (6, 1, 500, 80)
    floor = case["noise_floor"]["fused"]
    # the denoising queries keep their recorded order: no alignment
    assert (dec_boxes[:, :, :200] - dn["train_dec_bboxes"][:, :, :200]).abs().max() <= 4 * floor[
        "eval_dec_bboxes_aligned"
    ]
    assert (dec_scores[:, :, :200] - dn["train_dec_scores"][:, :, :200]).abs().max() <= 4 * floor[
        "eval_dec_scores_aligned"
    ]
    rows = _align(enc_boxes[0], case["train_enc_bboxes"][0], 4 * floor["eval_enc_bboxes_aligned"])
    assert (enc_scores[0, rows] - case["train_enc_scores"][0]).abs().max() <= 4 * floor["eval_enc_scores_aligned"]
    matching = 200 + rows
    for got, want, noise in (
        (dec_boxes[:, 0, matching], case["train_dec_bboxes"][:, 0], floor["eval_dec_bboxes_aligned"]),
        (dec_scores[:, 0, matching], case["train_dec_scores"][:, 0], floor["eval_dec_scores_aligned"]),
    ):
        assert (got - want).abs().max() <= 4 * noise
