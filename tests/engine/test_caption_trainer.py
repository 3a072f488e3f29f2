"""Caption training: run directory, checkpoints, resume, COCO captions JSON, schedule, CLI predict with attention."""

from __future__ import annotations

import argparse
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from yolotr.caption_cli import add_caption_parser
from yolotr.engine.caption_trainer import (
    CaptionTrainer,
    load_caption_data,
    load_captioner,
    lr_factor,
    read_caption_json,
)
from yolotr.errors import DataError

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
