"""AutoAnchor: the recall metric, refitting bad anchors, keeping good ones, placeholders, checkpoints, the CLI flag."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import shared_path
from tests.engine.conftest import tiny_train_cfg
from yolotr.cli import main as cli_main
from yolotr.data.sources import ImageRecord, load_dataset_config, load_records
from yolotr.engine.autoanchor import (
    BPR_GOOD,
    _kmeans_numpy,
    anchor_fit,
    check_anchors,
    fit_anchors,
    head_anchors_pixels,
    label_sizes,
)
from yolotr.engine.trainer import Trainer
from yolotr.models.detection import load_model_yaml
from yolotr.models.loading import load_model
from yolotr.nn.head import Detect

BAD_ANCHORS = [[300, 310, 320, 330, 340, 350], [400, 410, 420, 430, 440, 450], [500, 510, 520, 530, 540, 550]]


def make_head(anchors_px, strides) -> Detect:
    """A Detect head as DetectionModel leaves it: strides measured, anchors in grid units."""
    head = Detect(1, anchors_px, ch=(8,) * len(anchors_px))
    head.stride.copy_(torch.tensor(strides, dtype=torch.float32))
    head.anchors /= head.stride.view(-1, 1, 1)
    return head


def square_records(sides, imgsz=640) -> list[ImageRecord]:
    """One ``imgsz`` square image per box side, the box at the top-left corner."""
    return [ImageRecord(f"{i}.jpg", imgsz, imgsz, [[0, 0, s, s]]) for i, s in enumerate(sides)]


def test_anchor_fit_counts_anchors_within_anchor_t_on_both_sides():
    anchors = np.array([[10.0, 10.0], [100.0, 100.0]])
    wh = np.array(
        [
            [10, 10],  # the small anchor only (1 / 10 of the big one)
            [30, 30],  # both: 3x the small, 0.3x the big
            [50, 5],  # none: the width is 5x the small, the height 1/20 of the big
            [40, 40],  # the big only: exactly 4x the small is not within 4 (the loss uses <)
            [200, 200],  # the big only
        ],
        dtype=np.float64,
    )
    aat, bpr = anchor_fit(anchors, wh, anchor_t=4.0)
    assert aat == pytest.approx((1 + 2 + 0 + 1 + 1) / 5)
    assert bpr == pytest.approx(4 / 5)
    assert anchor_fit(anchors, wh, anchor_t=6.0)[1] == pytest.approx(5 / 5)  # 50 / 10 = 5 < 6


def test_label_sizes_follow_the_letterbox_scale():
    records = [ImageRecord("a.jpg", 100, 200, [[0, 0, 20, 10]]), ImageRecord("b.jpg", 50, 50, np.zeros((0, 4)))]
    np.testing.assert_allclose(label_sizes(records, 400), [[40.0, 20.0]])  # longer side 200 -> 400


def test_numpy_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centres])
    found = _kmeans_numpy(x, 3, np.random.default_rng(1))
    distance = np.linalg.norm(found[:, None] - centres[None], axis=2)  # (found, true)
    assert sorted(distance.argmin(1).tolist()) == [0, 1, 2]  # one found centre per cluster
    assert distance.min(1).max() < 0.1


@pytest.mark.parametrize("strides", [(8, 16, 32), (32, 16, 8)], ids=["ascending", "descending"])
def test_bad_anchors_are_refit_smallest_on_the_finest_stride(strides, caplog):
    rng = np.random.default_rng(0)
    records = square_records(np.exp(rng.uniform(np.log(8), np.log(300), 300)))
    head = make_head(BAD_ANCHORS if strides[0] == 8 else BAD_ANCHORS[::-1], strides)
    with caplog.at_level(logging.INFO, logger="yolotr"):
        result = check_anchors(head, records, 640, anchor_t=4.0, seed=0, generations=300)
    assert result.bpr < 0.5 and result.replaced
    assert result.new_bpr >= BPR_GOOD
    assert "recomputed: BPR" in result.message()
    pixels = head_anchors_pixels(head)
    assert (pixels > 0).all()
    area = pixels.prod(-1).mean(-1)  # per head
    order = np.argsort(strides)
    assert (np.diff(area[order]) > 0).all()  # mean anchor area grows with the stride
    _, bpr = anchor_fit(pixels.reshape(-1, 2), label_sizes(records, 640), 4.0)
    assert bpr >= BPR_GOOD  # what the head now holds, measured again
    # same seed, same anchors
    again = make_head(BAD_ANCHORS if strides[0] == 8 else BAD_ANCHORS[::-1], strides)
    check_anchors(again, records, 640, anchor_t=4.0, seed=0, generations=300)
    assert torch.equal(again.anchors, head.anchors)


def test_good_anchors_are_left_alone():
    rng = np.random.default_rng(1)
    records = square_records(np.exp(rng.uniform(np.log(10), np.log(200), 200)))
    head = make_head([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]], (8, 16, 32))
    before = head.anchors.clone()
    result = check_anchors(head, records, 640, anchor_t=4.0, seed=0)
    assert result.bpr >= BPR_GOOD and not result.replaced and result.new_bpr is None
    assert result.message().endswith("current anchors are a good fit")
    assert torch.equal(head.anchors, before)


def test_a_recall_of_exactly_the_threshold_is_refit_as_yolov5_does():
    """YOLOv5 keeps anchors only when ``bpr > 0.98``; 49 of 50 labels recallable is a refit there, and here."""
    sides = [20.0] * 49 + [300.0]  # 300 px is more than anchor_t = 4 times every anchor below
    head = make_head([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 70]], (8, 16))
    result = check_anchors(head, square_records(sides), 640, anchor_t=4.0, seed=0, generations=50)
    assert result.bpr == pytest.approx(BPR_GOOD)
    assert result.new_bpr is not None and result.new_bpr == 1.0 and result.replaced


def test_kmeans_anchors_of_tiny_labels_are_not_clipped_before_the_evolution():
    """Labels of 2-3 px: k-means' anchors start below 2 px, as in YOLOv5, and an evolution that finds nothing
    better keeps them; clipping them to 2 px first lost recall (YOLOv5's fitness 0.85 against 0.805)."""
    rng = np.random.default_rng(0)
    wh = rng.uniform(1.0, 3.0, (300, 2))
    k = fit_anchors(wh, 9, generations=0, rng=np.random.default_rng(0))
    assert (k < 2.0).any()


def test_placeholder_anchors_are_always_replaced():
    records = square_records([12, 14, 40, 44, 120, 130] * 5)
    head = make_head([list(range(6))] * 3, (8, 16, 32))  # what 'anchors: 3' builds
    result = check_anchors(head, records, 640, seed=0, generations=100)
    assert result.placeholder and result.replaced and result.new_bpr == 1.0
    assert (head_anchors_pixels(head) >= 2.0).all()


def test_fit_anchors_is_sorted_by_area_and_survives_few_distinct_labels():
    k = fit_anchors(np.array([[20.0, 20.0]] * 4), 9, generations=50, rng=np.random.default_rng(0))
    assert k.shape == (9, 2) and (np.diff(k.prod(1)) >= 0).all()
    assert anchor_fit(k, np.array([[20.0, 20.0]]), 4.0)[1] == 1.0


def _bad_yaml(tmp_path):
    cfg = load_model_yaml("yolov5n.yaml")
    cfg["anchors"] = BAD_ANCHORS
    path = tmp_path / "bad-anchors.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _saved_anchors(path):
    checkpoint = torch.load(path, weights_only=True)
    (key,) = [k for k in checkpoint["state_dict"] if k.endswith(".anchors")]
    return checkpoint, checkpoint["state_dict"][key], checkpoint["train_state"]["model"][key]


def _train_labels(data, imgsz):
    records, _ = load_records(load_dataset_config(data), "train")
    return label_sizes(records, imgsz)


def test_refit_anchors_are_in_the_checkpoints_and_survive_reload_and_resume(tiny_shapes, tmp_path, caplog):
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=str(_bad_yaml(tmp_path)), epochs=1, batch=8, nbs=8)
    with caplog.at_level(logging.INFO, logger="yolotr"):
        Trainer(cfg).train()
    assert "AutoAnchor: " in caplog.text and "recomputed: BPR 0.0000 -> 1.0000" in caplog.text
    run = tmp_path / "run"
    checkpoint, ema_anchors, raw_anchors = _saved_anchors(run / "weights" / "last.pt")
    assert torch.equal(ema_anchors, raw_anchors)
    model = load_model(run / "weights" / "best.pt")
    head = model.model[-1]
    assert torch.equal(head.anchors, ema_anchors)
    assert anchor_fit(head_anchors_pixels(head).reshape(-1, 2), _train_labels(tiny_shapes, 64), 4.0)[1] >= BPR_GOOD
    assert checkpoint["model_yaml"]["anchors"] != BAD_ANCHORS  # the YAML in the checkpoint says the same
    yaml_anchors = np.array(checkpoint["model_yaml"]["anchors"]).reshape(3, 3, 2)
    np.testing.assert_allclose(yaml_anchors, head_anchors_pixels(head), atol=0.01)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolotr"):
        Trainer.resume(run, epochs=2).train()
    assert "AutoAnchor" not in caplog.text  # the anchors come from the checkpoint
    _, resumed, _ = _saved_anchors(run / "weights" / "last.pt")
    assert torch.equal(resumed, ema_anchors)


