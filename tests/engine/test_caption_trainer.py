"""Caption training: run directory, checkpoints, resume, COCO captions JSON, schedule, CLI predict with attention."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolotr.caption_cli import add_caption_parser
from yolotr.data.captions import load_caption_data, read_caption_json
from yolotr.engine.caption_trainer import (
    DEFAULTS,
    CaptionTrainer,
    _warn_if_shorter_than_a_step,
    load_captioner,
    lr_factor,
)
from yolotr.errors import CheckpointError, ConfigError, DataError

TINY = dict(
    data="shapes", n_train=8, n_val=3, imgsz=48, encoder="patch", patch=16, vit_depth=1, dim=32, layers=1,
    heads=2, max_len=16, batch=4, epochs=2, seed=0,
)  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_train_resume_and_predict_with_attention(cache, tmp_path):
    result = CaptionTrainer({**TINY, "project": str(tmp_path / "runs"), "name": "t"}).train()
    run = tmp_path / "runs" / "t"
    assert result["save_dir"] == str(run)
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "args.yaml", "results.png"):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["task"] == "caption" and ckpt["epoch"] == 1 and "optimizer" in ckpt
    CaptionTrainer({"resume": str(run / "weights" / "last.pt"), "epochs": 3}).train()
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["step"] == 3 * 2
    with pytest.raises(ConfigError, match="finished its 3 epochs; give more epochs"):
        CaptionTrainer({"resume": str(run / "weights" / "last.pt")})

    image = cache / "img.png"
    cv2.imwrite(str(image), np.full((80, 60, 3), 200, np.uint8))
    parser = argparse.ArgumentParser()
    add_caption_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["caption", "predict", "--model", str(run / "weights" / "best.pt"), "--source", str(image), "--attention",
         "--beam", "2", "--project", str(tmp_path / "pred")]
    )  # fmt: skip
    assert args.func(args) == 0
    assert (tmp_path / "pred" / "exp" / "img_attention.png").is_file()
    entries = json.loads((tmp_path / "pred" / "exp" / "captions.json").read_text())
    assert entries[0]["path"] == str(image)
    args = parser.parse_args(["caption", "val", "--model", str(run / "weights" / "last.pt"), "--beam", "3"])
    assert args.func(args) == 0
    model, vocab, _ = load_captioner(run / "weights" / "best.pt")
    assert len(vocab) == model.embed.num_embeddings


def test_a_resumed_run_trains_on_as_the_uninterrupted_one(cache, tmp_path, monkeypatch):
    """A run stopped after its first epoch and resumed ends with the weights of one that was not stopped: the
    resumed epoch used to shuffle as the first one did, and drew other dropout masks."""
    import shutil

    from yolotr.engine import caption_trainer

    saved = caption_trainer.save_checkpoint

    def keep_first_epoch(ckpt, path):  # the last.pt of epoch 1, as a kill after it would leave it
        out = saved(ckpt, path)
        if Path(path).name == "last.pt" and ckpt["epoch"] == 0 and "stopped" not in str(path):
            (tmp_path / "stopped" / "weights").mkdir(parents=True)
            shutil.copy(path, tmp_path / "stopped" / "weights" / "last.pt")
        return out

    monkeypatch.setattr(caption_trainer, "save_checkpoint", keep_first_epoch)
    cfg = {**TINY, "dropout": 0.2, "n_train": 12, "project": str(tmp_path), "name": "whole", "plots": False}
    CaptionTrainer(cfg).train()
    assert not (tmp_path / "whole" / "results.png").exists() and (tmp_path / "whole" / "results.csv").is_file()
    CaptionTrainer({"resume": str(tmp_path / "stopped" / "weights" / "last.pt"), "plots": True}).train()
    assert (tmp_path / "stopped" / "results.png").is_file()  # a resume takes plots
    whole, resumed = (torch.load(tmp_path / r / "weights" / "last.pt", weights_only=True) for r in ("whole", "stopped"))
    assert resumed["epoch"] == whole["epoch"] == 1 and resumed["step"] == whole["step"]
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


def test_shapes_split_and_coco_captions_json(cache, tmp_path):
    train, val = load_caption_data({**TINY})
    assert len(train) == 8 and len(val) == 3 and all(len(c) == 1 for c in train.captions)
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"image_id": 1, "caption": "A dog."},
            {"image_id": 2, "caption": "A cat."},
            {"image_id": 1, "caption": "A brown dog."},
        ],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(coco))
    data = read_caption_json(path, tmp_path / "images")
    assert [p.name for p in data.paths] == ["a.jpg", "b.jpg"]
    assert data.captions == [["A dog.", "A brown dog."], ["A cat."]]
    coco["annotations"].append({"image_id": 7, "caption": "x"})
    path.write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"captions.json: annotations\[3\].*image_id 7"):
        read_caption_json(path, tmp_path)


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0.0, 0.1) < 0.01 and lr_factor(0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0) and lr_factor(1.0, 0.1) == pytest.approx(0.01)
    assert lr_factor(0.3, 0.1) > lr_factor(0.6, 0.1) > lr_factor(0.9, 0.1)


def test_time_limit_is_in_minutes_and_ends_the_run_instead_of_epochs(cache, tmp_path, caplog):
    cfg = {**TINY, "epochs": 1, "time_limit": 0.05, "project": str(tmp_path / "runs"), "name": "t"}
    with caplog.at_level(logging.INFO, logger="yolotr"):
        result = CaptionTrainer(cfg).train()
    assert 3.0 <= result["time"] < 20.0  # 0.05 min = 3 s, plus the epoch under way and its validation
    assert "epoch 1/0.05 min" in caplog.text  # epochs=1 is not the limit: the clock is
    assert "time limit of 0.05 min reached after epoch" in caplog.text
    last = torch.load(tmp_path / "runs" / "t" / "weights" / "last.pt", weights_only=True)
    # saved after the last epoch's validation; the clock may pass the limit only after that (a fast machine)
    assert 0.0 < last["elapsed"] <= result["time"]
    assert f"time limit of 0.05 min reached after epoch {last['epoch'] + 1}\n" in caplog.text


def test_time_limit_shorter_than_a_step_warns(cache, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        CaptionTrainer({**TINY, "time_limit": 1e-6, "project": str(tmp_path / "runs"), "name": "t"}).train()
    assert "shorter than one training step" in caplog.text and "time_limit is in minutes" in caplog.text
    assert torch.load(tmp_path / "runs" / "t" / "weights" / "last.pt", weights_only=True)["step"] == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        _warn_if_shorter_than_a_step(0.01, 0.5)  # 0.6 s against a 0.5 s step: meant, no warning
    assert "shorter than one training step" not in caplog.text
    _warn_if_shorter_than_a_step(0.005, 0.5)
    assert "shorter than one training step" in caplog.text
    with pytest.raises(ConfigError, match="time_limit must be a number of minutes"):
        CaptionTrainer({**TINY, "time_limit": -1})


def test_cli_time_limit_flag_takes_float_minutes(capsys):
    parser = argparse.ArgumentParser()
    add_caption_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["caption", "train", "--time-limit", "0.5"]).time_limit == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["caption", "train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--time-limit TIME_LIMIT minutes of training, a float (0.5 = 30 s; 0: no limit)" in help_text


def _bench_module():
    path = Path(__file__).resolve().parents[2] / "bench" / "caption.py"
    spec = importlib.util.spec_from_file_location("bench_caption", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_caption_defaults_are_the_settings_the_bench_uses():
    # the settings that reach BLEU-4 0.53-0.56 in 290 s on 2 CPU threads (issue 18)
    expected = {"imgsz": 64, "n_train": 4000, "lr": 2e-3, "layer": 4, "dim": 128, "batch": 32, "encoder": "backbone"}
    assert {k: DEFAULTS[k] for k in expected} == expected
    bench = _bench_module()
    args = bench.build_parser().parse_args([])
    overrides = bench.bench_overrides(args)
    # the bench passes its time budget, where to write and the device; every model, data and
    # optimisation setting is the command's default
    assert set(overrides) == {"data", "time_limit", "project", "name", "device"}
    assert overrides["data"] == DEFAULTS["data"] and overrides["time_limit"] == pytest.approx(4.8)
    assert bench.bench_overrides(bench.build_parser().parse_args(["--imgsz", "96"]))["imgsz"] == 96


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("imgsz", 0, r"'imgsz' must be >= 1, got 0"),
        ("batch", 0, r"'batch' must be >= 1"),
        ("lr", -1, r"'lr' must be > 0"),
        ("dropout", 2, r"'dropout' must be in \[0, 1\)"),
        ("max_len", 1, r"'max_len' must be >= 3"),
        ("epochs", 0, r"'epochs' must be >= 1"),
        ("epochs", 1.5, r"'epochs' must be a whole number"),
        ("dim", "big", r"'dim' must be a number"),
        ("plots", "no", r"'plots' must be true or false, got 'no'"),
        ("freeze", 1, r"'freeze' must be true or false, got 1"),
    ],
)
def test_caption_settings_out_of_range_are_refused_before_the_run_folder(tmp_path, key, value, message):
    """They failed deep in OpenCV or torch, or trained nothing (max_len 1, epochs 0); now a ConfigError naming
    the setting, and no run folder left behind."""
    with pytest.raises(ConfigError, match=rf"caption setting {message}"):
        CaptionTrainer({**TINY, key: value, "project": str(tmp_path / "runs")})
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--beam", "0"), ("--imgsz", "0"), ("--repetition-penalty", "0"), ("--length-penalty", "-5")]
)
def test_caption_decoding_flags_out_of_range_are_refused(flag, value, capsys):
    parser = argparse.ArgumentParser()
    add_caption_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["caption", "predict", "--model", "m.pt", "--source", "x.jpg", flag, value])
    assert f"argument {flag}: must be >=" in capsys.readouterr().err


def _coco_captions(tmp_path, images, annotations):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions_with_one_id_for_two_images_are_refused(tmp_path):
    """The second image took the first one's id: its captions moved to the other photo without a word."""
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 1, "file_name": "c.jpg"}]
    path = _coco_captions(tmp_path, images, [{"image_id": 1, "caption": "a raccoon"}])
    with pytest.raises(DataError, match=r"images\[2\]: id 1 is also the id of images\[0\]"):
        read_caption_json(path, tmp_path)


