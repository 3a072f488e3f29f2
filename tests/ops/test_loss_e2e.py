"""The end-to-end loss (YOLOv10, YOLO26) against the ``ultralytics`` package's ``E2ELoss`` oracle, its branch
weighting over the epochs, and ``build_loss`` choosing it from the head."""

from __future__ import annotations

import pytest
import torch

from tests.device_syncs import DeviceSyncs
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.ops.loss import build_loss
from yolotr.ops.loss_af import AnchorFreeLoss
from yolotr.ops.loss_e2e import E2ELoss

from ..conftest import SHARED

ORACLE = SHARED / "reference" / "ultralytics-next" / "next_oracle.pt"
needs_oracle = pytest.mark.skipif(not ORACLE.is_file(), reason=f"{ORACLE} not found (set YOLOTR_SHARED)")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def oracle() -> dict:
    return torch.load(ORACLE, weights_only=True)["models"]


@needs_oracle
@pytest.mark.parametrize("name", ["yolo26n", "yolov10n"])
@pytest.mark.parametrize("case", [0, 1])
def test_loss_matches_package(oracle, name: str, case: int) -> None:
    """Each branch's items and foreground count, then totals, weighted vectors and logged items at both
    recorded progress points (0 and 50 of 100 epochs finished), to 1e-4 relative."""
    model, c = oracle[name], oracle[name]["cases"][case]
    ref = c["loss"]
    fn = E2ELoss({"nc": 80, "reg_max": model["reg_max"], "stride": [8, 16, 32]}, {"epochs": 100})
    assert [f"{n}_loss" for n in fn.names] == ref["loss_names"]
    preds = {"one2many": c["train_maps_one2many"], "one2one": c["train_maps_one2one"]}
    one2many, one2one = fn.detailed(preds, c["targets"])
    for got, branch in ((one2many, ref["one2many"]), (one2one, ref["one2one"])):
        assert torch.allclose(got.items, branch["loss_items"], rtol=1e-4, atol=1e-6)
        assert int(got.assignment.fg_mask.sum()) == branch["foreground"]
    for point in ref["progress"]:
        fn.set_progress(point["updates"], point["epochs"])
        assert fn.o2m == pytest.approx(point["o2m"], rel=1e-12) and fn.o2o == pytest.approx(point["o2o"], rel=1e-12)
        total, items = fn(preds, c["targets"])
        assert total.item() == pytest.approx(point["loss_total"].item(), rel=1e-4)
        vector = fn.o2m * one2many.items + fn.o2o * one2one.items  # batch size 1
        assert torch.allclose(vector, point["loss_vector"], rtol=1e-4)
        want = torch.stack([point["loss_items"][f"{n}_loss"] for n in fn.names])
        assert torch.allclose(items, want, rtol=1e-4)


def test_branch_weighting_follows_the_epochs() -> None:
    fn = E2ELoss({"nc": 2, "reg_max": 1, "stride": [8, 16, 32]}, {"epochs": 11})
    assert (fn.o2m, fn.o2o) == (0.8, pytest.approx(0.2))
    for _ in range(5):
        fn.update()
    assert fn.o2m == pytest.approx(0.5 * 0.7 + 0.1)
    resumed = E2ELoss({"nc": 2, "reg_max": 1, "stride": [8, 16, 32]}, {"epochs": 3})
    resumed.load_state_dict(fn.state_dict())
    assert (resumed.o2m, resumed.epochs, resumed.updates) == (fn.o2m, 11, 5)
    fn.set_progress(10)
    assert fn.o2m == pytest.approx(0.1) and fn.o2o == pytest.approx(0.9)
    fn.set_progress(30)  # past the end stays at the final weight
    assert fn.o2m == pytest.approx(0.1)
    fn.set_progress(0, epochs=1)  # a one-epoch run does not divide by zero
    assert fn.o2m == pytest.approx(0.8)


def _targets() -> torch.Tensor:
    return torch.tensor([[0, 0, 0.30, 0.40, 0.25, 0.30], [0, 2, 0.70, 0.60, 0.40, 0.35], [1, 1, 0.5, 0.5, 0.6, 0.5]])


