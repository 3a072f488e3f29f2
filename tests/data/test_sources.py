"""Dataset YAMLs, the three label formats, validation and the label cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from yolotr.data import label_cache, label_check
from yolotr.data.check import EXIT_OK, check_data
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


HEADLINE = (
    "train: 8/19 images usable, 11 left out (2 NaN or inf, 2 empty box, 2 malformed line, "
    "2 unreadable image, 1 box outside the image, 1 class out of range, 1 unreadable label file), "
    "7 boxes, 1 backgrounds, 12 errors, 6 warnings"
)


def test_broken_corpus_one_problem_per_item(broken_dataset, broken_outcome):
    yaml_file, expected = broken_dataset
    records, report = load_records(yaml_file, "train", cache=False)
    seen: dict[str, list] = {}
    for p in report.problems:
        seen.setdefault(Path(p.file).name, []).append(p)
    assert sorted(seen) == sorted(expected), report.summary()
    for name, (line, severity) in expected.items():
        assert len(seen[name]) == 1, seen[name]
        assert (seen[name][0].line, seen[name][0].severity) == (line, severity), seen[name][0]
    by_name = _by_name(records)
    assert (by_name["exif.jpg"].height, by_name["exif.jpg"].width) == (128, 96)
    assert len(by_name["dup.jpg"].boxes) == 1
    np.testing.assert_allclose(by_name["clip.jpg"].boxes[0, 2], 128)
    for augment in (False, True):
        dataset = DetectionDataset(records, imgsz=64, augment=augment)
        for i in range(len(dataset)):
            image, labels, _, _ = dataset[i]
            assert image.shape[0] == 3 and labels.shape[1] == 6


@pytest.mark.parametrize("split", ["train", "val"])
def test_broken_labels_leave_the_image_out(broken_dataset, broken_outcome, split):
    """An image with any label error is not trained or validated on, not even without its bad lines."""
    yaml_file, _ = broken_dataset
    used, left_out = broken_outcome
    records, report = load_records(yaml_file, split, cache=False)
    assert set(_by_name(records)) == used
    assert {Path(image).name: why for image, why in report.left_out} == left_out
    backgrounds = [Path(r.path).name for r in records if len(r.classes) == 0]
    assert backgrounds == ["background.jpg"]  # the only image without a label file
    assert report.headline() == HEADLINE.replace("train:", f"{split}:")


def test_summary_counts_match_the_records(broken_dataset):
    yaml_file, _ = broken_dataset
    records, report = load_records(yaml_file, "train", cache=False)
    assert report.n_usable + len(report.left_out) == report.n_images == 19
    assert report.n_usable == len(records)
    assert report.n_boxes == sum(len(r.classes) for r in records) == 7
    assert sum(report.reasons().values()) == len(report.left_out)
    assert sum(report.class_counts) == report.n_boxes
    assert {p.kind for p in report.errors} >= set(report.reasons())


def _ours(caplog) -> list:
    """yolotr's records only (the ``ultralytics`` package, once another test imported it, logs from the
    ``cv2.imread`` it patches)."""
    return [r for r in caplog.records if r.name.startswith("yolotr")]


def test_load_records_logs_the_headline_and_first_problems(broken_dataset, caplog):
    yaml_file, _ = broken_dataset
    with caplog.at_level(logging.INFO, logger="yolotr"):
        _, report = load_records(yaml_file, "train", cache=False)
    (message,) = [r.getMessage() for r in _ours(caplog)]
    lines = message.splitlines()
    assert lines[0] == HEADLINE
    assert lines[1:6] == [f"  {p}" for p in report.problems[:5]]
    more = len(report.problems) - 5
    assert lines[6:] == [f"  ... and {more} more: `yolotr check-data --data {yaml_file}` lists them all"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolotr"):
        load_records(yaml_file, "train", cache=False, log=False)
    assert _ours(caplog) == []


def test_clean_split_logs_its_headline_once(tmp_path, caplog):
    root = _write_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    with caplog.at_level(logging.INFO, logger="yolotr"):
        load_records(root / "d.yaml", "train", cache=False)
    assert [r.getMessage() for r in _ours(caplog)] == [
        "train: 1/1 images usable, 1 boxes, 0 backgrounds, 0 errors, 0 warnings"
    ]


def test_a_split_without_any_box_says_where_labels_are_read(tmp_path, caplog):
    """VOC XML without ``format: voc`` (or labels in the wrong folder) gave mAP 0 without a word."""
    root = _write_set(tmp_path, {"a": None, "b": None})
    (root / "annotations").mkdir()
    (root / "annotations" / "a.xml").write_text("<annotation></annotation>")
    with caplog.at_level(logging.INFO, logger="yolotr"):
        records, _ = load_records(root / "d.yaml", "val", cache=False)
    assert len(records) == 2
    (warning,) = [r.getMessage() for r in _ours(caplog) if r.levelno == logging.WARNING]
    assert "split 'val' has no box in any of its 2 images (format yolo)" in warning
    assert "labels/ folder beside images/" in warning and "format: voc" in warning
    check = check_data(root / "d.yaml", cache=False)  # check-data said "0 boxes" and nothing more
    assert f"warning: {warning.split(': ', 1)[1]}" in check.text and check.exit_code == EXIT_OK


@pytest.mark.parametrize(("key", "meant"), [("formt", "format"), ("name", "names"), ("vall", "val")])
def test_a_misspelt_key_is_refused_with_the_key_it_resembles(tmp_path, key, meant):
    root = _write_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    yaml_file = root / "d.yaml"
    yaml_file.write_text(yaml_file.read_text() + f"{key}: voc\n")
    with pytest.raises(DataError, match=rf"d.yaml: unknown key '{key}': did you mean '{meant}'\?"):
        load_dataset_config(yaml_file)
    config = load_dataset_config({"path": str(root), "train": "images", "names": ["a"], "roboflow": {"x": 1}})
    assert config.names == ["a"]  # other keys of the YAMLs people download are no typo: left alone


def _write_set(root: Path, labels: dict[str, str | None], names: str = "[a, b]") -> Path:
    """A YOLO set of 64x48 PNGs in images/, each with its label text (None: no label file)."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        Image.new("RGB", (64, 48), (90, 120, 30)).save(root / "images" / f"{stem}.png")
        if text is not None:
            (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "d.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: {names}\n")
    return root


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
    # raccoon-1's one object is of a class not in names: skipped, the image stays as a background
    assert {Path(r.path).name: len(r.boxes) for r in records} == {"raccoon-1.jpg": 0, "raccoon-100.jpg": 0}
    assert [(Path(i).name, why) for i, why in report.left_out] == [("raccoon-10.jpg", "unreadable label file")]
    msgs = {Path(p.file).name: p for p in report.problems}
    assert msgs["raccoon-1.xml"].line == 14 and "badger" in msgs["raccoon-1.xml"].message
    assert msgs["raccoon-1.xml"].severity == "warning"
    assert msgs["raccoon-10.xml"].severity == "error"
    assert "no annotation" in msgs["raccoon-100.xml"].message