@pytest.mark.parametrize(
    ("document", "message"),
    [({"images": [{"id": 1, "file_name": None}], "annotations": []}, r"images\[0\] needs an 'id' and a 'file_name'"),
     ({"images": [{"id": 1, "file_name": "a.jpg"}]}, "need a list under 'annotations'"),
     ({"images": [], "annotations": {"0": "x"}}, "need a list under 'annotations', got dict")],
)  # fmt: skip
def test_malformed_coco_captions_name_the_entry(tmp_path, document, message):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=message):
        read_caption_json(path, tmp_path)


def test_captions_without_a_word_are_skipped_with_a_warning(tmp_path, caplog):
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    annotations = [{"image_id": 1, "caption": "A raccoon."}, {"image_id": 1, "caption": ""},
                   {"image_id": 2, "caption": "🍎🍎 !!!"}]  # fmt: skip
    with caplog.at_level("INFO", logger="yolotr"):
        data = read_caption_json(_coco_captions(tmp_path, images, annotations), tmp_path)
    assert [p.name for p in data.paths] == ["a.jpg"] and data.captions == [["A raccoon."]]
    assert "annotations[1]" in caplog.text and "annotations[2]" in caplog.text and "without a caption" in caplog.text
    only_noise = _coco_captions(tmp_path, images[1:], annotations[2:])
    with pytest.raises(DataError, match="no captions"):
        read_caption_json(only_noise, tmp_path)


