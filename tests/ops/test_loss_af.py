"""Anchor-free loss: equal to the ultralytics package's v8DetectionLoss on its own maps, and sane alone."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from tests.conftest import shared_path
from tests.device_syncs import DeviceSyncs
from yolotr.engine.config import default_config
from yolotr.errors import ConfigError
from yolotr.ops.loss import LOSS_NAMES, DetectionLoss, build_loss
from yolotr.ops.loss_af import AnchorFreeLoss

CASES = [(model, case) for model in ("yolov8n", "yolo11n", "yolo12n") for case in (0, 1)]
HEAD = {"nc": 80, "reg_max": 16, "stride": [8.0, 16.0, 32.0]}


@lru_cache(maxsize=1)
def _oracle_file(path: str) -> dict:
    return torch.load(path, weights_only=True)


def _oracle_case(model: str, case: int) -> dict:
    path = shared_path("reference", "ultralytics", "anchor_free_oracle.pt")
    return _oracle_file(str(path))["models"][model]["cases"][case]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


@pytest.mark.parametrize(("model", "case"), CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_items_and_foreground_equal_the_package(model, case):
    ref = _oracle_case(model, case)
    loss = AnchorFreeLoss({"nc": 80, "reg_max": ref["reg_max"], "stride": ref["strides"]}, default_config())
    assert loss.gains == ref["gains"]
    out = loss.detailed(ref["train_maps"], ref["targets"])
    assert _rel(out.items, ref["loss_items"]) < 1e-4, (out.items, ref["loss_items"])
    assert int(out.assignment.fg_mask.sum()) == ref["foreground"]
    assert float(out.total.detach()) == pytest.approx(float(ref["loss_total"]), rel=1e-4)  # batch of 1


@pytest.mark.parametrize(("model", "case"), [("yolov8n", 0), ("yolo11n", 1)])
def test_topk_13_moves_the_items(model, case):
    """Proves the oracle test is sensitive: the package's top-k is 10, 13 (the assigner's default) is not it."""
    ref = _oracle_case(model, case)
    hyp = {**default_config(), "tal_topk": 13}
    items = AnchorFreeLoss(HEAD, hyp)(ref["train_maps"], ref["targets"])[1]
    assert _rel(items, ref["loss_items"]) > 1e-3


def test_batch_order_and_padding_do_not_matter():
    """Two copies of one image, their targets listed out of image order: the items of one image."""
    ref = _oracle_case("yolov8n", 1)
    loss = AnchorFreeLoss(HEAD, {})
    single_total, single = loss(ref["train_maps"], ref["targets"])
    maps = [torch.cat((m, m)) for m in ref["train_maps"]]
    second = ref["targets"].clone()
    second[:, 0] = 1
    targets = torch.cat((second[:2], ref["targets"], second[2:]))
    total, items = loss(maps, targets)
    torch.testing.assert_close(items, single, rtol=1e-5, atol=0)
    assert float(total.detach()) == pytest.approx(2 * float(single_total.detach()), rel=1e-5)


def _maps(batch=2, size=64, requires_grad=False, seed=0):
    torch.manual_seed(seed)
    return [torch.randn(batch, 4 * 16 + 3, size // s, size // s, requires_grad=requires_grad) for s in (8, 16, 32)]


def test_no_targets_gives_finite_class_loss_and_zero_box_losses():
    loss = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {})
    total, items = loss(_maps(), torch.zeros(0, 6))
    assert torch.isfinite(total) and items[1] > 0
    assert items[0] == 0 and items[2] == 0
    assert loss.names == ("box", "cls", "dfl")


def test_gradient_reaches_distribution_and_class_channels():
    maps = _maps(requires_grad=True)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.5]])
    total, items = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {})(maps, targets)
    assert (items > 0).all()
    total.backward()
    grads = torch.cat([m.grad.flatten(2) for m in maps], 2)  # (B, 67, A)
    assert torch.isfinite(grads).all()
    assert grads[:, :64].abs().sum() > 0 and grads[:, 64:].abs().sum() > 0


@pytest.mark.parametrize("reg_max", [16, 1])
def test_gradient_reaches_channels_last_maps_in_their_layout(reg_max):
    """The loss's backward writes the maps' gradient in the trainer's layout (channels_last), equal to the
    gradient of contiguous maps: a contiguous gradient makes the head's convolutions convert it first."""
    from yolotr.ops.loss_e2e import BranchLoss

    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.5], [1, 0, 0.7, 0.2, 0.3, 0.2]])
    if reg_max == 16:
        loss = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {})
    else:
        loss = BranchLoss(3, 1, [8.0, 16.0, 32.0], {"box": 7.5, "cls": 0.5, "dfl": 1.5}, topk=10)
    grads = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        maps = [
            torch.randn(2, 4 * reg_max + 3, 64 // s, 64 // s).to(memory_format=layout).requires_grad_()
            for s in (8, 16, 32)
        ]
        grads[layout] = []
        for m in maps:  # the gradient as the loss writes it (a leaf's .grad is re-laid out to match the leaf)
            m.register_hook(grads[layout].append)
        out = loss(maps, targets)
        (out[0] if isinstance(out, tuple) else out.total).backward()
        grads[layout].sort(key=lambda g: -g.shape[2])
    for contiguous, last in zip(grads[torch.contiguous_format], grads[torch.channels_last]):
        assert last.stride(1) == 1 and contiguous.stride(3) == 1  # channels innermost / columns innermost
        torch.testing.assert_close(last, contiguous, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_gives_float32_loss():
    maps = [m.bfloat16() for m in _maps()]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]])
    loss = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, items = loss(maps, targets)
    assert total.dtype == torch.float32 and items.dtype == torch.float32
    reference = loss([m.float() for m in maps], targets)[1]
    torch.testing.assert_close(items, reference, rtol=1e-6, atol=0)  # same numbers as float32 on the same maps


