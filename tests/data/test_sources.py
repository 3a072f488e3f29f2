"""Dataset YAMLs, the three label formats, validation and the label cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from yolotr.data import sources
from yolotr.data.dataset import DetectionDataset
from yolotr.data.sources import ImageRecord, load_dataset_config, load_records
from yolotr.errors import DataError


def _by_name(records: list[ImageRecord]) -> dict[str, ImageRecord]:
    return {Path(r.path).name: r for r in records}


def _assert_same(a: list[ImageRecord], b: list[ImageRecord]) -> None:
    ra, rb = _by_name(a), _by_name(b)
    assert sorted(ra) == sorted(rb)
    for name, x in ra.items():
        y = rb[name]
        assert (x.height, x.width) == (y.height, y.width), name
        np.testing.assert_array_equal(x.classes, y.classes, err_msg=name)
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3, err_msg=name)


def test_raccoon_voc(raccoon_voc):
    train, report = load_records(raccoon_voc, "train")
    val, _ = load_records(raccoon_voc, "val")
    assert len(train) == 160 and len(val) == 40 and report.errors == []
    assert {Path(r.path).stem for r in train}.isdisjoint(Path(r.path).stem for r in val)
    r = _by_name(train + val)["raccoon-1.jpg"]
    assert (r.height, r.width) == (417, 650)
    assert r.boxes.dtype == np.float32 and r.classes.dtype == np.int64
    np.testing.assert_allclose(r.boxes, [[80, 87, 522, 408]])
    for rec in train + val:
        assert rec.boxes.shape == (len(rec.classes), 4)
        assert (rec.boxes[:, :2] >= 0).all() and (rec.boxes[:, 2] <= rec.width).all()
        assert (rec.boxes[:, 3] <= rec.height).all() and (rec.boxes[:, 2:] > rec.boxes[:, :2]).all()


def _to_yolo(records: list[ImageRecord], root: Path, list_file: Path, stems: bool) -> None:
    """Write YOLO labels beside symlinks to the images (list of relative paths, or of stems)."""
    (root / "images").mkdir(exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    lines = []
    for r in records:
        name = Path(r.path).name
        link = root / "images" / name
        if not link.exists():
            link.symlink_to(r.path)
        wh = np.float64([r.width, r.height] * 2)
        b = (r.boxes.astype(np.float64) / wh).tolist()
        rows = [
            f"{c} {(x1 + x2) / 2!r} {(y1 + y2) / 2!r} {x2 - x1!r} {y2 - y1!r}"
            for c, (x1, y1, x2, y2) in zip(r.classes, b)
        ]
        (root / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(rows) + "\n")
        lines.append(Path(name).stem if stems else f"./images/{name}")
    list_file.write_text("\n".join(lines) + "\n")


def _to_coco(records: list[ImageRecord], file: Path) -> None:
    images, annotations = [], []
    for i, r in enumerate(records):
        images.append({"id": i + 1, "file_name": Path(r.path).name, "height": r.height, "width": r.width})
        for x1, y1, x2, y2 in r.boxes.tolist():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 7,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": 7, "name": "raccoon"}]
    file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))


def test_raccoon_same_records_from_yolo_and_coco(raccoon_voc, raccoon_root, tmp_path):
    voc_train, _ = load_records(raccoon_voc, "train")
    voc_val, _ = load_records(raccoon_voc, "val")
    _to_yolo(voc_train, tmp_path, tmp_path / "train.txt", stems=False)
    _to_yolo(voc_val, tmp_path, tmp_path / "val.txt", stems=True)
    (tmp_path / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: {0: raccoon}\n")
    yolo = load_dataset_config(tmp_path / "data.yaml")
    assert yolo.format == "yolo" and yolo.root == tmp_path
    _assert_same(voc_train, load_records(yolo, "train")[0])
    _assert_same(voc_val, load_records(yolo, "val")[0])

    _to_coco(voc_train, tmp_path / "instances_train.json")
    _to_coco(voc_val, tmp_path / "instances_val.json")
    coco = {
        "path": str(tmp_path),
        "train": "instances_train.json",
        "val": ["instances_val.json"],
        "images": str(raccoon_root / "images"),
    }
    coco_train, _ = load_records(coco, "train")
    assert [r.path for r in coco_train] == [r.path for r in voc_train]
    _assert_same(voc_train, coco_train)
    _assert_same(voc_val, load_records(coco, "val")[0])
    assert load_dataset_config(coco).names == ["raccoon"]


def test_broken_corpus_one_problem_per_item(broken_dataset, caplog):
    yaml_file, expected = broken_dataset
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        records, report = load_records(yaml_file, "train", cache=False)
    seen: dict[str, list] = {}
    for p in report.problems:
        seen.setdefault(Path(p.file).name, []).append(p)
    assert sorted(seen) == sorted(expected), report.summary()
    for name, (line, severity) in expected.items():
        assert len(seen[name]) == 1, seen[name]
        assert (seen[name][0].line, seen[name][0].severity) == (line, severity), seen[name][0]
    assert "exif.jpg" in caplog.text and "dataset problems" in caplog.text
    by_name = _by_name(records)
    assert "unreadable.jpg" not in by_name and "truncated.jpg" not in by_name
    assert (by_name["exif.jpg"].height, by_name["exif.jpg"].width) == (128, 96)
    assert len(by_name["dup.jpg"].boxes) == 1 and len(by_name["outside.jpg"].boxes) == 1
    np.testing.assert_allclose(by_name["clip.jpg"].boxes[0, 2], 128)
    assert report.n_usable == len(records) == 15
    for augment in (False, True):
        dataset = DetectionDataset(records, imgsz=64, augment=augment)
        for i in range(len(dataset)):
            image, labels, _, _ = dataset[i]
            assert image.shape[0] == 3 and labels.shape[1] == 6


def test_exif_sizes_match_opencv(broken_dataset):
    import cv2

    yaml_file, _ = broken_dataset
    records, _ = load_records(yaml_file, "train", cache=False)
    for r in records:
        assert cv2.imread(r.path, cv2.IMREAD_COLOR).shape == (r.height, r.width, 3), r.path


def test_no_usable_image_raises(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataError, match="no usable image"):
        load_records({"path": str(tmp_path), "train": "images", "names": ["x"]}, "train")


def test_list_file_names_missing_images(tmp_path, broken_dataset):
    yaml_file, _ = broken_dataset
    root = yaml_file.parent
    (root / "list.txt").write_text("images/train/good.jpg\n\nimages/train/missing.jpg\n")
    records, report = load_records({"path": str(root), "train": "list.txt", "names": ["a", "b"]}, "train")
    assert len(records) == 1
    (problem,) = report.problems
    assert (Path(problem.file).name, problem.line, problem.severity) == ("list.txt", 3, "error")


def test_voc_problems_name_xml_lines(tmp_path, raccoon_root):
    (tmp_path / "annotations").mkdir()
    xml = (raccoon_root / "annotations" / "raccoon-1.xml").read_text()
    xml = xml.replace("<name>raccoon</name>", "<name>badger</name>", 1)
    (tmp_path / "annotations" / "raccoon-1.xml").write_text(xml)
    (tmp_path / "annotations" / "raccoon-10.xml").write_text("<annotation><object>")
    (tmp_path / "list.txt").write_text("raccoon-1\nraccoon-10\nraccoon-100\n")
    data = {
        "path": str(tmp_path),
        "train": "list.txt",
        "names": ["raccoon"],
        "format": "voc",
        "images": str(raccoon_root / "images"),
    }
    records, report = load_records(data, "train")
    assert len(records) == 3
    msgs = {Path(p.file).name: p for p in report.problems}
    assert msgs["raccoon-1.xml"].line == 14 and "badger" in msgs["raccoon-1.xml"].message
    assert msgs["raccoon-10.xml"].severity == "error"
    assert "no annotation" in msgs["raccoon-100.xml"].message


def test_label_cache(broken_dataset, monkeypatch):
    yaml_file, _ = broken_dataset
    first, report1 = load_records(yaml_file, "train")

    def boom(path):
        raise AssertionError("validation ran although the cache is valid")

    monkeypatch.setattr(sources, "inspect_image", boom)
    second, report2 = load_records(yaml_file, "train")
    assert [r.path for r in first] == [r.path for r in second]
    assert [str(p) for p in report1.problems] == [str(p) for p in report2.problems]
    _assert_same(first, second)
    label = yaml_file.parent / "labels" / "train" / "good.txt"
    label.write_text("1 0.5 0.5 0.5 0.5\n")
    os.utime(label, ns=(1, 1))
    with pytest.raises(AssertionError, match="validation ran"):
        load_records(yaml_file, "train")
    files = list((Path(os.environ["YOLOTR_CACHE"]) / "labels").glob("*.json"))
    assert files and not list(files[0].parent.glob("*.tmp"))


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"train": "x"}, "names"),
        ({"names": ["a"]}, "train"),
        ({"train": "x", "names": ["a"], "nc": 2}, "nc"),
        ({"train": "x", "names": {0: "a", 2: "b"}}, "names"),
        ({"train": "x", "names": ["a"], "format": "kitti"}, "format"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(DataError, match=match):
        load_dataset_config(cfg)


def test_config_yaml(tmp_path):
    (tmp_path / "d.yaml").write_text("path: sub\ntrain: [a, b]\nval: v\nnc: 2\n")
    cfg = load_dataset_config(tmp_path / "d.yaml")
    assert cfg.root == tmp_path / "sub" and cfg.names == ["class0", "class1"] and cfg.nc == 2
    assert cfg.splits["train"] == [str(tmp_path / "sub" / "a"), str(tmp_path / "sub" / "b")]
    (tmp_path / "bad.yaml").write_text("train: [a\n")
    with pytest.raises(DataError, match="bad.yaml"):
        load_dataset_config(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="not found"):
        load_dataset_config(tmp_path / "missing.yaml")
    with pytest.raises(DataError, match="split entry"):
        load_records(tmp_path / "d.yaml", "val")
