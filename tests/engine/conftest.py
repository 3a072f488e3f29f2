"""A tiny built-in dataset for engine tests (16 train / 8 val shapes images at 64 px)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.trainer import Trainer


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "tiny", n_train=16, n_val=8, imgsz=64, seed=3)


def tiny_train_cfg(data, project, **extra) -> dict:
    cfg = dict(
        model="yolov5n.yaml",
        data=str(data),
        epochs=2,
        imgsz=64,
        batch=4,
        nbs=4,
        workers=0,
        val=False,
        warmup_min_iters=2,
        warmup_epochs=0.5,
        project=str(project),
        name="run",
        mosaic=0.5,
        plots=False,  # results.png costs 0.4-0.7 s a run; test_ultralytics_day_one draws it
    )
    cfg.update(extra)
    return cfg


class Crash(RuntimeError):
    """The "power cut" a resume test's callback raises."""


def resumed_and_straight(cfg: dict, at_step: int) -> tuple[dict, dict]:
    """Train ``cfg`` until a crash at the start of step ``at_step`` (``save_period_steps=1`` keeps every step),
    resume the run to its end, then train ``cfg`` again without a stop under the name ``straight``: the two
    ``weights/last.pt`` checkpoints, ``(resumed, straight)``."""
    trainer = Trainer(cfg)

    def crash(t):
        if t.step == at_step:
            raise Crash("power cut")

    trainer.add_callback("on_batch_start", crash)
    with pytest.raises(Crash):
        trainer.train()
    project = Path(cfg["project"])
    Trainer.resume(project / cfg["name"]).train()
    Trainer({**cfg, "name": "straight"}).train()
    return tuple(torch.load(project / n / "weights" / "last.pt", weights_only=True) for n in (cfg["name"], "straight"))


def assert_same_weights(resumed: dict, straight: dict) -> None:
    """The raw model (``train_state``) and EMA (``state_dict``) weights of two checkpoints are bitwise equal."""
    for key, value in straight["train_state"]["model"].items():
        assert torch.equal(value, resumed["train_state"]["model"][key]), key
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