def test_gains_are_read_from_the_af_keys_not_the_yolov5_ones():
    ref = _oracle_case("yolov8n", 0)
    base = AnchorFreeLoss(HEAD, default_config())(ref["train_maps"], ref["targets"])[1]
    hyp = {**default_config(), "af_box": 15.0, "box": 1000.0, "cls": 1000.0}
    items = AnchorFreeLoss(HEAD, hyp)(ref["train_maps"], ref["targets"])[1]
    torch.testing.assert_close(items, base * torch.tensor([2.0, 1.0, 1.0]), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("hyp", "head", "message"),
    [
        ({"af_cls": "high"}, HEAD, "af_cls"),
        ({"tal_topk": 0}, HEAD, "tal_topk"),
        ({}, {**HEAD, "stride": [0.0, 0.0, 0.0]}, "strides"),
        ({}, {"nc": 80, "stride": [8, 16, 32]}, "reg_max"),
    ],
)
def test_bad_settings_raise_config_error(hyp, head, message):
    with pytest.raises(ConfigError, match=message):
        AnchorFreeLoss(head, hyp)


def test_bad_maps_and_targets_are_refused_clearly():
    loss = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {})
    with pytest.raises(ValueError, match="targets must be"):
        loss(_maps(), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="map 0"):
        loss([torch.zeros(1, 10, 8, 8)] * 3, torch.zeros(0, 6))
    with pytest.raises(ValueError, match="image indices"):
        loss(_maps(batch=1), torch.tensor([[1, 0, 0.5, 0.5, 0.2, 0.2]]))


class _AnchorFreeHeadStub(nn.Module):
    nc, reg_max, nl = 3, 16, 3

    def __init__(self):
        super().__init__()
        self.register_buffer("stride", torch.tensor([8.0, 16.0, 32.0]))


def test_build_loss_follows_the_head():
    from yolotr.models.detection import DetectionModel

    model = nn.Module()
    model.model = nn.Sequential(nn.Identity(), _AnchorFreeHeadStub())
    loss = build_loss(model, default_config(), 64)
    assert isinstance(loss, AnchorFreeLoss) and loss.names == ("box", "cls", "dfl")
    assert loss.strides == [8.0, 16.0, 32.0] and loss.nc == 3

    v5 = build_loss(DetectionModel("yolov5n.yaml", nc=2), default_config(), 64)
    assert isinstance(v5, DetectionLoss) and v5.names == LOSS_NAMES == ("box", "obj", "cls")


def _loss_with_targets(dense, seed=0):
    maps = _maps(batch=4, size=128, requires_grad=True, seed=seed)
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(12, 2, generator=g) * 0.4 + 0.05
    xy = wh / 2 + torch.rand(12, 2, generator=g) * (1 - wh)
    image = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 0]).float()[:, None]
    targets = torch.cat((image, torch.randint(0, 3, (12, 1), generator=g).float(), xy, wh), 1)
    out = AnchorFreeLoss({"nc": 3, "reg_max": 16, "stride": [8, 16, 32]}, {}, dense=dense).detailed(maps, targets)
    out.total.backward()
    return out, [m.grad for m in maps]


def test_dense_path_equals_the_foreground_path():
    """The accelerator's path (every anchor, background weighted out) gives the CPU path's numbers."""
    for seed in (0, 1):
        (sparse, sparse_grads), (dense, dense_grads) = _loss_with_targets(False, seed), _loss_with_targets(True, seed)
        assert int(sparse.assignment.fg_mask.sum()) > 20
        assert torch.equal(dense.assignment.fg_mask, sparse.assignment.fg_mask)
        assert torch.equal(dense.assignment.gt_index, sparse.assignment.gt_index)
        torch.testing.assert_close(dense.assignment.scores, sparse.assignment.scores, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(dense.items, sparse.items, rtol=1e-5, atol=0)
        for d, s in zip(dense_grads, sparse_grads):
            torch.testing.assert_close(d, s, rtol=1e-4, atol=1e-9)


def test_dense_path_reads_nothing_on_the_host_but_the_target_count(monkeypatch):
    """No nonzero, item, bool() or boolean indexing (each a host synchronisation on CUDA); one tolist."""
    tolist = torch.Tensor.tolist
    calls = []
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(t.shape) or tolist(t))
    with DeviceSyncs() as mode:
        _loss_with_targets(True)
    assert mode.reads == []
    assert calls == [torch.Size([6])]  # pad_targets' check_targets: first row failing each of 5 checks, most boxes
    with DeviceSyncs() as mode:
        _loss_with_targets(False)
    assert mode.reads == ["aten.nonzero.default"] * 2  # the CPU path: the candidates, then the foreground