def test_label_cache(broken_dataset, broken_outcome, monkeypatch):
    yaml_file, _ = broken_dataset
    first, report1 = load_records(yaml_file, "train")

    def boom(path):
        raise AssertionError("validation ran although the cache is valid")

    monkeypatch.setattr(label_check, "inspect_image", boom)
    second, report2 = load_records(yaml_file, "train")
    assert [r.path for r in first] == [r.path for r in second]
    assert report1.problems == report2.problems  # kinds included
    assert report1.left_out == report2.left_out and report1.headline() == report2.headline() == HEADLINE
    assert set(_by_name(second)) == broken_outcome[0]
    _assert_same(first, second)
    label = yaml_file.parent / "labels" / "train" / "good.txt"
    label.write_text("1 0.5 0.5 0.5 0.5\n")
    os.utime(label, ns=(1, 1))
    with pytest.raises(AssertionError, match="validation ran"):
        load_records(yaml_file, "train")
    files = list((Path(os.environ["YOLOTR_CACHE"]) / "labels").glob("*.json"))
    assert files and not list(files[0].parent.glob("*.tmp"))


def test_old_label_cache_is_not_used(broken_dataset, broken_outcome, monkeypatch):
    """A cache written under the old rule (bad images kept without their boxes) is revalidated."""
    yaml_file, _ = broken_dataset
    config = load_dataset_config(yaml_file)
    load_records(config, "train")
    file = label_cache.cache_file(config.root, "train", config.splits["train"])
    data = json.loads(file.read_text())
    assert data["version"] == label_cache.CACHE_VERSION >= 2
    keep_all = [[str(yaml_file.parent / "images" / "train" / n), 128, 128, [], []] for n in broken_outcome[1]]
    old = dict(data, version=1, records=data["records"] + keep_all, left_out=[])
    no_left_out = {k: v for k, v in old.items() if k != "left_out"}
    no_left_out.update(version=label_cache.CACHE_VERSION, problems=[p[:4] for p in data["problems"]])
    calls = []
    real = label_check.inspect_image
    monkeypatch.setattr(label_check, "inspect_image", lambda path: calls.append(path) or real(path))
    for stale in (old, no_left_out):
        file.write_text(json.dumps(stale))
        again, _ = load_records(config, "train")
        assert calls, "a stale cache was used"
        assert not set(_by_name(again)) & set(broken_outcome[1])
        calls.clear()


