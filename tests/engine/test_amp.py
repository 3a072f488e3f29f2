"""fp16 loss scaling that the NaN guard understands, on the CPU: GradScaler's calibration overflows are
skipped silently and counted; genuine faults still reach the guard; a step makes no host synchronisation
outside the logging interval beyond the scaler's own."""

from __future__ import annotations

import csv
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from tests.device_syncs import DeviceSyncs
from tests.engine.conftest import tiny_train_cfg
from yolotr.engine.amp import SCALE_FLOOR, check_amp, resolve_amp
from yolotr.engine.config import resolve_config
from yolotr.engine.optim import apply_schedule
from yolotr.engine.progress import LOG_EVERY
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError
from yolotr.ops.loss import build_loss

CPU = torch.device("cpu")


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _guard_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "yolotr" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("value", "mode"), [("auto", "off"), (True, "bf16"), ("fp16", "fp16"), ("bf16", "bf16"), (False, "off"),
                        ("false", "off"), ("off", "off"), ("FP16", "fp16")]
)  # fmt: skip
def test_amp_setting_means_the_same_on_every_device(value, mode):
    policy = resolve_amp(value, CPU)
    assert policy.mode == mode
    assert policy.scaled == (mode == "fp16")
    assert resolve_config({"amp": value})["amp"] == check_amp(value)


@pytest.mark.parametrize("value", ["fp32", "float8", 1, "yes please"])
def test_an_unknown_amp_value_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"setting 'amp' must be one of auto, fp16, bf16, false"):
        resolve_config({"amp": value})


def test_auto_amp_is_fp16_with_loss_scaling_on_cuda():
    policy = resolve_amp("auto", torch.device("cuda"))
    assert policy.dtype == torch.float16 and policy.scaled
    assert resolve_amp(True, torch.device("cuda")).mode == "fp16"


@pytest.mark.parametrize("model", ["yolov8n.yaml", "yolov5n-swinv2.yaml"])
def test_fp16_training_calibrates_the_scale_without_the_guard(tiny_shapes, tmp_path, caplog, model):
    """Two epochs in fp16 on the CPU: the calibration overflows happen (the scale falls from 65536), are
    counted in results.csv and never reach the guard: no warning, no roll back, the lr on its schedule."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=model, amp="fp16")
    trainer = Trainer(cfg)
    with caplog.at_level(logging.DEBUG, logger="yolotr"):
        result = trainer.train()
    assert trainer.amp.dtype == torch.float16 and trainer.gate.scaled
    assert not result["nan_reports"] and trainer.guard.rollbacks == 0 and trainer.guard.lr_multiplier == 1.0
    assert not _guard_warnings(caplog), _guard_warnings(caplog)
    rows = _rows(tmp_path / "run")
    overflows = sum(int(r["amp/overflow_steps"]) for r in rows)
    assert overflows == trainer.gate.overflows >= 1  # the CPU reproduces the GPU's calibration
    assert float(rows[-1]["amp/loss_scale"]) == 65536.0 / 2**overflows
    assert sum("GradScaler skipped the step" in r.getMessage() for r in caplog.records) == overflows
    assert all(math.isfinite(float(r["train/box_loss"])) for r in rows)
    expected = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    apply_schedule(trainer.optimizer, trainer.cfg, trainer.cfg["epochs"] - 1, trainer.step, trainer.warmup_iters)
    assert {g["name"]: g["lr"] for g in trainer.optimizer.param_groups} == pytest.approx(expected)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_persistent_nan_gradient_reaches_the_guard_at_the_scale_floor(tiny_shapes, tmp_path):
    """A NaN born in the backward pass (the loss stays finite) is an overflow while the scale can fall, and
    a fault for the guard once it has reached the floor."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, amp="fp16", amp_init_scale=4.0, epochs=1, nan_max_bad_steps=1)
    trainer = Trainer(cfg)
    scales = []

    def poison(t):
        if t.step == 1 and not hasattr(t, "_poison"):
            weight = t.model.model[0].conv.weight
            t._poison = weight.register_hook(lambda g: g * math.nan if trainer.step in (1, 2, 3) else g)
        scales.append(t.gate.get_scale())

    trainer.add_callback("on_batch_start", poison)
    result = trainer.train()
    assert scales[:4] == [4.0, 4.0, 2.0, 1.0]  # halved at steps 1 and 2 (overflows), at the floor at step 3
    assert trainer.gate.overflows == 2
    assert len(result["nan_reports"]) == 1 and "step 3" in result["nan_reports"][0]
    assert trainer.guard.rollbacks == 1
    assert SCALE_FLOOR == 1.0


