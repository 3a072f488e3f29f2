"""A tiny built-in dataset for engine tests (16 train / 8 val shapes images at 64 px)."""

from __future__ import annotations

import pytest

from yolotr.data.synthetic import make_shapes_dataset


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
    )
    cfg.update(extra)
    return cfg