def _coco_set(root: Path) -> dict:
    """Six 64x48 PNGs and an instances JSON with one kind of problem per image."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(1, 7):
        Image.new("RGB", (64, 48), (20 * i, 50, 90)).save(root / "images" / f"im{i}.png")
    good = {"category_id": 1, "bbox": [8, 8, 20, 16]}
    anns = [
        (1, good),
        (2, good),
        (2, {"category_id": 99, "bbox": [8, 8, 20, 16]}),  # unknown category
        (3, {"category_id": 1, "bbox": [1, 2, 3]}),  # malformed bbox
        (4, {"category_id": 1, "bbox": [100, 8, 20, 16]}),  # wholly outside the 64x48 image
        (6, {"category_id": 5, "bbox": [8, 8, 20, 16]}),  # a category not in names: a warning
        (6, good),
        (6, good),  # duplicate: a warning
        (77, good),  # an image_id the JSON does not list
    ]
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 64, "height": 48} for i in range(1, 7)],
        "annotations": [{"id": n, "image_id": i, "iscrowd": 0, **a} for n, (i, a) in enumerate(anns, 1)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}],
    }
    (root / "train.json").write_text(json.dumps(data))
    return {"path": str(root), "train": "train.json", "val": "train.json", "names": ["cat"]}


def test_coco_annotation_errors_leave_their_image_out(tmp_path):
    records, report = load_records(_coco_set(tmp_path), "train", cache=False)
    assert {Path(r.path).name: len(r.boxes) for r in records} == {"im1.png": 1, "im5.png": 0, "im6.png": 1}
    assert {Path(i).name: why for i, why in report.left_out} == {
        "im2.png": "unknown class",
        "im3.png": "malformed line",
        "im4.png": "box outside the image",
    }
    messages = sorted(f"{p.severity}: {p.message}" for p in report.problems)
    assert messages == [
        "error: 1 annotations for unknown image_id 77",
        "error: annotation id 3: unknown category_id 99",
        "error: annotation id 4: bbox must be [x, y, w, h], got [1, 2, 3]",
        "error: annotation id 5: box wholly outside the 64x48 image",
        "warning: annotation id 8: duplicate box dropped",
        "warning: category 'dog' not in names, its boxes skipped",
    ]
    assert report.headline() == (
        "train: 3/6 images usable, 3 left out (1 box outside the image, 1 malformed line, 1 unknown class), "
        "2 boxes, 1 backgrounds, 4 errors, 2 warnings"
    )


def test_voc_errors_leave_their_image_out(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    box = "<bndbox><xmin>{}</xmin><ymin>5</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"
    objects = {
        "good": [("a", box.format(5))],
        "twice": [("a", box.format(5)), ("a", box.format(5))],  # duplicate: a warning
        "badger": [("a", box.format(5)), ("badger", box.format(5))],  # a class not in names: its box skipped
        "text": [("a", box.format("left"))],
        "empty": [("b", box.format(31))],  # xmin 31 xmax 30: VOC's inclusive corners give width 0
        "nan": [("b", box.format("nan"))],
    }
    for stem, objs in {**objects, "noxml": []}.items():
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / f"{stem}.jpg")
        if stem == "noxml":
            continue
        body = "".join(f"<object><name>{n}</name>{b}</object>" for n, b in objs)
        (tmp_path / "annotations" / f"{stem}.xml").write_text(f"<annotation>{body}</annotation>")
    data = {"path": str(tmp_path), "train": "images", "names": ["a", "b"], "format": "voc"}
    records, report = load_records(data, "train", cache=False)
    assert {Path(r.path).stem: len(r.boxes) for r in records} == {"good": 1, "twice": 1, "badger": 1, "noxml": 0}
    assert {Path(i).stem: why for i, why in report.left_out} == {
        "text": "malformed line",
        "empty": "empty box",
        "nan": "NaN or inf",
    }
    assert report.headline().startswith("train: 4/7 images usable, 3 left out (")


def test_voc_difficult_objects_are_left_out(tmp_path):
    """As the package's and YOLOv5's VOC.yaml converters: ``<difficult>1`` objects are not labels."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    box = "<bndbox><xmin>{}</xmin><ymin>5</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "im.jpg")
    body = "".join(
        f"<object><name>a</name><difficult>{d}</difficult>{box.format(x)}</object>"
        for d, x in (("0", 2), ("1", 3), (" 1 ", 4), ("0.0", 6), ("false", 7), ("1.0", 8), ("True", 9))
    )
    body += f"<object><name>a</name>{box.format(5)}</object>"  # no <difficult>: kept
    (tmp_path / "annotations" / "im.xml").write_text(f"<annotation>{body}</annotation>")
    data = {"path": str(tmp_path), "train": "images", "names": ["a"], "format": "voc"}
    (record,), report = load_records(data, "train", cache=False)
    assert sorted(record.boxes[:, 0].tolist()) == [1.0, 4.0, 5.0, 6.0]  # xmin - 1 of the objects kept
    assert not report.problems


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


