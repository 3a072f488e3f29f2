"""DDP on CPU: two gloo processes train in lockstep and end with identical weights; with ``sync_bn``
they also end where one process with the whole global batch ends.

Without ``sync_bn`` BatchNorm running statistics are per process (as in YOLOv5), so only parameters
are compared across ranks there."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.engine.conftest import tiny_train_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ranks(cfg: dict, tmp_path, callbacks: str = "") -> list[subprocess.Popen]:
    """Start two gloo processes training ``cfg``; each saves its final state_dict to ``rank{r}.pt``.
    ``callbacks``: lines run after the trainer is made (``trainer``, ``sys.argv[1]`` the rank)."""
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        torch.set_num_threads(1)
        os.environ.update(RANK=sys.argv[1], LOCAL_RANK=sys.argv[1], WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT="{_free_port()}")
        from yolotr.engine.trainer import Trainer
        trainer = Trainer({cfg!r})
        {callbacks}
        trainer.train()
        torch.save(trainer.model.state_dict(), {str(tmp_path)!r} + f"/rank{{sys.argv[1]}}.pt")
    """)
    )
    return [
        subprocess.Popen(
            [sys.executable, str(script), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]


def _outputs(procs: list[subprocess.Popen], timeout: float, hung: str) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr) once all ended successfully; killed and failed with ``hung`` past
    ``timeout`` seconds."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(hung)
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


def _finish_ranks(procs: list[subprocess.Popen], tmp_path) -> tuple[dict, dict]:
    """Wait for both processes; their final state_dicts."""
    _outputs(procs, 240, "the ranks hung")
    return tuple(torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))


@pytest.mark.parametrize("model", ["yolov5n.yaml", "yolov8n.yaml"])
def test_two_gloo_ranks_hold_identical_weights(model, tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=model, epochs=1, batch=2, nbs=4)
    procs = _start_ranks(cfg, tmp_path)
    rank0, rank1 = _finish_ranks(procs, tmp_path)
    saved = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    for key, value in rank0.items():
        assert torch.equal(value, saved[key]), key
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, rank1[key]), key  # BatchNorm statistics stay per rank (no SyncBN)
    assert not (tmp_path / "run2").exists()  # rank 1 writes no run directory of its own


def test_a_stop_set_by_a_callback_on_the_first_rank_ends_both(tiny_shapes, tmp_path):
    """The package's ``trainer.stop = True`` from a callback of rank 0 only: both ranks end after that epoch (the
    other rank, left alone in the next epoch, would wait for rank 0 at its first all-reduce)."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=3, batch=2, nbs=4)
    stop = 'trainer.add_callback("on_fit_epoch_end", lambda t: setattr(t, "stop", sys.argv[1] == "0"))'
    procs = _start_ranks(cfg, tmp_path, stop)
    rank0, rank1 = _finish_ranks(procs, tmp_path)
    assert torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]["epoch"] == 1
    assert [k for k in rank0 if "running" not in k and not torch.equal(rank0[k], rank1[k])] == []


def _same_geometry_dataset(root):
    """8 train / 2 val images of 64 px whose boxes sit at the same places in every image (colours and
    classes vary), so with augmentation off every process matches the same number of targets: the
    YOLOv5 loss is a mean over matched targets, and only then is the mean over two half batches the
    mean over the whole batch."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    boxes = [(8, 10, 30, 40), (36, 20, 60, 50)]
    for split, count in (("train", 8), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = np.full((64, 64, 3), rng.integers(150, 220), np.uint8)
            lines = []
            for x1, y1, x2, y2 in boxes:
                image[y1:y2, x1:x2] = rng.integers(0, 120, 3)
                cls = int(rng.integers(0, 2))
                lines.append(f"{cls} {(x1 + x2) / 128} {(y1 + y2) / 128} {(x2 - x1) / 64} {(y2 - y1) / 64}\n")
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), image)
            (root / "labels" / split / f"{i}.txt").write_text("".join(lines))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return data