def test_noautoanchor_flag_keeps_the_yaml_anchors(tiny_shapes, tmp_path, capsys, caplog):
    bad = _bad_yaml(tmp_path)
    args = ["train", "--model", str(bad), "--data", str(tiny_shapes), "--epochs", "1", "--imgsz", "64"]
    args += ["--batch", "8", "--workers", "0", "--no-val", "--project", str(tmp_path), "--name", "run"]
    args += ["--noautoanchor", "--set", "nbs=8", "warmup_min_iters=2", "mosaic=0.5"]
    with caplog.at_level(logging.INFO, logger="yolotr"):
        assert cli_main(args) == 0
    closing = [r.getMessage() for r in caplog.records if "results in" in r.getMessage()]
    assert len(closing) == 1 and str(tmp_path / "run") in closing[0]  # the closing line, said once
    assert "results in" not in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())["autoanchor"] is False
    _, anchors, _ = _saved_anchors(tmp_path / "run" / "weights" / "last.pt")
    strides = torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    expected = torch.tensor(BAD_ANCHORS, dtype=torch.float32).view(3, 3, 2) / strides
    assert torch.equal(anchors, expected)


def test_stock_p6_yaml_with_placeholder_anchors_gets_anchors_from_the_data(tiny_shapes, tmp_path, caplog):
    cfg = yaml.safe_load(shared_path("reference", "yolov5-yaml", "yolov5-p6.yaml").read_text())
    assert cfg["anchors"] == 3
    cfg.update(depth_multiple=0.33, width_multiple=0.25)  # the n6 size, to stay quick
    path = tmp_path / "p6.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with caplog.at_level(logging.INFO, logger="yolotr"):
        Trainer(tiny_train_cfg(tiny_shapes, tmp_path, model=str(path), epochs=1, batch=8, nbs=8)).train()
    assert "placeholder anchors; training computes them from the data" in caplog.text
    assert "AutoAnchor: placeholder anchors; computed from" in caplog.text
    checkpoint, anchors, _ = _saved_anchors(tmp_path / "run" / "weights" / "last.pt")
    assert anchors.shape == (4, 3, 2)
    pixels = anchors.double() * torch.tensor([8.0, 16.0, 32.0, 64.0], dtype=torch.float64).view(4, 1, 1)
    assert (pixels >= 2.0).all()
    assert anchor_fit(pixels.view(-1, 2).numpy(), _train_labels(tiny_shapes, 64), 4.0)[1] >= BPR_GOOD
    assert isinstance(checkpoint["model_yaml"]["anchors"], list)  # no placeholder warning when reloaded
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        reloaded = load_model(tmp_path / "run" / "weights" / "last.pt")
    assert "placeholder" not in caplog.text
    assert torch.equal(reloaded.model[-1].anchors, anchors)


def test_two_gloo_ranks_train_with_the_anchors_rank0_fitted(tiny_shapes, tmp_path):
    from tests.engine.test_ddp import _finish_ranks, _start_ranks

    cfg = tiny_train_cfg(tiny_shapes, tmp_path, model=str(_bad_yaml(tmp_path)), epochs=1, batch=4, nbs=8)
    rank0, rank1 = _finish_ranks(_start_ranks(cfg, tmp_path), tmp_path)
    (key,) = [k for k in rank0 if k.endswith(".anchors")]
    bad = torch.tensor(BAD_ANCHORS, dtype=torch.float32).view(3, 3, 2) / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    assert not torch.equal(rank0[key], bad)
    assert torch.equal(rank0[key], rank1[key])  # broadcast from rank 0
    _, saved, _ = _saved_anchors(tmp_path / "run" / "weights" / "last.pt")
    assert torch.equal(saved, rank0[key])


def test_no_labels_is_said_as_such_not_as_a_good_fit():
    head = make_head([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]], (8, 16, 32))
    result = check_anchors(head, square_records([]), 640, seed=0)
    assert result.message() == "AutoAnchor: no labels to check the anchors against; they stay as they are"