def test_label_problems_say_what_they_look_like(tmp_path):
    """Commas for spaces, pixel coordinates, and an image the label has but in a format not read (or a
    broken link): each problem says so, beside where it is."""
    good = "0 0.5 0.5 0.2 0.2\n"
    labels = {"a": "0,0.5,0.5,0.2,0.2\n", "b": "1 320 200 50 60\n", "c": good, "g": good}
    root = _write_set(tmp_path, labels)
    (root / "labels" / "d.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "d.gif").write_bytes(b"GIF89a")
    (root / "labels" / "e.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "e.jpg").symlink_to(root / "gone.jpg")
    (root / "labels" / "c.txt").rename(root / "c-real.txt")
    (root / "labels" / "c.txt").symlink_to(root / "gone.txt")  # was read as "no label": a background
    (root / "labels" / "f.txt").write_text("0 -250 0.5 0.2 0.2\n")
    (root / "images" / "f.png").write_bytes((root / "images" / "a.png").read_bytes())
    records, report = load_records(root / "d.yaml", "train", cache=False)
    problems = {(Path(p.file).name, p.line): p.message for p in report.problems}
    assert "the values are separated by commas, YOLO labels by spaces" in problems["a.txt", 1]
    assert "coordinates up to 320" in problems["b.txt", 1] and "they look like pixels" in problems["b.txt", 1]
    assert "d.gif: .gif images are not read" in problems["d.txt", None]
    assert "e.jpg is a broken link" in problems["e.txt", None]
    assert "the label file is a broken link" in problems["c.txt", None]
    assert "c.png" not in {Path(r.path).name for r in records}
    assert "coordinates up to -250 in" in problems["f.txt", 1]  # said "up to 0.5", the largest signed value


def test_a_misspelt_split_is_refused_with_the_split_it_resembles(tmp_path):
    root = _write_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"})
    (root / "d.yaml").write_text((root / "d.yaml").read_text() + "test: images\n")
    with pytest.raises(DataError, match=r"d.yaml: no 'tset' key; did you mean test\?"):
        load_records(root / "d.yaml", "tset", cache=False)
    with pytest.raises(DataError, match=r"no 'holdout' key: add the holdout images to the dataset YAML"):
        load_records(root / "d.yaml", "holdout", cache=False)


def test_a_label_cache_that_cannot_be_written_leaves_the_old_one_and_no_partial_file(tmp_path, monkeypatch):
    from yolotr import files

    file = tmp_path / "labels" / "train.json"
    record = ImageRecord("a.jpg", 4, 6, np.zeros((1, 4), np.float32), np.zeros(1, np.int64))
    label_cache.write_cache(file, "old", label_cache.CachedSplit([record], [], [], 1))
    before = file.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    label_cache.write_cache(file, "new", label_cache.CachedSplit([], [], [], 0))  # skipped, not raised
    assert file.read_bytes() == before and sorted(p.name for p in file.parent.iterdir()) == ["train.json"]
    assert label_cache.read_cache(file, "old").records[0].path == "a.jpg"
