"""The NaN guard's own steps: locating a fault leaves the model as it was; non-finite BatchNorm statistics go
back to the snapshot's."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from yolotr.engine.guard import NonFiniteGuard
from yolotr.errors import TrainingError


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))


def _trained_by_sgd():
    """``_model()``, an SGD with momentum over it, and a function that takes one step on a random batch."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        optimizer.zero_grad()
        model(torch.rand(2, 3, 16, 16)).square().mean().backward()
        optimizer.step()

    return model, optimizer, step


def test_locating_names_the_module_and_leaves_the_running_statistics_as_they_were():
    model = _model().train()
    x = torch.rand(2, 3, 16, 16)
    model[3].register_forward_hook(lambda module, inputs, output: output * math.nan)
    before = {n: b.clone() for n, b in model.named_buffers()}
    report = NonFiniteGuard().locate(model, 5, lambda: model(x).mean())
    assert (report.step, report.module, report.kind) == (5, "3", "output")
    assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())  # the re-run updated nothing


def test_a_fault_of_the_loss_function_is_named_as_the_loss():
    """Every module's output finite and the loss not: the report said "did not reproduce on a re-run"."""
    model = _model().train()
    x = torch.rand(2, 3, 16, 16)
    report = NonFiniteGuard().locate(model, 4, lambda: model(x).mean() * math.nan)
    assert (report.step, report.module, report.kind) == (4, None, "loss")
    assert "first seen in the loss function" in str(report) and "(2, 4, 14, 14) torch.float32" in str(report)


def test_a_module_that_returns_a_dict_is_named():
    """The end-to-end heads return ``{"one2many": ..., "one2one": ...}``, which the hooks did not look into."""

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return {"one2many": y, "one2one": y * math.nan}

    model = nn.Sequential(nn.Conv2d(3, 3, 1), TwoBranches()).train()
    x = torch.rand(1, 3, 8, 8)
    report = NonFiniteGuard().locate(model, 2, lambda: sum(t.mean() for t in model(x).values()))
    assert (report.module, report.kind) == ("1", "output")


def test_non_finite_statistics_go_back_to_the_snapshot_and_finite_ones_stay():
    model = _model().train()
    guard = NonFiniteGuard()
    model(torch.rand(2, 3, 16, 16))
    guard.take_snapshot(model=model)
    good = {n: b.clone() for n, b in model.named_buffers()}
    model(torch.rand(2, 3, 16, 16))  # a good step moves the statistics on
    moved = model[1].running_mean.clone()
    model[4].running_var.fill_(math.nan)
    assert guard.restore_buffers(model) == ["4.running_var"]
    assert torch.equal(model[4].running_var, good["4.running_var"])
    assert torch.equal(model[1].running_mean, moved) and not torch.equal(moved, good["1.running_mean"])
    assert guard.restore_buffers(model) == []


def test_a_second_roll_back_restores_the_optimizer_state_of_the_snapshot():
    """An optimizer's ``load_state_dict`` keeps the state tensors it is given: after one roll back its momentum
    buffers were the snapshot's own tensors, which the next steps changed, so a second roll back restored
    the weights but not the optimizer."""
    model, optimizer, step = _trained_by_sgd()
    guard = NonFiniteGuard()

    step()
    guard.take_snapshot(model=model, optimizer=optimizer)
    saved = copy.deepcopy(optimizer.state_dict()["state"])
    for _ in range(2):
        step()
        guard.roll_back(model=model, optimizer=optimizer)
        state = optimizer.state_dict()["state"]
        assert all(torch.equal(state[i]["momentum_buffer"], saved[i]["momentum_buffer"]) for i in saved)


def test_a_snapshot_is_written_into_the_last_ones_tensors_and_rolls_back_to_its_own_values():
    """Snapshots of the same structure reuse the last one's tensors (one copy, no new memory); each still holds
    the values of its own moment, not the live ones, and one of another structure (momentum buffers that did not
    exist yet) is a new copy."""
    model, optimizer, step = _trained_by_sgd()
    guard = NonFiniteGuard()

    guard.take_snapshot(model=model, optimizer=optimizer)  # no momentum yet
    first = guard.snapshot
    step()
    guard.take_snapshot(model=model, optimizer=optimizer)
    second = guard.snapshot
    assert second["model"]["0.weight"] is not first["model"]["0.weight"]  # another structure: a new copy
    step()
    guard.take_snapshot(model=model, optimizer=optimizer)
    third = guard.snapshot
    assert all(third["model"][k] is second["model"][k] for k in third["model"])  # written in place
    good = copy.deepcopy(third)
    assert all(torch.equal(good["model"][k], v) for k, v in model.state_dict().items())
    step()
    assert all(torch.equal(third["model"][k], v) for k, v in good["model"].items())  # not the live tensors
    assert any(not torch.equal(good["model"][k], v) for k, v in model.state_dict().items())
    guard.roll_back(model=model, optimizer=optimizer)
    assert all(torch.equal(good["model"][k], v) for k, v in model.state_dict().items())
    state = optimizer.state_dict()["state"]
    assert all(
        torch.equal(state[i]["momentum_buffer"], good["optimizer"]["state"][i]["momentum_buffer"]) for i in state
    )


def test_faults_that_come_back_after_max_rollbacks_stop_the_run():
    """Each roll back halves the learning rate; faults that survive them all are bad data or a diverging
    block, and halving on towards 0 would hide them: the run stops naming the last fault."""
    model = _model().train()
    guard = NonFiniteGuard(max_rollbacks=2)
    guard.take_snapshot(model=model)
    model[3].register_forward_hook(lambda module, inputs, output: output * math.nan)
    guard.locate(model, 7, lambda: model(torch.rand(2, 3, 16, 16)).mean())
    guard.roll_back(model=model)
    guard.roll_back(model=model)
    assert guard.rollbacks == 2 and guard.lr_multiplier == 0.25
    with pytest.raises(TrainingError, match=r"came back after 2 roll backs \(learning rate x0.25\).*step 7.*'3'"):
        guard.roll_back(model=model)
    unlimited = NonFiniteGuard(max_rollbacks=0)
    unlimited.take_snapshot(model=model)
    for _ in range(8):
        unlimited.roll_back(model=model)
    assert unlimited.rollbacks == 8


def test_a_resumed_guard_goes_on_counting_as_the_run_would_have():
    """Two bad steps in the window and one roll back before the save: after resuming, one more bad step rolls
    back (not three), and ``max_rollbacks`` counts the roll back before the save."""
    model = _model().train()
    guard = NonFiniteGuard(max_bad=3, window=20, max_rollbacks=2)
    guard.take_snapshot(model=model)
    guard.roll_back(model=model)
    assert not guard.record_bad_step(30) and not guard.record_bad_step(35)
    resumed = NonFiniteGuard(max_bad=3, window=20, max_rollbacks=2)
    resumed.load_state_dict(torch.load(_saved(guard.state_dict()), weights_only=True))
    assert (resumed.rollbacks, resumed.lr_multiplier, list(resumed.bad_steps)) == (1, 0.5, [30, 35])
    assert resumed.record_bad_step(40)
    resumed.take_snapshot(model=model)
    resumed.roll_back(model=model)
    with pytest.raises(TrainingError, match="after 2 roll backs"):
        resumed.roll_back(model=model)
    fresh = NonFiniteGuard()
    fresh.load_state_dict({"lr_multiplier": 0.25})  # a checkpoint from before the guard kept its own state
    assert (fresh.lr_multiplier, fresh.rollbacks, list(fresh.bad_steps)) == (0.25, 0, [])


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
