"""Training engine: exact resume after SIGKILL, NaN guard, parameter groups and schedule."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg
from yolotr.engine.optim import apply_schedule, build_optimizer, parameter_groups
from yolotr.engine.trainer import Trainer
from yolotr.models.detection import DetectionModel


def _final_weights(run_dir):
    checkpoint = torch.load(run_dir / "weights" / "last.pt", weights_only=True)
    return checkpoint["train_state"]["model"], checkpoint["state_dict"]


def test_resume_after_sigkill_gives_same_weights(tiny_shapes, tmp_path):
    # both sides at the killed run's 2 threads: another intra-op thread count sums in another order
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _kill_resume_and_compare(tiny_shapes, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _kill_resume_and_compare(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, save_period_steps=1)
    script = tmp_path / "killed_run.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads(2)
        from yolotr.engine.trainer import Trainer
        trainer = Trainer({cfg!r})
        def die(t):
            if t.step == 6:  # the middle of epoch 2 (4 batches per epoch)
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.add_callback("on_batch_start", die)
        trainer.train()
    """)
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run_dir = tmp_path / "run"
    interrupted = torch.load(run_dir / "weights" / "last.pt", weights_only=True)["train_state"]
    assert (interrupted["epoch"], interrupted["batch"]) == (1, 2)  # checkpointed after step 5, mid-epoch

    Trainer.resume(run_dir).train()
    resumed_raw, resumed_ema = _final_weights(run_dir)

    Trainer({**cfg, "name": "straight"}).train()
    straight_raw, straight_ema = _final_weights(tmp_path / "straight")
    for key, value in straight_raw.items():
        assert torch.equal(value, resumed_raw[key]), key
    for key, value in straight_ema.items():
        assert torch.equal(value, resumed_ema[key]), key
    # the resumed epoch's row: its loss over all its batches (was: only those after the resume), its time going on
    resumed_rows, straight_rows = (_rows(tmp_path / name / "results.csv") for name in ("run", "straight"))
    losses = [k for k in straight_rows[0] if k.startswith("train/")]
    assert [[r[k] for k in losses] for r in resumed_rows] == [[r[k] for k in losses] for r in straight_rows]
    assert float(resumed_rows[1]["time"]) > float(resumed_rows[0]["time"])


def _rows(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def test_parameter_groups_split_decay_and_transformer():
    model = DetectionModel("yolov5n-c3tr.yaml", nc=2)
    groups = {g["name"]: g for g in parameter_groups(model, 5e-4, 0.2)}
    assert set(groups) == {"decay", "no_decay", "bias", "decay/transformer", "bias/transformer"}
    assert groups["no_decay"]["weight_decay"] == 0 and groups["bias"]["weight_decay"] == 0
    assert groups["decay/transformer"]["lr_scale"] == 0.2
    attention = model.model[8].m.tr[0].ma.in_proj_weight
    assert any(p is attention for p in groups["decay/transformer"]["params"])
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_swin_v2_logit_scale_and_position_bias_mlp_are_not_decayed():
    """As the published Swin V2 (``no_weight_decay_keywords``: ``cpb_mlp``, ``logit_scale``) and timm: the
    attention's ``qkv`` and ``proj`` weights are decayed, the logit scale and the position-bias MLP are not."""
    model = DetectionModel("yolov5n-swinv2.yaml", nc=2)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in parameter_groups(model, 5e-4, 0.2)}
    attention = next(m for m in model.modules() if type(m).__name__ == "WindowAttentionV2")
    for name in ("logit_scale", "cpb_mlp.0.weight", "cpb_mlp.2.weight"):
        assert id(attention.get_parameter(name)) in groups["no_decay/transformer"], name
    for name in ("qkv.weight", "proj.weight"):
        assert id(attention.get_parameter(name)) in groups["decay/transformer"], name