@pytest.mark.parametrize(("amp", "bad"), [("false", math.inf), ("fp16", math.nan)])
def test_injected_nan_is_located_and_rolled_back(tiny_shapes, tmp_path, amp, bad):
    """A NaN in one Swin block's output makes the loss non-finite: the guard names the block and rolls back,
    in fp16 as in fp32 (an overflow is never the explanation for a non-finite loss)."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolov5n-swinv2.yaml", epochs=3, nan_max_bad_steps=2, amp=amp)
    trainer = Trainer(cfg)
    target = "model.8.m.blocks.0"

    def inject(t):
        if t.step == 7 and not hasattr(t, "_fault"):

            def hook(module, inputs, output):
                return output.clone().fill_(bad) if trainer.step in (7, 8) else output

            t._fault = t.model.get_submodule(target).register_forward_hook(hook)

    trainer.add_callback("on_batch_start", inject)
    result = trainer.train()
    assert len(result["nan_reports"]) == 2
    assert all(f"module '{target}'" in r for r in result["nan_reports"])
    assert "step 7" in result["nan_reports"][0] and "step 8" in result["nan_reports"][1]
    assert trainer.guard.rollbacks == 1 and trainer.guard.lr_multiplier == 0.5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    saved = torch.load(trainer.weights_dir / "last.pt", weights_only=True)["train_state"]["guard"]
    assert saved["rollbacks"] == 1 and saved["lr_multiplier"] == 0.5  # a resume goes on from them


def test_one_fault_leaves_no_nan_in_the_batchnorm_statistics(tiny_shapes, tmp_path):
    """A single NaN forward (no roll back) folded NaN into the running statistics of every BatchNorm after it;
    skipping the step left them there, so the model and, from its next update, the EMA predicted NaN. The
    guard puts them back from its snapshot, and validation after the fault still finds boxes."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolov5n.yaml", epochs=2, val=True, mosaic=0.0)
    trainer = Trainer(cfg)

    def inject(t):
        if t.step == 3:
            t._fault = t.model.model[1].register_forward_hook(lambda module, inputs, output: output * math.nan)
        elif t.step == 4:
            t._fault.remove()

    trainer.add_callback("on_batch_start", inject)
    result = trainer.train()
    assert len(result["nan_reports"]) == 1 and "step 3" in result["nan_reports"][0]
    assert trainer.guard.rollbacks == 0
    for model in (trainer.model, trainer.ema.ema):
        spoiled = [n for n, b in model.named_buffers() if b.is_floating_point() and not torch.isfinite(b).all()]
        assert spoiled == []
    running = dict(trainer.model.named_buffers())["model.2.cv1.bn.running_var"]
    assert not torch.equal(running, torch.ones_like(running))  # statistics kept moving after the fault


HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostReads:
    """Counts calls that bring a tensor's value to the host, made from yolotr's own code, per training step."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.by_step: dict[int, list[str]] = defaultdict(list)
        self.saved = {}
        self.package = str(Path(sys.modules["yolotr"].__file__).parent)

    def __enter__(self):
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            self.saved[name] = original

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                caller = sys._getframe(1).f_code.co_filename
                if caller.startswith(self.package):
                    self.by_step[self.trainer.step].append(f"{_name} in {Path(caller).name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("model", ["yolov5n.yaml"])
def test_a_training_step_reads_nothing_on_the_host_outside_logging(tiny_shapes, tmp_path, model):
    """Between logging intervals a step makes one host read, whether it runs (the gate's test of the gradient
    norm; with loss scaling GradScaler's own read in ``step``): losses and the progress bar stay on the device."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=model, epochs=1, batch=2, nbs=2, mosaic=0.0)
    trainer = Trainer(cfg)
    reads = HostReads(trainer)
    trainer.add_callback("on_batch_start", lambda t: reads.__enter__() if t.step == 1 else None)
    try:
        trainer.train()
    finally:
        reads.__exit__()
    assert trainer.nb == 8 > LOG_EVERY // 2
    quiet = [s for s in range(1, trainer.nb - 1) if s % LOG_EVERY != 0]
    gate_read = "item in amp.py"
    # the loss's check of the targets reads them where the trainer keeps them, on the host (no device wait)
    expected = [["tolist in targets.py", gate_read], [gate_read]]
    assert {s: reads.by_step[s] for s in quiet if reads.by_step[s] not in expected} == {}
    assert reads.by_step[trainer.nb - 1]  # the epoch's end reads the loss: the counter sees host reads


ACCELERATOR_STEP_CASES = [("yolov5n.yaml", "SGD"), ("yolov8n.yaml", "SGD"), ("yolo26n.yaml", "MuSGD")]


@pytest.mark.parametrize(("model", "optimizer"), ACCELERATOR_STEP_CASES)
def test_a_step_with_the_accelerators_losses_synchronises_once(tiny_shapes, tmp_path, model, optimizer):
    """With the losses an accelerator trains with (``dense``: targets matched without host reads), a step
    outside the logging interval makes one op that would wait for the device, anywhere in the step (loss,
    assigner, optimizer, EMA, guard, torch's own code): the gate's test of the gradient norm. (Copies to the
    host, ``.cpu()`` / ``.tolist()``, are no ops on the CPU: the test above counts those in yolotr's code.)"""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=model, epochs=1, batch=2, nbs=2, mosaic=0.0, optimizer=optimizer)
    trainer = Trainer(cfg)
    by_step: dict[int, list[str]] = defaultdict(list)
    counter = DeviceSyncs(on_read=lambda name: by_step[trainer.step].append(name))

    def from_step_one(t: Trainer) -> None:
        if t.step == 1:
            t.loss_fn = build_loss(t.model, t.cfg, t.cfg["imgsz"], dense=True)
            counter.__enter__()

    trainer.add_callback("on_batch_start", from_step_one)
    try:
        trainer.train()
    finally:
        counter.__exit__(None, None, None)
    quiet = [s for s in range(1, trainer.nb - 1) if s % LOG_EVERY != 0]
    assert len(quiet) >= 5
    assert {s: by_step[s] for s in quiet if by_step[s] != ["aten._local_scalar_dense.default"]} == {}


@pytest.mark.parametrize("amp", ["false", "bf16"])
def test_a_gradient_fault_in_an_accumulated_batch_is_located_at_its_step(tiny_shapes, tmp_path, amp):
    """With accumulation the guard re-ran only the window's last batch: a NaN gradient from an earlier batch
    (a data-dependent fault, the default case: batch 16 of nbs 64) read "no single module (unknown)" at the
    window's last step. Each batch of the window is re-run until one shows it; the report names its step."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, nbs=16, warmup_epochs=0, warmup_min_iters=0, amp=amp)
    trainer = Trainer(cfg)  # 16 images in batches of 4: one optimizer step over steps 0-3
    target, bad = "model.8", {}

    def mark(module, inputs):  # the batch of step 1 is the bad one, whenever it runs (training or re-run)
        total = float(inputs[0].double().sum())
        if trainer.step == 1 and "sum" not in bad:
            bad["sum"] = total
        bad["now"] = "sum" in bad and math.isclose(total, bad["sum"], rel_tol=1e-9)

    def poison(module, inputs, output):
        if bad.get("now") and output.requires_grad:
            output.register_hook(lambda grad: torch.full_like(grad, math.nan))

    def install(t):
        if t.step == 0 and "hooks" not in bad:
            first, block = t.model.model[0], t.model.get_submodule(target)
            bad["hooks"] = (first.register_forward_pre_hook(mark), block.register_forward_hook(poison))

    trainer.add_callback("on_batch_start", install)
    result = trainer.train()
    assert trainer.accumulate == 4 and len(result["nan_reports"]) == 1
    assert result["nan_reports"][0].startswith(
        f"non-finite value at step 1: first seen in module '{target}' (gradient)"
    )
