"""DDP on CPU: two gloo processes train in lockstep and end with identical weights.

BatchNorm running statistics are per process unless ``sync_bn`` is on (as in YOLOv5), so only
parameters are compared across ranks."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import torch

from tests.engine.conftest import tiny_train_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_hold_identical_weights(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, batch=2, nbs=4)
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch
        torch.set_num_threads(1)
        os.environ.update(RANK=sys.argv[1], LOCAL_RANK=sys.argv[1], WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT="{_free_port()}")
        from yolotr.engine.trainer import Trainer
        trainer = Trainer({cfg!r})
        trainer.train()
        torch.save(trainer.model.state_dict(), {str(tmp_path)!r} + f"/rank{{sys.argv[1]}}.pt")
    """)
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    for key, value in rank0.items():
        assert torch.equal(value, saved[key]), key
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, rank1[key]), key  # BatchNorm statistics stay per rank (no SyncBN)
    assert not (tmp_path / "run2").exists()  # rank 1 writes no run directory of its own