def test_the_validation_loss_has_the_training_losss_smoothing(cache, tmp_path, monkeypatch):
    """Both losses are plotted on one axis: the validation one had no label smoothing where training had 0.1."""
    from yolotr.engine import caption_trainer

    seen, original = [], caption_trainer.evaluate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("label_smoothing", 0.0))
        return original(*args, **kwargs)

    monkeypatch.setattr(caption_trainer, "evaluate", spy)
    cfg = {**TINY, "epochs": 1, "label_smoothing": 0.2, "project": str(tmp_path / "runs"), "name": "s"}
    CaptionTrainer(cfg).train()
    assert seen == [0.2]


def test_captions_longer_than_max_len_are_named_in_a_warning(caplog):
    """Training on captions cut at ``max_len - 2`` words said nothing: a model that never ends a long caption."""
    from yolotr.data.captions import CaptionDataset, CaptionSet
    from yolotr.models.vocab import Vocabulary

    data = CaptionSet([Path("a.png"), Path("b.png")], [["one two three four five", "one two"], ["one two three"]])
    vocab = Vocabulary.build((c for caps in data.captions for c in caps), 1)
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        CaptionDataset(data, vocab, 32, 5, train=False, cache=False)
        assert not caplog.text  # validation captions are not cut for training
        CaptionDataset(data, vocab, 32, 5, train=True, cache=False)
    assert "1 of 3 training captions have more than max_len - 2 = 3 words (the longest 5)" in caplog.text
    assert vocab.encode("one two three four five", 5)[1:-1] == vocab.encode("one two three", 5)[1:-1]


def test_a_file_that_is_no_caption_checkpoint_says_what_it_is(tmp_path):
    """Every one of these read "cannot read checkpoint (Weights only load failed. ...)" with torch's ANSI codes,
    or "not a yolotr caption checkpoint" for our own detection checkpoint."""
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import save_checkpoint

    page, text, cut = tmp_path / "page.pt", tmp_path / "notes.pt", tmp_path / "cut.pt"
    page.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    text.write_text("epochs: 10\n")
    detection = tmp_path / "detect.pt"
    save_checkpoint(
        {"format": "yolotr", "model_yaml": {}, "state_dict": DetectionModel("yolov5n.yaml").state_dict()}, detection
    )
    cut.write_bytes(detection.read_bytes()[:3000])
    pickled = tmp_path / "v5.pt"
    torch.save({"model": torch.nn.Conv2d(3, 8, 3)}, pickled)  # pickled objects, as YOLOv5's checkpoints hold
    for path, message in [
        (page, r"page\.pt: not a checkpoint: it looks like an HTML page"),
        (text, r"notes\.pt: not a checkpoint: it looks like a text file \(first line: 'epochs: 10'\)"),
        (detection, r"detect\.pt: a yolotr detection checkpoint, not a caption checkpoint: it predicts with 'yolotr"),
        (pickled, r"v5\.pt: a checkpoint holding pickled objects, as the detection checkpoints of YOLOv5 and the"),
        (cut, r"cut\.pt: cannot read checkpoint: it looks like a PyTorch checkpoint cut short .*truncated or damaged"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            load_captioner(path)
