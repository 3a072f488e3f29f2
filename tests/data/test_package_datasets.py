"""Datasets as the ultralytics package's users bring them: pose labels in a detection set, COCO JSONs whose image
sizes are not the photos', Roboflow's exported YAMLs, hidden files in image folders, and a JSON named as a split of
a YOLO set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolotr.data.sources import load_dataset_config, load_records, scan_split
from yolotr.errors import DataError


def _image(path: Path, w: int = 200, h: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 30)).save(path)
    return path


def _pose_row(keypoints: int) -> str:
    """A box (centre 0.5, 0.55, size 0.3 x 0.4) and keypoints spread wider than it, (x, y, visibility) each."""
    points = " ".join(f"{0.1 + 0.8 * k / keypoints:.4f} 0.1000 2" for k in range(keypoints))
    return f"0 0.5 0.55 0.3 0.4 {points}\n"


@pytest.mark.parametrize("keypoints", [12, 17])
def test_pose_labels_give_their_box_with_kpt_shape(tmp_path, keypoints):
    """Tiger-pose (12 x 3: 41 columns, odd, which alone reads as a polygon) and COCO-pose (17 x 3: 56 columns, an
    error alone): with ``kpt_shape`` the row's first five columns are its box, as in the package."""
    _image(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(_pose_row(keypoints))
    data = {"path": str(tmp_path), "train": "images", "names": ["tiger"], "kpt_shape": [keypoints, 3]}
    records, report = load_records(data, "train", cache=False, log=False)
    np.testing.assert_allclose(records[0].boxes, [[70, 35, 130, 75]], atol=1e-3)
    assert not report.problems
    if keypoints == 12:  # without kpt_shape the 41 columns are a polygon over every value: another box
        without = {k: v for k, v in data.items() if k != "kpt_shape"}
        records, _ = load_records(without, "train", cache=False, log=False)
        assert not np.allclose(records[0].boxes, [[70, 35, 130, 75]], atol=1)


@pytest.mark.parametrize("bad", [[17], [17, 4], "17, 3", [0, 3], [17.0, 3]])
def test_a_malformed_kpt_shape_is_refused(tmp_path, bad):
    with pytest.raises(DataError, match="kpt_shape"):
        load_dataset_config({"path": str(tmp_path), "train": "images", "names": ["a"], "kpt_shape": bad})


def _coco(tmp_path: Path, width: int, height: int, boxes: list[list[float]]) -> dict:
    _image(tmp_path / "images" / "a.jpg")  # the photo is 200 x 100
    doc = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": width, "height": height}],
        "annotations": [
            {"id": i + 1, "image_id": 7, "category_id": 3, "bbox": box, "iscrowd": 0} for i, box in enumerate(boxes)
        ],
        "categories": [{"id": 3, "name": "raccoon"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    return {"path": str(tmp_path), "train": "instances.json", "names": ["raccoon"]}


def test_coco_boxes_are_scaled_from_the_json_size_to_the_photo(tmp_path):
    """The JSON says 100 x 50 (annotated before the photo was doubled): its boxes are scaled by 2, with a warning,
    as the package's converter does by normalising with the JSON's width and height."""
    records, report = load_records(_coco(tmp_path, 100, 50, [[10, 5, 20, 10]]), "train", cache=False, log=False)
    np.testing.assert_allclose(records[0].boxes, [[20, 10, 60, 30]])
    assert any("resized?" in p.message and "100x50" in p.message for p in report.problems)


def test_coco_boxes_are_kept_when_the_json_size_is_the_photo(tmp_path):
    records, report = load_records(_coco(tmp_path, 200, 100, [[10, 5, 20, 10]]), "train", cache=False, log=False)
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 15]])
    assert not report.problems


def test_a_zero_size_coco_box_is_skipped_and_its_image_kept(tmp_path):
    data = _coco(tmp_path, 200, 100, [[10, 5, 20, 10], [50, 50, 0, 10]])
    records, report = load_records(data, "train", cache=False, log=False)
    np.testing.assert_allclose(records[0].boxes, [[10, 5, 30, 15]])
    assert [p.severity for p in report.problems] == ["warning"]
    assert "annotation id 2" in report.problems[0].message


