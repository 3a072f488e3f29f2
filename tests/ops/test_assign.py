"""Task-aligned assigner on tiny hand-made cases: the centre rule, top-k, overlaps, normalization; and on random
cases against the ``ultralytics`` package's assigner, live."""

from __future__ import annotations

import pytest
import torch

from yolotr.ops.assign import TaskAlignedAssigner, bbox_ciou

# A 4x4 grid of anchor centres at 8 px spacing (4, 12, 20, 28), all predicting class 0.
GRID = torch.stack(torch.meshgrid(torch.arange(4.0) * 8 + 4, torch.arange(4.0) * 8 + 4, indexing="xy"), -1).view(-1, 2)


def _index(x: float, y: float) -> int:
    return int(((GRID[:, 0] == x) & (GRID[:, 1] == y)).nonzero())


def _assign(gt_boxes, pred_boxes=None, scores=None, topk=10, strides=(8.0,)):
    a = GRID.shape[0]
    if pred_boxes is None:  # each anchor predicts a 12 px box about itself
        pred_boxes = torch.cat((GRID - 6, GRID + 6), 1)
    if scores is None:
        scores = torch.full((a, 2), 0.5)
    gt = torch.tensor(gt_boxes, dtype=torch.float32)[None]
    assigner = TaskAlignedAssigner(topk=topk, num_classes=2, strides=strides)
    return assigner(
        scores[None], pred_boxes[None], GRID, torch.zeros(1, gt.shape[1], 1), gt, torch.ones(1, gt.shape[1], 1)
    )


def test_anchor_outside_the_box_is_never_assigned():
    # Box spans x 0..17, y 0..17: centres (4|12, 4|12) inside; (20, *) outside even though top-k has room.
    out = _assign([[0.0, 0.0, 17.0, 17.0]], topk=10)
    fg = set(out.fg_mask[0].nonzero().view(-1).tolist())
    assert fg == {_index(4, 4), _index(12, 4), _index(4, 12), _index(12, 12)}
    assert out.scores[0, ~out.fg_mask[0]].abs().sum() == 0


def test_centre_on_the_edge_is_outside():
    # x2 = 12 exactly: the centres at x = 12 are not strictly inside.
    out = _assign([[0.0, 0.0, 12.0, 17.0]])
    assert set(out.fg_mask[0].nonzero().view(-1).tolist()) == {_index(4, 4), _index(4, 12)}


def test_anchor_inside_two_boxes_goes_to_the_higher_overlap():
    # Both boxes hold the centre (12, 12); its 12 px prediction (6..18) overlaps box 1 far better.
    boxes = [[0.0, 0.0, 30.0, 30.0], [7.0, 7.0, 17.0, 17.0]]
    out = _assign(boxes, topk=16)
    shared = _index(12, 12)
    assert out.fg_mask[0, shared]
    assert out.gt_index[0, shared] == 1
    assert torch.equal(out.boxes[0, shared], torch.tensor(boxes[1]))
    # And with the boxes swapped, it follows the box, not the index.
    out = _assign(boxes[::-1], topk=16)
    assert out.gt_index[0, shared] == 0


def test_topk_keeps_the_best_aligned_anchors():
    scores = torch.full((16, 2), 0.1)
    best = [_index(12, 12), _index(20, 20)]
    scores[best, 0] = 0.9
    out = _assign([[0.0, 0.0, 32.0, 32.0]], scores=scores, topk=2)
    assert set(out.fg_mask[0].nonzero().view(-1).tolist()) == set(best)


def test_target_scores_are_normalized_to_the_best_overlap():
    gt = [[3.0, 3.0, 21.0, 21.0]]  # holds the 9 centres at 4, 12, 20: all within top-10
    preds = torch.cat((GRID - 8, GRID + 8), 1)  # 16 px boxes: every CIoU with the box is positive
    out = _assign(gt, pred_boxes=preds)
    fg = out.fg_mask[0]
    assert int(fg.sum()) == 9
    preds = preds[fg]
    overlap = bbox_ciou(torch.tensor(gt).expand_as(preds), preds).clamp(0).view(-1)
    align = 0.5**0.5 * overlap**6  # score ** alpha * CIoU ** beta
    target = out.scores[0, fg, 0]
    torch.testing.assert_close(target, align * overlap.max() / align.max(), rtol=1e-5, atol=1e-7)
    assert target.max() == pytest.approx(float(overlap.max()), rel=1e-5)
    assert (out.scores[0, fg, 1] == 0).all() and (out.labels[0, fg] == 0).all()


def test_tiny_box_is_widened_to_the_second_stride_for_candidates():
    # A 4x4 px box about (12, 12) holds no anchor centre of its own; widened to 16 px (4..20) it holds one.
    out = _assign([[10.0, 10.0, 14.0, 14.0]], strides=(8.0, 16.0))
    assert set(out.fg_mask[0].nonzero().view(-1).tolist()) == {_index(12, 12)}
    assert torch.equal(out.boxes[0, _index(12, 12)], torch.tensor([10.0, 10.0, 14.0, 14.0]))  # target unchanged