def test_warmup_then_cosine_schedule():
    model = DetectionModel("yolov5n-c3tr.yaml", nc=2)
    optimizer = build_optimizer(model, "SGD", 0.01, 0.937, 5e-4, 0.2)
    cfg = dict(lr0=0.01, lrf=0.01, epochs=10, cos_lr=True, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    apply_schedule(optimizer, cfg, epoch=0, iteration=0, warmup_iters=100)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert by_name["bias"]["lr"] == pytest.approx(0.1) and by_name["decay"]["lr"] == 0.0
    assert by_name["decay"]["momentum"] == pytest.approx(0.8)
    apply_schedule(optimizer, cfg, epoch=5, iteration=500, warmup_iters=100)
    assert by_name["decay"]["lr"] == pytest.approx(0.01 * 0.505)
    assert by_name["decay/transformer"]["lr"] == pytest.approx(0.01 * 0.505 * 0.2)
    assert by_name["decay"]["momentum"] == pytest.approx(0.937)


def test_finetune_yolov4_from_published_layout(tiny_shapes, tmp_path):
    """A yolo4_weights.pth-layout file (80 classes) initialises a 3-class YOLOv4: all but the head load."""
    from yolotr.models.yolov4_import import yolov4_key_table

    source = DetectionModel("yolov4.yaml").state_dict()
    published = {e.published: source[e.ours].clone() for e in yolov4_key_table("full", nc=80)}
    path = tmp_path / "yolo4_weights.pth"
    torch.save(published, path)
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model="yolov4.yaml", weights=str(path), epochs=1, batch=8, nbs=8)
    trainer = Trainer(cfg)
    trainer.train()
    report = trainer.transfer_report
    assert len(report.mismatched) == 6 and not report.unexpected  # the three 1x1 head convs (weight, bias)
    assert len(report.loaded) == len(published) - 6 + 1  # + the anchors the converter adds
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_accumulation_rises_over_warmup_as_yolov5(tiny_shapes, tmp_path):
    """Batches per optimizer step grow from 1 to nbs / batch over the warmup (YOLOv5's
    ``np.interp(ni, [0, nw], [1, nbs / bs]).round()``); every epoch ends with a step."""
    import numpy as np

    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, batch=4, nbs=16, warmup_min_iters=8, mosaic=0.0)
    trainer = Trainer(cfg)
    stepped = []

    def count_steps(t):
        if t.step == 0:
            t.optimizer.register_step_post_hook(lambda *_: stepped.append(t.step))

    trainer.add_callback("on_batch_start", count_steps)
    trainer.train()
    nb, warmup = trainer.nb, trainer.warmup_iters
    assert (nb, warmup) == (4, 8)
    expected, last = [], -1
    for ni in range(3 * nb):
        accumulate = max(1, np.interp(ni, [0, warmup], [1, 16 / 4]).round()) if ni <= warmup else 4
        if ni - last >= accumulate or ni % nb == nb - 1:
            expected.append(ni)
            last = ni
    assert stepped == expected
    assert stepped[:2] == [0, 1]  # a fixed accumulation of 4 would first step at batch 3


def test_time_limit_shorter_than_a_batch_warns(tiny_shapes, tmp_path, caplog):
    logger = logging.getLogger("yolotr")
    logger.addHandler(caplog.handler)
    try:
        cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=5, time_limit=0.0001)  # 6 ms: seconds meant as minutes?
        Trainer(cfg).train()
    finally:
        logger.removeHandler(caplog.handler)
    assert any("shorter than one batch" in r.getMessage() and "in minutes" in r.getMessage() for r in caplog.records)
    rows = (tmp_path / "run" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + the one epoch already trained
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]
    assert state["cfg"]["epochs"] == 1 and state["epochs_fitted"]  # a resume keeps the fitted schedule


def test_the_checkpoint_holds_the_early_stopping_state_of_its_epoch(tiny_shapes, tmp_path):
    """last.pt was written before the stopper counted the epoch: a resume judged patience from the epoch before."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, val=True, patience=5)
    trainer = Trainer(cfg)
    trainer.train()
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]
    assert state["early_stop"] == trainer.stopper.state_dict()
    assert state["early_stop"]["best_fitness"] is not None and state["early_stop"]["best_epoch"] == 1


def test_last_pt_holds_the_ema_weights_once(tiny_shapes, tmp_path):
    """The exported weights are the EMA's: train_state's EMA holds the same tensors, so torch.save writes them once
    (they were written twice, a quarter of last.pt), and they are the EMA's values a resume loads."""
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1))
    trainer.train()
    last = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    ema = last["train_state"]["ema"]["state_dict"]
    assert ema.keys() == last["state_dict"].keys()
    assert all(
        ema[k].untyped_storage().data_ptr() == v.untyped_storage().data_ptr() for k, v in last["state_dict"].items()
    )
    assert all(torch.equal(ema[k], v) for k, v in trainer.ema.ema.state_dict().items())
    assert last["train_state"]["ema"]["updates"] == trainer.ema.updates > 0


def test_best_pt_holds_the_weights_and_settings_but_cannot_resume(tiny_shapes, tmp_path):
    """best.pt was a byte copy of last.pt, optimizer included: ``--resume best.pt`` went back to the best
    epoch, retrained over last.pt and wrote an epoch's results row twice."""
    from yolotr.errors import CheckpointError
    from yolotr.models.loading import load_model

    Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, val=True)).train()
    weights = tmp_path / "run" / "weights"
    best = torch.load(weights / "best.pt", weights_only=True)
    last = torch.load(weights / "last.pt", weights_only=True)
    assert "train_state" not in best and best["train_args"] == last["train_state"]["cfg"]
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
    model = load_model(weights / "best.pt")  # what val() and train() default to is still known
    assert (model.train_data, model.imgsz) == (str(tiny_shapes), 64)
    with pytest.raises(CheckpointError, match=r"best\.pt: not a resumable training checkpoint"):
        Trainer.resume(weights / "best.pt")


