"""``fraction`` and ``classes``: the training subset the ``ultralytics`` package's settings of the same names give
(its ``YOLODataset`` built on the same folder, live), and their refusals."""

from __future__ import annotations

import numpy as np
import pytest

from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.subset import check_class_ids, first_fraction, keep_classes, training_subset
from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.config import resolve_config
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory):
    """15 training images (an odd count: 15 * 0.3 = 4.5 rounds to 4 as Python's round does, half to even)."""
    yaml_file = make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "set", n_train=15, n_val=4, imgsz=64, seed=3)
    return yaml_file, load_records(yaml_file, "train", cache=False)[0]


@pytest.mark.parametrize(("fraction", "classes"), [(0.3, [0, 2]), (0.5, None), (1.0, [1]), (0.01, None)])
def test_the_subset_is_the_packages(shapes_set, fraction, classes):
    """The package's ``YOLODataset(fraction=..., classes=...)`` on the same folder: the same images and, image by
    image, the same objects (class ids not renumbered, images left without objects kept)."""
    pytest.importorskip("ultralytics")
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    yaml_file, records = shapes_set
    folder = yaml_file.parent / "images" / "train"
    names = {0: "circle", 1: "square", 2: "triangle"}
    theirs = YOLODataset(
        img_path=str(folder), imgsz=64, augment=False, hyp=get_cfg(), data={"names": names, "channels": 3},
        task="detect", fraction=fraction, classes=classes,
    )  # fmt: skip
    ours = training_subset(records, "train", fraction, classes)
    assert sorted(r.path for r in ours) == theirs.im_files
    by_path = {r.path: r for r in ours}
    for path, label in zip(theirs.im_files, theirs.labels):
        record = by_path[path]
        assert record.classes.tolist() == label["cls"].ravel().astype(int).tolist()
        xywhn = label["bboxes"]
        xyxy = np.c_[xywhn[:, :2] - xywhn[:, 2:] / 2, xywhn[:, :2] + xywhn[:, 2:] / 2] * [64, 64, 64, 64]
        np.testing.assert_allclose(record.boxes, xyxy, atol=1e-3)


def test_fraction_takes_the_first_by_path_and_keeps_the_records_order():
    records = [ImageRecord(f"/d/{name}.jpg", 8, 8) for name in "dbeac"]
    assert [r.path[3] for r in first_fraction(records, 0.6)] == ["b", "a", "c"]  # a, b, c by path; in given order
    assert [r is records[3] for r in first_fraction(records, 0.01)] == [True]  # at least one image: a
    assert first_fraction(records, 1.0) is records
    assert training_subset(records, "val", 0.2, None) is records  # validation keeps every image


def test_classes_keep_polygons_with_their_objects():
    square = np.float32([[0, 0], [4, 0], [4, 4], [0, 4]])
    record = ImageRecord(
        "/d/a.jpg", 16, 16, np.float32([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]]), np.int64([0, 1, 2]),
        [square, square + 1, np.zeros((0, 2), np.float32)],
    )  # fmt: skip
    (kept,) = keep_classes([record], [2, 1])
    assert kept.classes.tolist() == [1, 2] and kept.boxes.tolist() == [[1, 1, 5, 5], [2, 2, 6, 6]]
    assert [s.tolist() for s in kept.segments] == [(square + 1).tolist(), []]
    assert keep_classes([record], [3])[0].classes.tolist() == []  # a background image now, still there


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"fraction": 0}, "fraction"), ({"fraction": 1.5}, "fraction"), ({"fraction": "half"}, "fraction"),
     ({"classes": -1}, "classes"), ({"classes": [0, 1.5]}, "classes"), ({"classes": ["dog"]}, "classes"),
     ({"classes": []}, "classes"), ({"classes": True}, "classes")],
)  # fmt: skip
def test_values_outside_the_settings_are_refused_at_the_key(settings, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        resolve_config(settings)


def test_class_ids_are_checked_against_the_names():
    assert resolve_config({"classes": 2})["classes"] == [2]
    assert resolve_config({"classes": [2, 0, 2], "fraction": 0.5})["classes"] == [2, 0]
    check_class_ids([0, 2], ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"'classes' has class id 3, but the dataset has 3 classes \(0 to 2: 0 a"):
        check_class_ids([0, 3], ["a", "b", "c"])