def test_padding_boxes_and_no_boxes_assign_nothing():
    gt = torch.tensor([[[0.0, 0.0, 32.0, 32.0]]])
    assigner = TaskAlignedAssigner(topk=10, num_classes=2, strides=(8.0,))
    preds = torch.cat((GRID - 6, GRID + 6), 1)[None]
    out = assigner(torch.full((1, 16, 2), 0.5), preds, GRID, torch.zeros(1, 1, 1), gt, torch.zeros(1, 1, 1))
    assert not out.fg_mask.any() and out.scores.sum() == 0
    out = assigner(torch.full((1, 16, 2), 0.5), preds, GRID, torch.zeros(1, 0, 1), gt[:, :0], torch.zeros(1, 0, 1))
    assert not out.fg_mask.any() and out.scores.shape == (1, 16, 2)


def test_ciou_of_identical_boxes_is_one_and_penalizes_distance():
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    assert float(bbox_ciou(box, box)) == pytest.approx(1.0, abs=1e-6)
    shifted = box + torch.tensor([[5.0, 0.0, 5.0, 0.0]])
    # IoU 100 / 300; centres 5 px apart, enclosing box 15 x 20 (diagonal^2 625); same aspect: no v term.
    assert float(bbox_ciou(box, shifted)) == pytest.approx(100 / 300 - 25 / 625, abs=1e-5)


def _random_case(seed: int):
    """A random assignment problem: ``B`` images, a 3-level anchor grid, scores (every third case quantised to
    quarters: ties), a predicted box about each anchor, up to 12 boxes per image with padding rows and a
    duplicate."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=g))]  # noqa: E731
    b, nc, n, h, w = pick([1, 2, 3]), pick([1, 3, 20]), pick([1, 2, 5, 12]), pick([64, 96, 128]), pick([64, 96, 128])
    points = torch.cat(
        [
            torch.stack(torch.meshgrid(torch.arange(w // s) + 0.5, torch.arange(h // s) + 0.5, indexing="xy"), -1)
            .view(-1, 2) * s
            for s in (8, 16, 32)
        ]
    )  # fmt: skip
    a, size = points.shape[0], torch.tensor([w, h], dtype=torch.float32)
    scores = torch.rand(b, a, nc, generator=g)
    if seed % 3 == 0:
        scores = (scores * 4).round() / 4
    centre = points + (torch.rand(b, a, 2, generator=g) - 0.5) * 8  # about its anchor, as a head predicts
    wh = torch.rand(b, a, 2, generator=g) * 64 + 8
    predicted = torch.cat((centre - wh / 2, centre + wh / 2), -1)
    gwh = torch.rand(b, n, 2, generator=g) * size * pick([0.15, 0.3, 0.9]) + 4
    gc = gwh / 2 + torch.rand(b, n, 2, generator=g) * (size - gwh)
    mask = (torch.rand(b, n, 1, generator=g) > 0.2).float()
    mask[:, 0] = 1.0
    labels = torch.randint(0, nc, (b, n, 1), generator=g).float()
    boxes = torch.cat((gc - gwh / 2, gc + gwh / 2), -1)
    if n > 1:  # the last row repeats the first (a duplicated label line)
        boxes[:, -1], labels[:, -1], mask[:, -1] = boxes[:, 0], labels[:, 0], 1.0
    boxes, labels = boxes * mask, labels * mask  # padding rows are zeros, as both collates give them
    return nc, scores, predicted, points, labels, boxes, mask


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("topk", "topk2"), [(10, None), (7, 1)])
def test_random_cases_assign_as_the_package(seed, topk, topk2):
    """The same foreground, class, box and soft score per anchor as the ``ultralytics`` package's assigner (live),
    both matching paths, on random problems with ties, padding rows and duplicated boxes."""
    tal = pytest.importorskip("ultralytics.utils.tal", reason="the ultralytics package is a bench extra")
    nc, scores, predicted, points, labels, boxes, mask = _random_case(seed)
    kwargs = {"topk2": topk2} if topk2 else {}
    want = tal.TaskAlignedAssigner(topk=topk, num_classes=nc, alpha=0.5, beta=6.0, stride=[8, 16, 32], **kwargs)(
        scores, predicted, points, labels, boxes, mask
    )
    fg = want[3].bool()
    assert fg.any()
    for dense in (False, True):
        got = TaskAlignedAssigner(topk=topk, num_classes=nc, strides=(8, 16, 32), topk2=topk2, dense=dense)(
            scores, predicted, points, labels, boxes, mask
        )
        assert torch.equal(got.fg_mask, fg)
        assert torch.equal(got.labels[fg], want[0][fg].long())
        torch.testing.assert_close(got.boxes[fg], want[1][fg])
        torch.testing.assert_close(got.scores, want[2], rtol=1e-5, atol=1e-6)
