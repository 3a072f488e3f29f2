"""``multi_scale``: each training batch at a random size around imgsz, as the ultralytics package's multi_scale and
YOLOv5's --multi-scale, drawn per (seed, step) so that resume, DDP and the guard's re-run see the step's own size."""

from __future__ import annotations

import math
import types

import pytest
import torch

from tests.engine.conftest import assert_same_weights, resumed_and_straight, tiny_train_cfg
from yolotr.engine.config import resolve_config
from yolotr.engine.multi_scale import resize_batch, step_size
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError


@pytest.mark.parametrize(
    ("imgsz", "fraction", "stride"), [(640, 0.5, 32), (320, 0.25, 32), (64, 0.5, 32), (96, 0.9, 32)]
)
def test_the_sizes_are_the_packages_range_each_step_its_own(imgsz, fraction, stride):
    """Every size the package's ``randrange(max(stride, int(imgsz (1 - m))), int(imgsz (1 + m) + stride)) // stride
    * stride`` can give, and no other, drawn again alike for the same (seed, step)."""
    low, high = max(stride, int(imgsz * (1 - fraction))), int(imgsz * (1 + fraction) + stride)
    possible = {max(v // stride * stride, stride) for v in range(low, high)}
    sizes = [step_size(0, step, imgsz, fraction, stride) for step in range(3000)]
    assert set(sizes) == possible
    assert sizes[:50] == [step_size(0, step, imgsz, fraction, stride) for step in range(50)]
    assert sizes[:50] != [step_size(1, step, imgsz, fraction, stride) for step in range(50)]


def test_the_resized_batch_is_the_packages(monkeypatch):
    """For the same size, the package's ``DetectionTrainer.preprocess_batch`` gives this batch (its shape rounded up to
    the stride on each side, bilinear)."""
    reason = "the ultralytics package is a bench extra"
    train = pytest.importorskip("ultralytics.models.yolo.detect.train", reason=reason)
    torch.manual_seed(0)
    for shape, size in (((2, 3, 64, 64), 96), ((2, 3, 64, 96), 64), ((1, 3, 128, 128), 128), ((2, 3, 96, 64), 160)):
        images = torch.randint(0, 256, shape, dtype=torch.uint8)
        monkeypatch.setattr(train.random, "randrange", lambda low, high, size=size: size)
        args = types.SimpleNamespace(multi_scale=0.5, imgsz=96)
        trainer = types.SimpleNamespace(args=args, stride=32, device=torch.device("cpu"))
        theirs = train.DetectionTrainer.preprocess_batch(trainer, {"img": images.clone()})["img"]
        ours = resize_batch(images.float() / 255, size, 32)
        assert ours.shape == theirs.shape and all(side % 32 == 0 for side in ours.shape[2:])
        assert max(ours.shape[2:]) == 32 * math.ceil(size / 32)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_multi_scale_is_refused_outside_0_1_and_true_is_yolov5s():
    assert resolve_config({"multi_scale": True})["multi_scale"] == 0.5
    assert resolve_config({"multi_scale": "0.25"})["multi_scale"] == 0.25
    assert resolve_config({})["multi_scale"] == 0.0
    for value in (1.0, -0.1, "wide"):
        with pytest.raises(ConfigError, match="'multi_scale'"):
            resolve_config({"multi_scale": value})


def test_each_step_trains_at_its_size_and_the_guards_rerun_sees_it(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, multi_scale=0.5, epochs=2)
    trainer = Trainer(cfg)
    shapes, reruns = [], []
    forward_loss = trainer._forward_loss

    def record(images, targets):
        if trainer.step == 5 and not reruns:  # the guard's re-run of this step from its uint8 batch: the same loss
            raw, raw_targets = trainer._window[-1]
            trainer._forward_loss = forward_loss
            reruns.append(trainer._loss_of(raw, raw_targets, trainer.step).detach())
            trainer._forward_loss = record
            loss, items = forward_loss(images, targets)
            reruns.append(loss.detach())
            shapes.append((trainer.step, tuple(images.shape[2:])))
            return loss, items
        shapes.append((trainer.step, tuple(images.shape[2:])))
        return forward_loss(images, targets)

    trainer._forward_loss = record
    trainer.train()
    assert len(shapes) == 2 * trainer.nb
    for step, (h, w) in shapes:
        size = step_size(trainer.cfg["seed"], step, 64, 0.5, 32)
        assert h == w == size, (step, h, w)
    assert len({h for _, (h, _) in shapes}) > 1
    torch.testing.assert_close(reruns[0], reruns[1])


def test_a_resumed_multi_scale_run_equals_a_straight_one(tiny_shapes, tmp_path):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, multi_scale=0.5, save_period_steps=1)
    resumed, straight = resumed_and_straight(cfg, at_step=5)
    assert_same_weights(resumed, straight)


def test_a_batch_of_one_is_never_cut_to_one_stride(tmp_path):
    """16 images in batches of 5 end each epoch with a batch of one; at 32 px its last feature map was 1 x 1 and
    BatchNorm refused to train on one value per channel (a ValueError from inside torch)."""
    from yolotr.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "shapes", n_train=16, n_val=4, imgsz=64, seed=3)
    cfg = tiny_train_cfg(data, tmp_path, multi_scale=0.9, batch=5, nbs=5, epochs=3, autoanchor=False)
    trainer = Trainer(cfg)
    seen = []
    forward_loss = trainer._forward_loss

    def record(images, targets):
        seen.append((trainer.step, tuple(images.shape)))
        return forward_loss(images, targets)

    trainer._forward_loss = record
    trainer.train()
    ones = [(step, shape) for step, shape in seen if shape[0] == 1]
    assert len(ones) == 3 and all(shape[2] >= 64 for _, shape in ones)
    small = [step for step in range(12) if step_size(trainer.cfg["seed"], step, 64, 0.9, 32) == 32]
    assert any(seen[step][1][0] == 5 and seen[step][1][2] == 32 for step in small)  # larger batches keep the size
