"""``save_crop``: each detection's region of the original image, cut as the ``ultralytics`` package's
``save_one_box`` cuts it (grown by 2 % + 10 px, truncated, clipped), written as ``crops/<class>/<stem>.jpg``
with ``-2``, ``-3`` for more of one class, from ``YOLO.predict`` and ``yolotr predict --save-crop``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path
from yolotr.cli import main
from yolotr.engine.results import Boxes, Results

# x1, y1, x2, y2, score, class: inside, past the top-left corner, past the bottom-right, fractional, a sliver
BOXES = [
    [10.4, 20.6, 50.2, 70.9, 0.9, 1],
    [-8.0, -3.0, 12.5, 9.5, 0.8, 0],
    [70.3, 40.1, 130.0, 95.0, 0.7, 1],
    [33.3, 33.7, 33.9, 34.1, 0.6, 2],
]


def _results(tmp_path=None) -> Results:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = Boxes(torch.tensor(BOXES), (90, 120))
    return Results(image, "scene.jpg", boxes, ["cat", "dog", "bird"])


def test_crops_equal_the_package_save_one_box():
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics.utils.plotting import save_one_box

    result = _results()
    theirs = [save_one_box(torch.tensor(b[:4]), result.orig_img[..., ::-1], save=False) for b in BOXES]
    ours = result.crops()
    assert [name for name, _ in ours] == ["dog", "cat", "dog", "bird"]
    for (_, crop), expected in zip(ours, theirs):
        assert crop.shape == expected.shape
        assert np.array_equal(crop, expected)


def test_save_crop_names_files_per_class_and_keeps_the_pixels(tmp_path):
    written = _results().save_crop(tmp_path / "crops", "scene")
    names = sorted(p.relative_to(tmp_path / "crops").as_posix() for p in written)
    assert names == ["bird/scene.jpg", "cat/scene.jpg", "dog/scene-2.jpg", "dog/scene.jpg"]
    first = np.asarray(Image.open(tmp_path / "crops" / "dog" / "scene.jpg"))
    expected = _results().crops()[0][1]
    assert first.shape == expected.shape
    assert np.abs(first.astype(int) - expected).mean() < 12  # JPEG of noise at quality 95, no chroma subsampling


def test_cli_save_crop_alone_makes_the_run_folder(tmp_path, capsys):
    weights, photo = shared_path("weights", "yolov5n.pt"), shared_path("images", "bus.jpg")
    args = ["predict", "--model", str(weights), "--source", str(photo), "--imgsz", "320", "--backend", "torch"]
    assert main([*args, "--save-crop", "--project", str(tmp_path), "--name", "run"]) == 0
    crops = sorted(p.relative_to(tmp_path / "run" / "crops").as_posix() for p in (tmp_path / "run").rglob("*.jpg"))
    detections = int(capsys.readouterr().out.split(" images, ")[1].split()[0])
    assert len(crops) == detections > 0
    assert "bus/bus.jpg" in crops and "person/bus.jpg" in crops
