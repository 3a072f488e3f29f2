"""Memory-lean Conv training (yolotr.nn.lean): same values and gradients as the plain path, fewer saved bytes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from yolotr.engine.heap import set_mmap_threshold
from yolotr.models.detection import DetectionModel
from yolotr.nn import lean
from yolotr.nn.conv import Conv
from yolotr.nn.lean import lean_activations, lean_eligible, lean_wanted


def _model(seed: int = 0, memory_format=torch.channels_last) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel("yolov5n.yaml", nc=3).train()
    for m in model.modules():  # non-trivial affine parameters, so a wrong scale or shift shows in the outputs
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.to(memory_format=memory_format)


def _step(model: nn.Module, x: torch.Tensor, lean: bool, dtype: torch.dtype | None = None):
    """One forward + backward; returns the outputs and the parameter gradients by name."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None), lean_activations(lean):
        out = model(x)
    loss = sum((o.float() * torch.linspace(-1, 1, o.shape[-1])).square().mean() for o in out)
    loss.backward()
    return [o.detach() for o in out], {n: p.grad.clone() for n, p in model.named_parameters()}


class _SavedBytes:
    """Pack hook wrapper: bytes of the distinct activation storages kept for backward (a recipe counts as its ``x``).

    Storages of ``parameters`` are left out: kept by the model anyway.
    """

    def __init__(self, pack, parameters):
        self.pack, self.kept, self.total = pack, {p.untyped_storage().data_ptr(): p for p in parameters}, 0

    def __call__(self, t: torch.Tensor):
        packed = self.pack(t)
        kept = packed.x if isinstance(packed, lean._Recipe) else packed
        storage = kept.untyped_storage()
        if storage.data_ptr() not in self.kept:
            self.kept[storage.data_ptr()] = kept  # alive anyway (the graph holds it): the pointer stays unique
            self.total += storage.nbytes()
        return packed


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_lean_training_step_matches_the_plain_one(memory_format):
    plain, lean = _model(memory_format=memory_format), _model(memory_format=memory_format)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(memory_format=memory_format)
    out_p, grads_p = _step(plain, x, lean=False)
    out_l, grads_l = _step(lean, x, lean=True)
    for a, b in zip(out_p, out_l, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for name, g in grads_p.items():
        scale = g.abs().max().clamp_min(1e-8)
        assert (grads_l[name] - g).abs().max() / scale < 1e-4, name
    for (name, a), b in zip(plain.named_buffers(), lean.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)  # running stats, num_batches_tracked


def test_lean_path_saves_fewer_bytes_for_backward(monkeypatch):
    model = _model()
    x = torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)
    plain = _SavedBytes(lambda t: t, model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(plain, lambda t: t):
        out_plain = model(x)
    lean_bytes = _SavedBytes(lean._pack, model.parameters())
    monkeypatch.setattr(lean, "_pack", lean_bytes)
    with lean_activations(True):
        out_lean = model(x)
    assert lean_bytes.total < 0.6 * plain.total, (lean_bytes.total, plain.total)
    assert len(out_lean) == len(out_plain)


def test_bf16_autocast_trains_close_to_float32():
    model = _model()
    x = torch.rand(2, 3, 64, 64).to(memory_format=torch.channels_last)
    out_p, grads_p = _step(copy.deepcopy(model), x, lean=False, dtype=torch.bfloat16)
    out_l, grads_l = _step(model, x, lean=True, dtype=torch.bfloat16)
    for a, b in zip(out_p, out_l, strict=True):
        assert b.dtype == a.dtype
        assert (b.float() - a.float()).abs().max() <= 0.05 * a.float().abs().max()
    assert all(torch.isfinite(g).all() for g in grads_l.values())
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in grads_l.values()]), torch.cat([g.flatten() for g in grads_p.values()]), dim=0
    )
    assert cos > 0.99


def test_an_in_place_change_after_the_forward_is_not_hidden_by_a_recipe():
    torch.manual_seed(0)
    conv1, conv2 = Conv(3, 4, 3).train(), Conv(4, 2, 1).train()
    plain = copy.deepcopy(conv2)
    x = torch.rand(2, 3, 8, 8)
    with lean_activations(True):
        h = conv1(x)
        h.mul_(2)  # conv2 must see (and save) the doubled values: the recipe of h is stale now
        conv2(h).square().sum().backward()
    plain(h.detach()).square().sum().backward()
    torch.testing.assert_close(conv2.conv.weight.grad, plain.conv.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    ["lean off", "eval", "no_grad", "leaky act", "hooked bn", "hooked act", "no affine", "no running stats"],
)
def test_ineligible_convs_take_the_plain_path(case):
    act = nn.LeakyReLU(0.1) if case == "leaky act" else True
    conv = Conv(3, 4, 3, act=act).train()
    if case == "eval":
        conv.eval()
    if case == "hooked bn":
        conv.bn.register_forward_hook(lambda *a: None)
    if case == "hooked act":
        conv.act.register_forward_hook(lambda *a: None)
    if case == "no affine":
        conv.bn = nn.BatchNorm2d(4, affine=False)
    if case == "no running stats":
        conv.bn = nn.BatchNorm2d(4, track_running_stats=False)
    y = torch.rand(1, 4, 8, 8)
    grad = torch.no_grad() if case == "no_grad" else torch.enable_grad()
    with lean_activations(case != "lean off"), grad:
        assert not lean_eligible(y, conv.bn, conv.act)
    with lean_activations(True):
        assert lean_eligible(y, nn.BatchNorm2d(4).train(), nn.SiLU())


def test_lean_activations_restores_the_previous_state():
    bn, act, y = nn.BatchNorm2d(4).train(), nn.SiLU(), torch.rand(1, 4, 2, 2)
    assert not lean_eligible(y, bn, act)
    with lean_activations(True):
        with lean_activations(False):
            assert not lean_eligible(y, bn, act)
        assert lean_eligible(y, bn, act)
    assert not lean_eligible(y, bn, act)


def test_mmap_threshold_zero_leaves_glibc_alone():
    assert set_mmap_threshold(0) is False


def test_mmap_threshold_is_set_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert set_mmap_threshold(64) is True  # capped at 32 MiB, still accepted
    assert set_mmap_threshold(4) is True


@pytest.mark.parametrize(
    ("setting", "batch", "imgsz", "on"),
    [("auto", 16, 320, True), ("auto", 16, 256, True), ("auto", 16, 128, False), ("auto", 64, 128, True),
     (True, 1, 32, True), (False, 64, 640, False)],
)  # fmt: skip
def test_auto_lean_turns_on_for_large_batches_only(setting, batch, imgsz, on):
    assert lean_wanted(setting, batch, imgsz) is on
