"""``validate`` without a loss runs a fused ``channels_last`` copy of the model (as YOLOv5's ``val.py`` and the
``ultralytics`` validator fuse): the metrics are those of the unfused model, and the caller's model is untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from yolotr.data.sources import load_records
from yolotr.engine.validator import Validator, build_val_dataloader, inference_copy, validate
from yolotr.models.loading import load_model

BEAR = 21  # the COCO class yolov5n.pt most often gives a raccoon


@pytest.fixture(scope="module")
def raccoon_as_bears():
    """yolov5n.pt and a loader of 16 raccoon val photos at 256 px whose boxes are labelled COCO ``bear``."""
    root = shared_path("data", "raccoon")
    data = {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["raccoon"], "format": "voc"}
    records, _ = load_records(data, "val", cache=False)
    records = [dataclasses.replace(r, classes=np.full_like(r.classes, BEAR)) for r in records[:16]]
    loader = build_val_dataloader(records, imgsz=256, batch_size=8, stride=32, workers=0)
    model = load_model(shared_path("weights", "yolov5n.pt"))
    return model, loader, [str(i) for i in range(80)]


def test_fused_validation_gives_the_unfused_metrics(raccoon_as_bears):
    torch.set_num_threads(2)
    model, loader, names = raccoon_as_bears
    unfused = Validator(loader, names, progress=False)(model)  # the model itself, BatchNorm and all
    calls = []
    hook = model.register_forward_hook(lambda module, *_: calls.append(module))  # deep-copied too
    try:
        fused = validate(model, dataloader=loader, names=names, verbose=False, log_table=False)
    finally:
        hook.remove()
    assert calls and all(m is not model for m in calls)  # the fused copy ran, not the model
    assert unfused.map50 > 0.3  # a real detector on real photos, not an all-zero comparison
    for key in ("map50", "map50_95", "precision", "recall"):
        assert getattr(fused, key) == pytest.approx(getattr(unfused, key), abs=1e-4), key


def test_inference_copy_leaves_the_model_and_keeps_its_output(raccoon_as_bears):
    model, _, _ = raccoon_as_bears
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = inference_copy(model)
    assert model.training and not copy.training
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    x = torch.rand(2, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(copy(x)[0], model(x)[0], rtol=1e-4, atol=1e-3)  # (B, N, 85) decoded
    model.train()