@pytest.mark.parametrize("cfg", ["yolo26n.yaml", "yolov10n.yaml"])
def test_build_loss_picks_e2e_and_trains_both_branches(cfg: str) -> None:
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=3).train()
    fn = build_loss(model, {"epochs": 10})
    assert isinstance(fn, E2ELoss) and fn.names[2] == ("l1" if cfg.startswith("yolo26") else "dfl")
    out = model(torch.rand(2, 3, 64, 64))
    total, items = fn(out, _targets())
    assert total.ndim == 0 and items.shape == (3,) and torch.isfinite(total) and (items > 0).all()
    total.backward()
    head = model.model[-1]
    assert head.cv2[0][-1].weight.grad.abs().sum() > 0
    assert head.one2one_cv3[0][-1].weight.grad.abs().sum() > 0
    assert model.model[0].conv.weight.grad.abs().sum() > 0  # the one-to-many branch reaches the backbone
    empty, _ = fn(model(torch.rand(2, 3, 64, 64)), torch.zeros(0, 6))
    assert torch.isfinite(empty) and empty > 0  # background-only images still train the class logits
    plain = DetectionModel("yolov8n.yaml", nc=3)
    assert isinstance(build_loss(plain, {}), AnchorFreeLoss)


def test_bad_inputs_are_clear() -> None:
    with pytest.raises(ConfigError, match="strides .* not set"):
        E2ELoss({"nc": 2, "reg_max": 1, "stride": [0.0, 0.0]})
    with pytest.raises(ConfigError, match="'tal_topk'"):
        E2ELoss({"nc": 2, "reg_max": 1, "stride": [8, 16, 32]}, {"tal_topk": 0})
    fn = E2ELoss({"nc": 2, "reg_max": 1, "stride": [8, 16, 32]})
    maps = [torch.zeros(1, 6, 8 // s, 8 // s) for s in (1, 2, 4)]
    with pytest.raises(ValueError, match="one2many"):
        fn(maps, torch.zeros(0, 6))
    with pytest.raises(ValueError, match=r"one2one map 0 has shape \(1, 5, 8, 8\)"):
        fn({"one2many": maps, "one2one": [torch.zeros(1, 5, 8, 8), *maps[1:]]}, torch.zeros(0, 6))


def _e2e_case(reg_max: int, dense: bool, seed: int = 0):
    """Both branches' losses and map gradients on random maps (4 images at 128 px, 12 boxes)."""
    torch.manual_seed(seed)
    no = 4 * reg_max + 3
    maps = {k: [torch.randn(4, no, 128 // s, 128 // s, requires_grad=True) for s in (8, 16, 32)] for k in BRANCHES}
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(12, 2, generator=g) * 0.4 + 0.05
    xy = wh / 2 + torch.rand(12, 2, generator=g) * (1 - wh)
    image = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 0]).float()[:, None]
    targets = torch.cat((image, torch.randint(0, 3, (12, 1), generator=g).float(), xy, wh), 1)
    fn = E2ELoss({"nc": 3, "reg_max": reg_max, "stride": [8, 16, 32]}, {}, dense=dense)
    outs = fn.detailed(maps, targets)
    (fn.o2m * outs[0].total + fn.o2o * outs[1].total).backward()
    return outs, [m.grad for k in BRANCHES for m in maps[k]]


BRANCHES = ("one2many", "one2one")


@pytest.mark.parametrize("reg_max", [1, 16])
def test_dense_path_equals_the_foreground_path(reg_max: int) -> None:
    """The accelerator's path (every anchor, background selected away) gives the CPU path's numbers, L1 and DFL."""
    (sparse, sparse_grads), (dense, dense_grads) = _e2e_case(reg_max, False), _e2e_case(reg_max, True)
    for s, d in zip(sparse, dense):
        assert int(s.assignment.fg_mask.sum()) >= 6 and torch.equal(d.assignment.fg_mask, s.assignment.fg_mask)
        assert (s.items[[0, 2]] > 0).all()
        torch.testing.assert_close(d.items, s.items, rtol=1e-5, atol=0)
    for d, s in zip(dense_grads, sparse_grads):
        torch.testing.assert_close(d, s, rtol=1e-4, atol=1e-9)


def test_dense_path_reads_nothing_on_the_host_but_the_target_count(monkeypatch) -> None:
    """No nonzero, item, bool() or boolean indexing in either branch; one tolist per branch (pad_targets)."""

    tolist = torch.Tensor.tolist
    calls = []
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(t.shape) or tolist(t))
    with DeviceSyncs() as mode:
        _e2e_case(1, True)
    assert mode.reads == [] and calls == [torch.Size([6])] * 2  # check_targets: 5 checks, most boxes in one image
    with DeviceSyncs() as mode:
        _e2e_case(1, False)
    assert mode.reads == ["aten.nonzero.default"] * 4  # the CPU path: candidates and foreground, per branch