def test_two_gloo_ranks_with_sync_bn_equal_one_process_with_the_global_batch(tmp_path):
    from yolotr.engine.trainer import Trainer

    data = _same_geometry_dataset(tmp_path / "data")
    # contiguous memory: channels_last convolution kernels sum a batch of 2 + 2 in another order than one
    # of 4 (relative gradient differences ~7e-5, ~5e-3 in the weights after these steps), which would
    # hide the float-order bar below
    no_aug = dict(mosaic=0.0, fliplr=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0)
    no_aug.update(channels_last=False)
    ddp_cfg = tiny_train_cfg(data, tmp_path / "ddp", epochs=2, batch=2, nbs=4, sync_bn=True, **no_aug)
    procs = _start_ranks(ddp_cfg, tmp_path)
    single = Trainer(tiny_train_cfg(data, tmp_path / "single", epochs=2, batch=4, nbs=4, **no_aug))
    initial = {}
    single.add_callback("on_batch_start", lambda t: initial or initial.update(copy.deepcopy(t.model.state_dict())))
    single.train()
    rank0, rank1 = _finish_ranks(procs, tmp_path)
    reference = single.model.state_dict()
    worst_gap, worst_change = 0.0, 0.0
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key  # synchronized BatchNorm: even running statistics agree
        if value.is_floating_point():
            worst_gap = max(worst_gap, (value - reference[key]).abs().max().item())
            worst_change = max(worst_change, (reference[key] - initial[key]).abs().max().item())
    assert worst_change > 1e-2  # training moved the weights ...
    # ... and two processes moved them as one process with the whole batch does: without sync_bn the
    # gap is ~6e-2; float summation order alone (one process, 1 vs 2 threads) leaves ~1e-4
    assert worst_gap < 3e-4
    # results.csv's losses are the global batches', not rank 0's half (3 % off here before, 37 % with mosaic)
    ddp_rows, single_rows = (_rows(tmp_path / side / "run" / "results.csv") for side in ("ddp", "single"))
    for ddp_row, single_row in zip(ddp_rows, single_rows, strict=True):
        for key in (k for k in single_row if k.startswith("train/")):
            assert float(ddp_row[key]) == pytest.approx(float(single_row[key]), rel=1e-2), key


def _rows(path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_fault_on_one_rank_is_located_on_both_without_a_hang(tmp_path):
    """A NaN in rank 1's head only: the averaged gradients are NaN on both ranks, so both skip the step and
    locate the fault; rank 0's re-run loss is finite, rank 1's is not. With sync_bn a backward on rank 0
    alone would wait for rank 1 in SyncBatchNorm's backward (or pair its all-reduces with rank 1's next
    forward): the ranks agree to run it on none."""
    data = _same_geometry_dataset(tmp_path / "data")
    cfg = tiny_train_cfg(data, tmp_path / "ddp", epochs=2, batch=2, nbs=4, sync_bn=True, mosaic=0.0)
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        torch.set_num_threads(1)
        rank = sys.argv[1]
        os.environ.update(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT="{_free_port()}")
        from yolotr.engine.trainer import Trainer

        def inject(t):
            if t.step == 1 and rank == "1":
                head = t.model.model[-1]  # after the last BatchNorm: rank 0's own forward stays finite
                t.nan = head.register_forward_hook(lambda m, i, out: [o * float("nan") for o in out])
            elif t.step == 2 and getattr(t, "nan", None) is not None:
                t.nan.remove()

        trainer = Trainer({cfg!r})
        trainer.add_callback("on_batch_start", inject)
        trainer.train()
        print("reports", [(r.step, r.module, r.kind) for r in trainer.guard.reports])
        torch.save(trainer.model.state_dict(), {str(tmp_path)!r} + f"/rank{{rank}}.pt")
    """)
    )
    procs = [
        subprocess.Popen([sys.executable, str(script), r], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in ("0", "1")
    ]
    outputs = _outputs(procs, 150, "the ranks hung after the fault")
    reports = [out.split("reports", 1)[1].strip() for out, _ in outputs]
    assert reports[1] == "[(1, 'model.24', 'output')]"  # rank 1 names the module that made the NaN
    assert reports[0].startswith("[(1, ")  # rank 0 skipped and reported the same step
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert [k for k, v in rank0.items() if not torch.equal(v, rank1[k])] == []
