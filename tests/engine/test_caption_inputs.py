"""What a user's probe of ``yolotr caption`` found: settings that failed deep in torch or were silently ignored,
attention figures that replaced each other, and video captions without their frame."""

from __future__ import annotations

import argparse
import json
import logging

import cv2
import numpy as np
import pytest

from tests.conftest import zeroed_copy
from tests.engine.test_caption_trainer import TINY
from yolotr.caption_cli import add_caption_parser
from yolotr.cli import main
from yolotr.engine.caption_trainer import CaptionTrainer
from yolotr.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLOTR_CACHE", str(root / "cache"))
        CaptionTrainer({**TINY, "epochs": 1, "project": str(root / "runs"), "name": "t", "plots": False}).train()
    return root / "runs" / "t" / "weights" / "last.pt"


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_caption_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["caption", *argv])
    return args.func(args)


def test_attention_figures_of_two_images_with_one_stem_are_both_kept(trained, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), np.full((40, 60, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "a.png"), np.full((60, 40, 3), 200, np.uint8))
    assert _run("predict", "--model", str(trained), "--source", str(folder), "--attention",
                "--project", str(tmp_path / "pred")) == 0  # fmt: skip
    out = tmp_path / "pred" / "exp"
    entries = json.loads((out / "captions.json").read_text())
    figures = [e["attention"] for e in entries]
    assert sorted(figures) == [str(out / "a_attention.png"), str(out / "a_attention_2.png")]
    assert all((out / f).is_file() for f in ("a_attention.png", "a_attention_2.png"))


def test_video_captions_name_their_frame(trained, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for value in (40, 120, 200):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    assert _run("predict", "--model", str(trained), "--source", str(clip)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(clip))]
    assert [line.split(":")[0] for line in lines] == [f"{clip} frame {i}" for i in (1, 2, 3)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "banana"], "banana"),
        (["--imgsz", "8"], "imgsz 8: smaller than the encoder's stride 16"),
        (["--beam", "1000000"], "beam 1000000: wider than the"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "val"])
def test_decoding_settings_that_failed_in_torch_are_refused(trained, tmp_path, capsys, monkeypatch, argv, message,
                                                             command):  # fmt: skip
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    source = ["--source", str(image)] if command == "predict" else []
    assert main(["caption", command, "--model", str(trained), *source, *argv]) == 2
    assert message in capsys.readouterr().err


def test_training_settings_that_failed_or_were_ignored_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    project = str(tmp_path / "runs")
    with pytest.raises(ConfigError, match="'workers' must be >= 0"):
        CaptionTrainer({**TINY, "workers": -1, "project": project})
    with pytest.raises(ConfigError, match="'val_beam' must be >= 1"):
        CaptionTrainer({**TINY, "val_beam": 0, "project": project})
    with pytest.raises(ConfigError, match="encoder 'patch' has none"):
        CaptionTrainer({**TINY, "weights": "det.pt", "project": project}).train()
    with pytest.raises(ConfigError, match="the checkpoint brings its own model; give one of them"):
        CaptionTrainer({**TINY, "encoder": "backbone", "backbone": "yolov8n.yaml", "weights": "det.pt",
                        "project": project}).train()  # fmt: skip
    with pytest.raises(ConfigError, match="min_count 1000: no word of the training captions is that frequent"):
        CaptionTrainer({**TINY, "min_count": 1000, "project": project}).train()
    with pytest.raises(ConfigError, match="val_beam 500: wider than the [0-9]+ words of this model.s vocabulary"):
        CaptionTrainer({**TINY, "val_beam": 500, "project": project}).train()
    with pytest.raises(ConfigError, match="imgsz 48: smaller than the encoder's stride 64"):
        CaptionTrainer({**TINY, "patch": 64, "project": project}).train()


def test_a_caption_dataset_yaml_is_read_whole(tmp_path):
    image = tmp_path / "bus.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not a readable caption dataset YAML"):
        CaptionTrainer({**TINY, "data": str(image), "project": str(tmp_path)}).train()  # bytes, not text
    data = tmp_path / "caps.yaml"
    data.write_text("train: train.json\nval: val.json\ntrain_imgs: images\n")
    with pytest.raises(DataError, match="unknown key 'train_imgs'; did you mean train_images"):
        CaptionTrainer({**TINY, "data": str(data), "project": str(tmp_path)}).train()


def test_a_resume_says_which_settings_it_ignores(trained, caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"), pytest.raises(ConfigError, match="finished"):
        CaptionTrainer({"resume": str(trained), "lr": 0.5, "dim": 999})
    assert "ignoring dim, lr" in caplog.text


def test_a_damaged_caption_checkpoint_is_refused(trained, tmp_path):
    """Its changed bytes loaded and captioned as wrong weights: torch's zip reader checks no CRC."""
    from yolotr.engine.caption_trainer import load_captioner
    from yolotr.errors import CheckpointError

    damaged = zeroed_copy(trained, tmp_path / "damaged.pt", 200)
    with pytest.raises(CheckpointError, match="damaged.pt: damaged checkpoint: its member .* fails its CRC-32"):
        load_captioner(damaged)
