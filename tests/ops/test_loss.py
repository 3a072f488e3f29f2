"""YOLOv5 loss: target assignment rules, float32 under autocast, and that it can be minimized."""

from __future__ import annotations

import pytest
import torch

from tests.device_syncs import DeviceSyncs
from yolotr.models.detection import DetectionModel
from yolotr.ops.loss import DetectionLoss

HYP = dict(box=0.05, cls=0.5, obj=1.0, anchor_t=4.0)


def _raw(model, size=256):
    model.train()
    return model(torch.zeros(1, 3, size, size))


def test_neighbour_cells_follow_the_centre_fraction():
    model = DetectionModel("yolov5n.yaml", nc=2)
    loss = DetectionLoss(model.model[-1], HYP, 256)
    raw = _raw(model)
    # P3 grid is 32x32; a 16-pixel box (2 cells) matches anchor 0 (10x13 px = 1.25x1.6 cells) only by ratio.
    centred = torch.tensor([[0, 1, (10 + 0.5) / 32, (20 + 0.5) / 32, 16 / 256, 16 / 256]])
    b, a, gj, gi, tbox, anchors, c = next(loss.build_targets(raw, centred))
    assert set(zip(gj.tolist(), gi.tolist())) == {(20, 10)}
    off_centre = torch.tensor([[0, 1, (10 + 0.2) / 32, (20 + 0.8) / 32, 16 / 256, 16 / 256]])
    b, a, gj, gi, tbox, anchors, c = next(loss.build_targets(raw, off_centre))
    assert set(zip(gj.tolist(), gi.tolist())) == {(20, 10), (20, 9), (21, 10)}  # left and down neighbours
    assert (tbox[:, :2] > -0.5).all() and (tbox[:, :2] < 1.5).all()


@pytest.mark.parametrize("dense", [False, True])
def test_a_centre_on_the_right_or_bottom_edge_is_measured_from_the_last_cell(dense):
    """A centre at cx = 1.0 falls in cell nx, clamped to nx - 1 as in YOLOv5; the box target was measured from
    the unclamped cell (offset 0.0, one cell left of the centre) where YOLOv5's is 1.0 (loss items 6 % off)."""
    model = DetectionModel("yolov5n.yaml", nc=2)
    loss = DetectionLoss(model.model[-1], HYP, 256, dense=dense)
    raw = _raw(model)
    edge = torch.tensor([[0, 1, 1.0, 1.0, 16 / 256, 16 / 256]])
    b, a, gj, gi, tbox, anchors, c, valid = next(loss._targets(raw, edge, dense))
    keep = valid if valid is not None else torch.ones_like(gi, dtype=torch.bool)
    centre = keep & (gi == 31) & (gj == 31)
    assert centre.any()
    torch.testing.assert_close(tbox[centre, :2], torch.ones(int(centre.sum()), 2))
    assert (tbox[keep, :2] >= -0.5).all() and (tbox[keep, :2] <= 1.5).all()


def test_anchor_ratio_threshold_rejects_far_sizes():
    model = DetectionModel("yolov5n.yaml", nc=2)
    loss = DetectionLoss(model.model[-1], HYP, 256)
    huge = torch.tensor([[0, 0, 0.5, 0.5, 0.9, 0.9]])  # 230 px: too big for every P3 anchor (<= 33 px)
    per_head = [len(t[0]) for t in loss.build_targets(_raw(model), huge)]
    assert per_head[0] == 0 and per_head[2] > 0


def test_yolov4_head_uses_centre_cell_only():
    model = DetectionModel("yolov4-s.yaml", nc=2)
    loss = DetectionLoss(model.model[-1], HYP, 256)
    off_centre = torch.tensor([[0, 1, (10 + 0.2) / 32, (20 + 0.8) / 32, 16 / 256, 16 / 256]])
    b, a, gj, gi, *_ = next(loss.build_targets(_raw(model), off_centre))
    assert set(zip(gj.tolist(), gi.tolist())) == {(20, 10)}


def test_loss_is_float32_under_bf16_autocast():
    model = DetectionModel("yolov5n.yaml", nc=2).train()
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.2, 0.3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = model(torch.rand(1, 3, 128, 128))
    assert raw[0].dtype == torch.bfloat16
    total, items = DetectionLoss(model.model[-1], HYP, 128)(raw, targets)
    assert total.dtype == torch.float32 and items.shape == (3,)


