"""check_data: the printable report of `yolotr check-data`."""

from __future__ import annotations

from pathlib import Path

from yolotr.data.check import check_data


def test_check_data_lists_every_problem(broken_dataset):
    yaml_file, expected = broken_dataset
    text = check_data(yaml_file)
    for name, (line, severity) in expected.items():
        where = f"{name}:{line}: {severity}:" if line else f"{name}: {severity}:"
        assert where in text, where
    assert "train: 15/16 images usable" in text or "train: 15/" in text
    table = text.strip().splitlines()[-4:]
    assert table[0].split() == ["class", "train", "images", "train", "boxes", "val", "images", "val", "boxes"]
    assert table[1].split()[0] == "a" and table[2].split()[0] == "b" and table[3].split()[0] == "all"


def test_check_data_raccoon(raccoon_voc):
    text = check_data(raccoon_voc)
    assert "train: 160/160 images usable, 173 boxes" in text
    assert "val: 40/40 images usable, 44 boxes" in text
    assert text.strip().splitlines()[-2].split() == ["raccoon", "160", "173", "40", "44"]


def test_check_data_reports_empty_split(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "x.png").write_bytes(b"nope")
    from yolotr.data.synthetic import make_shapes_dataset

    good = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=1, imgsz=64).parent
    data = {
        "path": str(tmp_path),
        "train": str(Path(good) / "images" / "train"),
        "val": "val",
        "names": ["a", "b", "c"],
    }
    text = check_data(data)
    assert "split 'val' has no usable image" in text and "x.png" in text
