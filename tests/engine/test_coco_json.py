"""COCO results in the dataset's own ids (issue 26): ``val --save-json`` scored by faster-coco-eval gives
yolotr's own mAP; predict's ``--save-json`` uses the same ids; ``--save-txt`` writes the confidence only
with ``--save-conf``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.conftest import shared_path
from yolotr import YOLO
from yolotr.cli import main
from yolotr.data.coco import COCO_NAMES
from yolotr.data.result_ids import COCO80_TO_91, result_ids
from yolotr.data.sources import load_records

N_IMAGES = 6
FIRST_ID = 1000
BEAR = COCO_NAMES.index("bear")


def category_id(c: int) -> int:
    """Category ids of the test set: 17, 20, 23, ... (not 0..nc-1, not COCO's)."""
    return 17 + 3 * c


@pytest.fixture(scope="module")
def official():
    return YOLO(shared_path("weights", "yolov5n.pt"), verbose=False)


@pytest.fixture(scope="module")
def coco_raccoons(tmp_path_factory) -> Path:
    """A COCO-format set of the first raccoon photos (image ids from 1000) whose raccoons are 'bear' (which
    the COCO-trained yolov5n finds in them), under the 80 COCO names with ids 17, 20, 23, ... listed out of
    order; ``names`` come from the JSON. Returns the dataset YAML."""
    root = shared_path("data", "raccoon")
    voc = {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["raccoon"], "format": "voc"}
    records = load_records(voc, "val", log=False)[0][:N_IMAGES]
    tmp = tmp_path_factory.mktemp("coco_raccoons")
    images, annotations = [], []
    for k, r in enumerate(records):
        images.append({"id": FIRST_ID + k, "file_name": Path(r.path).name, "height": r.height, "width": r.width})
        for x1, y1, x2, y2 in r.boxes.tolist():
            annotations.append({
                "id": len(annotations) + 1, "image_id": FIRST_ID + k, "category_id": category_id(BEAR),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": category_id(c), "name": n} for c, n in reversed(list(enumerate(COCO_NAMES)))]
    (tmp / "instances_val.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (tmp / "data.yaml").write_text(f"path: {tmp}\nimages: {root / 'images'}\nval: instances_val.json\n")
    return tmp / "data.yaml"


def test_val_save_json_has_the_dataset_ids_and_scores_as_our_validator(official, coco_raccoons, tmp_path):
    result = official.val(coco_raccoons, imgsz=256, batch_size=N_IMAGES, save_json=True, save_dir=tmp_path)
    assert result.coco_json == tmp_path / "predictions_coco.json"
    rows = json.loads(result.coco_json.read_text())
    assert {r["image_id"] for r in rows} <= set(range(FIRST_ID, FIRST_ID + N_IMAGES))
    assert {r["category_id"] for r in rows} <= {category_id(c) for c in range(80)}
    assert any(r["category_id"] == category_id(BEAR) for r in rows)
    assert result.map50 > 0.3  # a real score to agree on, not two zeros
    assert result.coco_map == pytest.approx((result.map50_95, result.map50), abs=2e-4)


def test_yolotr_val_save_json_logs_the_coco_score(official, coco_raccoons, tmp_path, caplog):
    args = ["val", "--model", str(shared_path("weights", "yolov5n.pt")), "--data", str(coco_raccoons)]
    args += ["--imgsz", "256", "--batch", str(N_IMAGES), "--save-json", "--save-dir", str(tmp_path)]
    with caplog.at_level(logging.INFO, logger="yolotr"):
        assert main(args) == 0
    assert (tmp_path / "predictions_coco.json").is_file()
    assert "faster-coco-eval against" in caplog.text and "instances_val.json: mAP50-95 0." in caplog.text


def test_predict_save_json_ids(official, coco_raccoons, tmp_path):
    """With the dataset, the dataset's ids; without it, COCO's 91-class ids for the 80 COCO names, and a
    numeric file name as the image id (as YOLOv5 writes them)."""
    images = shared_path("data", "raccoon", "images")
    listed = json.loads((coco_raccoons.parent / "instances_val.json").read_text())["images"]
    files = [str(images / im["file_name"]) for im in listed[:2]]
    ids = result_ids(list(COCO_NAMES), coco_raccoons)
    expected = {ids.image_id(f) for f in files}
    assert expected <= set(range(FIRST_ID, FIRST_ID + N_IMAGES)) and len(expected) == 2
    results = official.predict(files, imgsz=256, save_json=True, data=coco_raccoons, project=tmp_path, name="data")
    rows = json.loads((tmp_path / "data" / "predictions_coco.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in rows] == [
        (ids.image_id(f), category_id(int(c))) for f, res in zip(files, results) for c in res.boxes.cls
    ]
    assert {r["image_id"] for r in rows} == expected

    numeric = tmp_path / "000000397133.jpg"
    shutil.copy(files[1], numeric)
    results = official.predict([files[1], str(numeric)], imgsz=256, save_json=True, project=tmp_path, name="plain")
    rows = json.loads((tmp_path / "plain" / "predictions_coco.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in rows] == [
        (i, COCO80_TO_91[int(c)]) for i, res in zip((Path(files[1]).stem, 397133), results) for c in res.boxes.cls
    ]
    assert COCO80_TO_91[BEAR] == 23 and len(rows) > 1


def test_predict_save_json_gives_same_stem_images_the_ids_of_their_other_outputs(official, tmp_path):
    """bus.jpg and bus.png of one folder were drawn as bus and bus_2, but every detection of both had image_id
    "bus" in predictions_coco.json."""
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_path("images", "bus.jpg"), folder / "bus.jpg")
    cv2.imwrite(str(folder / "bus.png"), cv2.imread(str(shared_path("images", "zidane.jpg"))))
    results = official.predict(str(folder), imgsz=256, save_json=True, project=tmp_path, name="run")
    rows = json.loads((tmp_path / "run" / "predictions_coco.json").read_text())
    counts = {stem: sum(r["image_id"] == stem for r in rows) for stem in ("bus", "bus_2")}
    assert sorted(counts.values()) == sorted(len(r.boxes) for r in results) and min(counts.values()) > 0


def test_result_id_rules():
    coco80 = result_ids(list(COCO_NAMES))
    assert coco80.rule == "coco80" and len(COCO80_TO_91) == 80 == len(set(COCO80_TO_91))
    assert [coco80.category_id(c) for c in (0, 11, 79)] == [1, 13, 90]
    assert coco80.image_id("val2017/000000000139.jpg") == 139 and coco80.image_id("a/bus.jpg") == "bus"
    plain = result_ids(["a", "b"])
    assert plain.rule == "index" and plain.category_id(1) == 1
    assert plain.image_id("x/0042.jpg") == "0042" and plain.image_id("clip.mp4", 3) == "clip_4"  # frames from 1 in ids
    (row,) = plain.entries("x/0042.jpg", None, [[10.0, 20.0, 40.5, 60.25, 0.9, 1.0]])
    assert row == {"image_id": "0042", "category_id": 1, "bbox": [10.0, 20.0, 30.5, 40.25], "score": 0.9}


@pytest.mark.parametrize("save_conf", [False, True])
def test_save_txt_writes_the_confidence_only_with_save_conf(official, tmp_path, save_conf):
    bus = shared_path("images", "bus.jpg")
    args = ["predict", "--model", str(shared_path("weights", "yolov5n.pt")), "--source", str(bus)]
    args += ["--imgsz", "256", "--save-txt", "--project", str(tmp_path), "--name", "p"]
    assert main(args + (["--save-conf"] if save_conf else [])) == 0
    lines = (tmp_path / "p" / "labels" / "bus.txt").read_text().splitlines()
    assert lines and {len(line.split()) for line in lines} == {6 if save_conf else 5}


def test_string_image_ids_score_as_integer_ones(official, coco_raccoons, tmp_path):
    """COCO allows string ids (pycocotools reads them); faster-coco-eval does not, so they are renumbered
    for scoring: the same score as the integer-id set, and the results file keeps the strings."""
    instances = json.loads((coco_raccoons.parent / "instances_val.json").read_text())
    for entry in instances["images"]:
        entry["id"] = f"img_{entry['id']}"
    for entry in instances["annotations"]:
        entry["image_id"] = f"img_{entry['image_id']}"
    (tmp_path / "instances_val.json").write_text(json.dumps(instances))
    data = tmp_path / "data.yaml"
    data.write_text(coco_raccoons.read_text().replace(str(coco_raccoons.parent), str(tmp_path)))
    kwargs = {"imgsz": 256, "batch_size": N_IMAGES, "save_json": True, "verbose": False}
    strings = official.val(data, save_dir=tmp_path / "strings", **kwargs)
    integers = official.val(coco_raccoons, save_dir=tmp_path / "integers", **kwargs)
    assert strings.coco_map == pytest.approx(integers.coco_map, abs=1e-9) and integers.coco_map[1] > 0.3
    assert all(r["image_id"].startswith("img_") for r in json.loads(strings.coco_json.read_text()))


def test_a_class_without_a_category_gets_an_id_no_category_has(coco_raccoons, caplog):
    """A class index as the id of a class the JSON lacks could be another class's category id (a triangle
    scored as a circle): it gets an id above every category's instead, and the warning names it."""
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        ids = result_ids(["bear", "unicorn"], coco_raccoons)
    top = max(category_id(c) for c in range(80))
    assert ids.category_id(0) == category_id(BEAR) and ids.category_id(1) == top + 1
    assert "['unicorn'] have no category" in caplog.text and f"ids [{top + 1}]" in caplog.text


def test_single_cls_save_json_scores_every_category_as_one(official, coco_raccoons, tmp_path):
    """A single-class validation of the 80-class model: its one class ('item') has no category of the 80 in the
    JSON, so its results were scored against none (0, 0). Every annotation is its class, as the validator reads
    them: scored whatever the category (COCO's useCats 0), faster-coco-eval gives yolotr's own single-class mAP."""
    result = official.val(
        coco_raccoons, imgsz=256, batch_size=N_IMAGES, save_json=True, save_dir=tmp_path, single_cls=True
    )
    assert result.map50 > 0.3 and [c.name for c in result.per_class] == ["item"]
    assert result.coco_map == pytest.approx((result.map50_95, result.map50), abs=2e-4)