@pytest.mark.parametrize("channels_last", [True, False])
def test_training_memory_format_follows_the_setting(tiny_shapes, tmp_path, channels_last):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, channels_last=channels_last)
    seen = []
    trainer = Trainer(cfg)
    trainer.add_callback("on_batch_start", lambda t: seen.append(t.model.model[0].conv.weight))
    trainer.train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert seen and all(w.is_contiguous(memory_format=layout) for w in seen)
    assert trainer.ema.ema.model[0].conv.weight.is_contiguous(memory_format=layout)
    _, exported = _final_weights(tmp_path / "run")
    fresh = DetectionModel("yolov5n.yaml", nc=trainer.model.nc)  # contiguous: the saved layout does not matter
    fresh.load_state_dict({k: v.float() for k, v in exported.items()})
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = trainer.ema.ema.float().eval()(x)[0]
        assert torch.allclose(fresh.eval()(x)[0], expected, atol=1e-4, rtol=1e-4)


def test_lean_activations_train_like_the_plain_path(tiny_shapes, tmp_path):
    runs = {}
    for lean in (True, False):
        cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, lean_activations=lean, name=f"lean-{lean}")
        Trainer(cfg).train()
        runs[lean], _ = _final_weights(tmp_path / f"lean-{lean}")
    assert runs[True].keys() == runs[False].keys()
    for name, plain in runs[False].items():
        if plain.is_floating_point():
            torch.testing.assert_close(runs[True][name], plain, rtol=1e-3, atol=1e-4, msg=name)
        else:
            assert torch.equal(runs[True][name], plain), name  # num_batches_tracked


@pytest.mark.parametrize("grad_clip", [0.5, 0.0])
def test_gradients_reach_the_optimizer_clipped_to_grad_clip(tiny_shapes, tmp_path, grad_clip):
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, grad_clip=grad_clip))
    norms = []

    def record(optimizer, *_):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.nn.utils.get_total_norm(grads)))

    hooked = []
    trainer.add_callback(
        "on_batch_start", lambda t: hooked or hooked.append(t.optimizer.register_step_pre_hook(record))
    )
    trainer.train()
    assert norms
    if grad_clip:
        assert max(norms) <= grad_clip * (1 + 1e-4)
    else:  # unclipped, the norms of this tiny model's first steps are well above 0.5
        assert max(norms) > 0.5


def test_deterministic_mode_keeps_kernels_but_skips_the_nan_fill(tiny_shapes, tmp_path, monkeypatch):
    """``deterministic: true`` picks deterministic kernels but does not fill every new tensor with NaN
    (torch's default under deterministic mode; 13% of a CPU training step on a Xeon, 110k fill_ calls in 48 steps)."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    previous = torch.are_deterministic_algorithms_enabled()
    seen = []
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1))
    trainer.add_callback(
        "on_batch_start",
        lambda t: seen.append(
            (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
        ),
    )
    try:
        trainer.train()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert seen and all(state == (True, False) for state in seen)


def test_close_mosaic_reaches_the_loaders_workers(tiny_shapes, tmp_path):
    """The loader's persistent workers hold their own copy of the dataset: turning mosaic off in the main
    process changed nothing there, and the closed epochs still trained on mosaics. The first batch after
    the close is the dataset's own non-mosaic items (augmentation is seeded by seed, epoch and index)."""
    from yolotr.data.dataset import collate

    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=2, close_mosaic=1, mosaic=1.0, workers=1, batch=2, nbs=2)
    trainer = Trainer(cfg)
    seen = {}
    forward_loss = trainer._forward_loss

    def record(images, targets):
        if trainer.step == trainer.nb:  # the first batch of the closed epoch
            seen["targets"] = targets.clone()
        return forward_loss(images, targets)

    trainer._forward_loss = record
    trainer.train()
    assert trainer.loader.num_workers == 1 and not trainer.train_set.mosaic
    first = next(iter(trainer.sampler))  # the sampler is at the last epoch: its first batch
    expected = collate([trainer.train_set[item] for item in first])[1]
    assert torch.equal(seen["targets"], expected)


def test_a_crash_in_validation_resumes_into_that_epochs_validation_and_row(tiny_shapes, tmp_path, monkeypatch):
    """Killed after an epoch's last step but before its end (here: in validation), the resumed run validates
    that epoch and writes its results row: no step checkpoint is taken after the last batch, whose resume
    went straight to the next epoch (epochs 1 and 3 in results.csv, epoch 2 never validated)."""
    import csv

    cfg = tiny_train_cfg(tiny_shapes, tmp_path, save_period_steps=1, val=True, epochs=2)
    trainer = Trainer(cfg)
    validate = Trainer.validate
    monkeypatch.setattr(Trainer, "validate", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    state = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]
    assert state["epoch"] == 0 and 0 < state["batch"] < trainer.nb
    monkeypatch.setattr(Trainer, "validate", validate)
    Trainer.resume(tmp_path / "run").train()
    with open(tmp_path / "run" / "results.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [1, 2]