def test_a_roboflow_export_yaml_finds_its_splits(tmp_path):
    """Roboflow writes ``train: ../train/images`` in a data.yaml that sits in the dataset's folder, without
    ``path``; the package reads ``train/images`` when ``../train/images`` is not there, and so does yolotr."""
    for split in ("train", "valid"):
        _image(tmp_path / "set" / split / "images" / "a.jpg")
        (tmp_path / "set" / split / "labels").mkdir()
        (tmp_path / "set" / split / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "set" / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['raccoon']\nroboflow:\n  workspace: w\n"
    )
    config = load_dataset_config(tmp_path / "set" / "data.yaml")
    assert config.splits["val"] == [str(tmp_path / "set" / "valid" / "images")]
    records, _ = load_records(config, "train", cache=False, log=False)
    assert len(records) == 1 and len(records[0].boxes) == 1


def test_a_parent_split_that_exists_is_still_the_parent(tmp_path):
    _image(tmp_path / "train" / "images" / "a.jpg")
    _image(tmp_path / "set" / "train" / "images" / "b.jpg")
    config = load_dataset_config({"path": str(tmp_path / "set"), "train": "../train/images", "names": ["a"]})
    assert [Path(e).resolve() for e in config.splits["train"]] == [(tmp_path / "train" / "images").resolve()]


def test_hidden_files_and_folders_are_not_images(tmp_path):
    """A Jupyter checkpoint copy and a macOS ``._`` file beside the photos: neither is trained (the copy would be a
    background without labels, the ``._`` file an unreadable image)."""
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    (tmp_path / "images" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    records, report = scan_split({"path": str(tmp_path), "train": "images", "names": ["a"]}, "train", cache=False)
    assert [Path(r.path).name for r in records] == ["a.jpg"]
    assert report.n_images == 1 and not report.errors


def test_a_json_split_of_a_yolo_set_names_format_coco(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    (tmp_path / "instances.json").write_text('{"images": [], "annotations": [], "categories": []}')
    data = {"path": str(tmp_path), "train": "instances.json", "val": "images", "names": ["a"]}
    with pytest.raises(DataError, match="format: coco"):
        load_records(data, "train", cache=False, log=False)


def test_an_upper_case_json_is_read_as_coco(tmp_path):
    data = _coco(tmp_path, 200, 100, [[10, 5, 20, 10]])
    (tmp_path / "instances.json").rename(tmp_path / "INSTANCES.JSON")
    data["train"] = "INSTANCES.JSON"
    assert load_dataset_config(data).format == "coco"
    records, _ = load_records(data, "train", cache=False, log=False)
    assert len(records[0].boxes) == 1


def test_the_packages_channels_key(tmp_path, caplog):
    base = {"path": str(tmp_path), "train": "images", "names": ["a"]}
    assert load_dataset_config({**base, "channels": 3}).channels == 3
    with caplog.at_level("WARNING", logger="yolotr"):
        assert load_dataset_config({**base, "channels": 1}).channels == 1
    assert "reads every image as 3-channel RGB" in caplog.text
    with pytest.raises(DataError, match="'channels': 10.*not multispectral"):
        load_dataset_config({**base, "channels": 10})


def test_a_parent_entry_goes_through_a_symlinked_dataset_folder(tmp_path):
    """``../other`` from a dataset folder that is a link: the OS resolves ``..`` from the link's target."""
    _image(tmp_path / "real" / "other" / "images" / "a.jpg")
    (tmp_path / "real" / "ds").mkdir()
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "ds").symlink_to(tmp_path / "real" / "ds")
    (tmp_path / "links" / "ds" / "data.yaml").write_text("train: ../other/images\nnames: [a]\n")
    records, _ = load_records(tmp_path / "links" / "ds" / "data.yaml", "train", cache=False, log=False)
    assert len(records) == 1
