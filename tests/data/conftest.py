"""Fixtures of the data tests: a private cache folder and the shared raccoon set."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from yolotr.data.dataset import DetectionDataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Label caches and generated datasets go to a per-session temporary folder."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path_factory.getbasetemp() / "yolotr-cache"))


@pytest.fixture(scope="session")
def raccoon_root() -> Path:
    """``$YOLOTR_SHARED/data/raccoon`` (default ``../shared`` beside the repo), else skip."""
    shared = Path(os.environ.get("YOLOTR_SHARED") or REPO.parent / "shared")
    root = shared / "data" / "raccoon"
    if not (root / "images").is_dir() or not (root / "annotations").is_dir():
        pytest.skip(f"raccoon data set not found at {root} (set YOLOTR_SHARED to the shared folder)")
    return root


@pytest.fixture(scope="session")
def raccoon_voc(raccoon_root) -> dict:
    """The raccoon set as a dataset dict, ``format: voc``."""
    return {
        "path": str(raccoon_root),
        "train": "train.txt",
        "val": "val.txt",
        "names": ["raccoon"],
        "format": "voc",
    }


def _save_jpeg(path: Path, image) -> None:
    import cv2

    cv2.imwrite(str(path), image[..., ::-1])


@pytest.fixture
def broken_dataset(tmp_path) -> tuple[Path, dict[str, tuple[int | None, str]]]:
    """A YOLO dataset with one problem per file; returns its YAML and, per file name, the
    ``(line, severity)`` of the one problem it must produce (good.jpg and background.jpg, which
    has no label file, produce none). Train and val name the same folder."""
    import cv2
    import numpy as np
    from PIL import Image

    from yolotr.data.synthetic import generate_sample

    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    photo = generate_sample(0, 128, seed=1)[0]
    ok = "0 0.5 0.5 0.25 0.25\n"
    lines = {
        "good": ok,
        "cls": ok + "5 0.5 0.5 0.2 0.2\n",
        "text": "0 a 0.5 0.2 0.2\n",
        "nan": "0 nan 0.5 0.2 0.2\n",
        "inf": "0 0.5 inf 0.2 0.2\n",
        "cols": ok + ok.replace(" 0.25\n", "\n"),
        "zero": "1 0.5 0.5 0 0.2\n",
        "negative": "1 0.5 0.5 0.2 -0.1\n",
        "clip": "0 0.95 0.5 0.2 0.2\n",
        "outside": ok + "0 1.5 0.5 0.2 0.2\n",
        "dup": ok + ok,
    }
    expected: dict[str, tuple[int | None, str]] = {
        "cls.txt": (2, "error"),
        "text.txt": (1, "error"),
        "nan.txt": (1, "error"),
        "inf.txt": (1, "error"),
        "cols.txt": (2, "error"),
        "zero.txt": (1, "error"),
        "negative.txt": (1, "error"),
        "clip.txt": (1, "warning"),
        "outside.txt": (2, "error"),
        "dup.txt": (2, "warning"),
        "unreadable.jpg": (None, "error"),
        "truncated.jpg": (None, "error"),
        "orphan.txt": (None, "error"),
        "exif.jpg": (None, "warning"),
        "grey.png": (None, "warning"),
        "rgba.png": (None, "warning"),
        "deep.png": (None, "warning"),
        "badutf.txt": (None, "error"),
    }
    for name, text in lines.items():
        _save_jpeg(images / f"{name}.jpg", photo)
        (labels / f"{name}.txt").write_text(text)
    _save_jpeg(images / "background.jpg", photo)
    _save_jpeg(images / "badutf.jpg", photo)
    (labels / "badutf.txt").write_bytes(b"0 0.5 0.5 0.2 0.2\xff\xfe\n")
    (images / "unreadable.jpg").write_bytes(b"this is not an image\n")
    (labels / "unreadable.txt").write_text(ok)
    data = (images / "good.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (labels / "orphan.txt").write_text(ok)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(photo[:96])).save(images / "exif.jpg", exif=exif)
    (labels / "exif.txt").write_text("0 0.5 0.8 0.5 0.2\n")
    cv2.imwrite(str(images / "grey.png"), photo[..., 0])
    cv2.imwrite(str(images / "rgba.png"), np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)]))
    cv2.imwrite(str(images / "deep.png"), photo.astype(np.uint16) * 257)
    for name in ("grey", "rgba", "deep"):
        (labels / f"{name}.txt").write_text(ok)
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    return yaml_file, expected


@pytest.fixture
def broken_outcome() -> tuple[set[str], dict[str, str]]:
    """What :func:`broken_dataset` must give: the images used, and each image left out with why."""
    used = {"good.jpg", "background.jpg", "clip.jpg", "dup.jpg", "exif.jpg", "grey.png", "rgba.png", "deep.png"}
    left_out = {
        "cls.jpg": "class out of range",
        "text.jpg": "malformed line",
        "cols.jpg": "malformed line",
        "nan.jpg": "NaN or inf",
        "inf.jpg": "NaN or inf",
        "zero.jpg": "empty box",
        "negative.jpg": "empty box",
        "outside.jpg": "box outside the image",
        "unreadable.jpg": "unreadable image",
        "truncated.jpg": "unreadable image",
        "badutf.jpg": "unreadable label file",
    }
    return used, left_out


def assert_seeded_items_ignore_history(records, hyp: dict, served_before: int, items: int) -> None:
    """The items of index ``(seed, epoch, i)`` (what a resume relies on) are the same from a fresh 96 px dataset and
    from one seeded otherwise that served ``served_before`` items first, and numpy's and Python's global generators
    (which YOLOv5 draws from) are not touched."""
    a = DetectionDataset(records, 96, augment=True, hyp=hyp)
    b = DetectionDataset(records, 96, augment=True, hyp=hyp, seed=9)
    for k in range(served_before):
        b[k]
    np.random.seed(0)
    random.seed(0)
    for k in range(items):
        first, second = a[(4, 1, k)], b[(4, 1, k)]
        assert (first[0] == second[0]).all() and (first[1] == second[1]).all()
    assert np.random.random() == np.random.RandomState(0).random_sample()
    assert random.random() == random.Random(0).random()
