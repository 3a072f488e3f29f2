"""The built-in shapes dataset: deterministic samples, captions, YOLO files, data="shapes"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from yolotr.data.sources import load_dataset_config, load_records
from yolotr.data.synthetic import COLOUR_NAMES, SHAPE_NAMES, generate_sample, make_shapes_dataset
from yolotr.errors import DataError


def test_samples_are_deterministic_and_valid():
    for i in range(20):
        image, boxes, classes, caption = generate_sample(i, 128, seed=3)
        again = generate_sample(i, 128, seed=3)
        np.testing.assert_array_equal(image, again[0])
        np.testing.assert_array_equal(boxes, again[1])
        assert caption == again[3]
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int64
        assert 1 <= len(boxes) == len(classes) <= 4
        assert (boxes >= 0).all() and (boxes <= 128).all() and (boxes[:, 2:] - boxes[:, :2] >= 8).all()
        assert set(classes.tolist()) <= set(range(len(SHAPE_NAMES)))
        words = caption.replace(",", "").split()
        assert 1 <= len(words) <= 12
        assert set(words) <= {"a", "and", "two", "three", "four", "small", "large", *COLOUR_NAMES} | {
            s + p for s in SHAPE_NAMES for p in ("", "s")
        }
        for k, name in enumerate(SHAPE_NAMES):
            if (classes == k).any():
                assert name in caption
    assert not np.array_equal(generate_sample(0, 128)[0], generate_sample(1, 128)[0])
    assert not np.array_equal(generate_sample(0, 128, seed=0)[0], generate_sample(0, 128, seed=1)[0])


def test_caption_counts_objects():
    for i in range(40):
        _, _, classes, caption = generate_sample(i, 96)
        words = caption.replace(",", "").split()
        numbers = {"a": 1, "two": 2, "three": 3, "four": 4}
        assert sum(numbers.get(w, 0) for w in words) == len(classes), caption
        if len(classes) <= 2:
            assert {"small", "large"} & set(words)


def test_make_shapes_dataset_is_idempotent(tmp_path):
    yaml_file = make_shapes_dataset(tmp_path / "s", n_train=6, n_val=3, imgsz=96, seed=0)
    root = yaml_file.parent
    captions = json.loads((root / "captions.json").read_text())
    assert len(captions) == 9 and captions["images/train/000000.jpg"] == generate_sample(0, 96)[3]
    stamp = (root / "images" / "train" / "000000.jpg").stat().st_mtime_ns
    assert make_shapes_dataset(tmp_path / "s", n_train=6, n_val=3, imgsz=96, seed=0) == yaml_file
    assert (root / "images" / "train" / "000000.jpg").stat().st_mtime_ns == stamp
    records, report = load_records(yaml_file, "train", cache=False)
    assert len(records) == 6 and report.problems == []
    _, boxes, classes, _ = generate_sample(0, 96)
    np.testing.assert_allclose(records[0].boxes, boxes, atol=1e-3)
    np.testing.assert_array_equal(records[0].classes, classes)
    make_shapes_dataset(tmp_path / "s", n_train=4, n_val=2, imgsz=96, seed=0)
    assert len(list((root / "images" / "train").iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        make_shapes_dataset(tmp_path / "mine", n_train=2, n_val=1, imgsz=64)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_data_shapes_uses_the_cache_folder():
    config = load_dataset_config("shapes")
    assert config.names == list(SHAPE_NAMES) and config.format == "yolo"
    assert Path(config.root).parent == Path(os.environ["YOLOTR_CACHE"])
    assert len(load_records(config, "val")[0]) == 64