def test_loss_decreases_when_overfitting_one_batch():
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=2).train()
    loss_fn = DetectionLoss(model.model[-1], HYP, 128)
    images = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 1, 0.4, 0.5, 0.2, 0.3], [1, 0, 0.7, 0.3, 0.3, 0.2]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(25):
        loss, _ = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def _box_pairs(n=400, seed=0):
    """``(n, 4)`` xyxy predictions and targets: overlapping, nested, disjoint, touching and thin pairs."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * 4 + 1e-3
    target = torch.cat((xy, xy + wh), 1)
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 10  # a third of the pairs end up disjoint
    scale = torch.rand(n, 2, generator=g) * 2 + 0.05
    centre = xy + wh / 2 + shift
    pred = torch.cat((centre - wh * scale / 2, centre + wh * scale / 2), 1)
    pred[:4] = target[:4]  # identical
    pred[4, 0], pred[4, 2] = target[4, 2], target[4, 2] + 1  # touching: zero-width intersection
    return pred, target


def test_complete_iou_loss_equals_torchvision_without_host_reads():
    """The YOLOv5 loss's CIoU is torchvision's ``complete_box_iou_loss`` to the bit, value and gradient, and
    reads nothing on the host (torchvision's boolean-mask indexing: five ``nonzero`` a call, each a CUDA sync)."""
    import torchvision

    from yolotr.ops.loss import complete_iou_loss

    pred, target = _box_pairs()
    disjoint = (torch.min(pred[:, 2], target[:, 2]) <= torch.max(pred[:, 0], target[:, 0])) | (
        torch.min(pred[:, 3], target[:, 3]) <= torch.max(pred[:, 1], target[:, 1])
    )
    assert 50 < int(disjoint.sum()) < 350
    outputs, grads = [], []
    for fn in (complete_iou_loss, lambda p, t: torchvision.ops.complete_box_iou_loss(p, t, reduction="none")):
        p = pred.clone().requires_grad_()
        with DeviceSyncs() as mode:
            out = fn(p, target)
            (out * torch.linspace(0.5, 2, len(out))).sum().backward()
        outputs.append(out.detach())
        grads.append(p.grad)
        if fn is complete_iou_loss:
            assert mode.reads == []
        else:
            assert len(mode.reads) >= 5  # the reference's boolean indexing is seen: the test can tell
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(grads[0], grads[1])


def _targets(seed: int, n: int) -> torch.Tensor:
    """``(n, 6)`` targets over 2 images: sizes from 0.3% to 90% of the side, some near the border."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) ** 2 * 0.9 + 0.003
    xy = torch.rand(n, 2, generator=g)
    image = torch.randint(0, 2, (n, 1), generator=g).float()
    return torch.cat((image, torch.randint(0, 3, (n, 1), generator=g).float(), xy, wh), 1)


@pytest.mark.parametrize("yaml", ["yolov5n.yaml", "yolov4.yaml"])
def test_dense_targets_give_the_filtered_losses_without_host_reads(yaml):
    """The accelerator's path (every candidate, the non-matches selected away) gives the CPU path's items and
    gradients, and reads nothing on the host (no boolean indexing: each a CUDA synchronisation)."""

    torch.manual_seed(0)
    model = DetectionModel(yaml, nc=3).train()
    for seed, n in ((0, 12), (1, 40), (2, 0), (3, 1)):
        raw = [r.detach().requires_grad_() for r in model(torch.rand(2, 3, 128, 128))]
        results = {}
        for dense in (False, True):
            for r in raw:
                r.grad = None
            loss = DetectionLoss(model.model[-1], HYP, 128, dense=dense)
            with DeviceSyncs() as mode:
                total, items = loss(raw, _targets(seed, n))
                total.backward()
            results[dense] = items, [r.grad.clone() for r in raw], mode.reads
        (items, grads, reads), (dense_items, dense_grads, dense_reads) = results[False], results[True]
        assert dense_reads == [] and (n == 0 or reads)
        torch.testing.assert_close(dense_items, items, rtol=1e-5, atol=1e-8)
        assert n < 12 or items[0] > 0  # (a lone tiny box may match no anchor)
        for d, s in zip(dense_grads, grads):
            torch.testing.assert_close(d, s, rtol=1e-4, atol=1e-8)
