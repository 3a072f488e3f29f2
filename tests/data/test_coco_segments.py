"""COCO ``segmentation`` polygons: read as the object's polygon, as the package's ``convert_coco(use_segments=True)``
writes them and its loader trains them (the box the polygon's extent), multi-part polygons and RLE masks joined into
one as its ``merge_multi_segment`` joins them, crowd annotations skipped, and malformed ones reported by file,
annotation id and key."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolotr.data.coco_segments import decode_rle, join_parts
from yolotr.data.dataset import DetectionDataset, default_hyp
from yolotr.data.sources import load_records

W, H = 200, 100
TRIANGLE = [20, 10, 100, 10, 20, 90]
THREE_PARTS = [[120, 10, 140, 10, 140, 30, 120, 30], [150, 40, 170, 40, 170, 60], [130, 70, 150, 70, 140, 90]]
# joined by hand: the first part round from its point closest to the second, the second from its entry (150, 40)
# to its exit to the third (170, 60), the third round from its entry, and the second back from its exit
JOINED = [(140, 30), (120, 30), (120, 10), (140, 10), (140, 30), (150, 40), (170, 40), (170, 60)]
JOINED += [(150, 70), (140, 90), (130, 70), (150, 70), (170, 60), (150, 40)]


def _runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a ``(h, w)`` 0/1 mask: runs of 0 then 1 alternately, column by column."""
    flat = mask.T.ravel()
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [len(flat)]])).tolist()
    return [0, *runs] if flat[0] else runs


def _rle_string(mask: np.ndarray) -> str:
    """COCO's compressed RLE string of a ``(h, w)`` 0/1 mask (each run in 5-bit groups, from the third on as the
    difference to the run two before)."""
    runs, out = _runs(mask), []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(48 + (c | 0x20 if more else c)))
    return "".join(out)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """A rectangle, and two blobs (one object in two pieces), as ``(H, W)`` uint8 masks."""
    rect = np.zeros((H, W), np.uint8)
    rect[20:40, 50:90] = 1
    blobs = np.zeros((H, W), np.uint8)
    blobs[60:80, 20:40] = 1
    cv2.circle(blobs, (150, 50), 15, 1, -1)
    return rect, blobs


def _annotations() -> list[dict]:
    rect, blobs = _masks()

    def ann(i, image, cat, bbox, **kw):
        return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, "iscrowd": 0, **kw}

    return [
        ann(1, 1, 1, [20, 10, 80, 80], segmentation=[TRIANGLE]),
        ann(2, 1, 2, [120, 10, 50, 80], segmentation=THREE_PARTS),
        ann(3, 1, 1, [0, 0, 60, 40], segmentation={"size": [H, W], "counts": _runs(rect)}, iscrowd=1),
        ann(4, 2, 1, [50, 20, 40, 20], segmentation={"size": [H, W], "counts": _rle_string(rect)}),
        ann(5, 2, 2, [20, 35, 146, 45], segmentation={"size": [H, W], "counts": _runs(blobs)}),
        ann(6, 2, 1, [10, 10, 30, 20]),
        ann(7, 2, 2, [5, 60, 10, 30], segmentation=[]),
    ]


def _write(root: Path, annotations: list[dict]) -> dict:
    """Two black ``W x H`` images and an instances JSON of ``annotations``: the dataset dict."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(root / "images" / name), np.zeros((H, W, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
        + [{"id": 2, "file_name": "b.png", "width": W, "height": H}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return {"path": str(root), "train": "annotations/instances_train.json", "names": ["cat", "dog"]}


def _records(data: dict):
    records, report = load_records(data, "train", cache=False, log=False)
    return {Path(r.path).name: r for r in records}, report


def test_polygons_by_hand(tmp_path):
    """The triangle as given, three parts joined as worked out by hand, the rectangle mask's outline (the corner
    pixels, as OpenCV traces it: its box a pixel short of the bbox on each far side, as the package trains it),
    the crowd annotation skipped, and the objects without a polygon boxes."""
    records, report = _records(_write(tmp_path, _annotations()))
    assert report.problems == []
    a, b = records["a.png"], records["b.png"]
    assert a.classes.tolist() == [0, 1] and b.classes.tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(a.segments[0], np.float32(TRIANGLE).reshape(-1, 2))
    np.testing.assert_array_equal(a.boxes[0], [20, 10, 100, 90])
    np.testing.assert_array_equal(a.segments[1], np.float32(JOINED))
    np.testing.assert_array_equal(a.boxes[1], [120, 10, 170, 90])
    assert sorted(map(tuple, b.segments[0].tolist())) == [(50, 20), (50, 39), (89, 20), (89, 39)]
    np.testing.assert_array_equal(b.boxes[0], [50, 20, 89, 39])
    assert len(b.segments[1]) > 10
    assert [len(s) for s in b.segments[2:]] == [0, 0]
    np.testing.assert_array_equal(b.boxes[2:], [[10, 10, 40, 30], [5, 60, 15, 90]])


def test_join_parts_and_decode_rle_by_hand():
    parts = [np.float64(p).reshape(-1, 2) for p in THREE_PARTS]
    np.testing.assert_array_equal(join_parts(parts), JOINED)
    np.testing.assert_array_equal(join_parts(parts[:2]), JOINED[:5] + [(150, 40), (170, 40), (170, 60), (150, 40)])
    rect, blobs = _masks()
    for mask in (rect, blobs):
        np.testing.assert_array_equal(decode_rle(_runs(mask), H, W), mask)
        np.testing.assert_array_equal(decode_rle(_rle_string(mask), H, W), mask)
    assert decode_rle("0", 0, 0).shape == (0, 0)


def test_rle_strings_are_coco_s(tmp_path):
    """The compressed strings decode as faster-coco-eval (a dependency; the package decodes RLE with it) does."""
    mask = pytest.importorskip("faster_coco_eval.core.mask")
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        m = np.asfortranarray((rng.random((h, w)) < rng.random()).astype(np.uint8))
        counts = mask.encode(m)["counts"]
        np.testing.assert_array_equal(decode_rle(counts.decode(), h, w), m)
        assert _rle_string(m) == counts.decode()


def test_the_same_polygons_as_the_package_s_converted_labels(tmp_path):
    """``convert_coco(use_segments=True)`` of the same JSON, read back as YOLO polygon rows by yolotr: every object's
    polygon and box the same (an object without a segmentation aside: the package writes its bbox as a 4-point
    polygon, which yolotr keeps as the box)."""
    converter = pytest.importorskip("ultralytics.data.converter")
    data = _write(tmp_path / "coco", _annotations())
    converter.convert_coco(
        str(tmp_path / "coco" / "annotations"), str(tmp_path / "yolo"), use_segments=True, cls91to80=False
    )
    shutil.copytree(tmp_path / "coco" / "images", tmp_path / "yolo" / "images" / "train", dirs_exist_ok=True)
    theirs, _ = _records({"path": str(tmp_path / "yolo"), "train": "images/train", "names": ["cat", "dog"]})
    ours, _ = _records(data)
    assert sorted(theirs) == sorted(ours) == ["a.png", "b.png"]
    compared = 0
    for name, record in ours.items():
        other = theirs[name]
        np.testing.assert_array_equal(record.classes, other.classes)
        np.testing.assert_allclose(record.boxes, other.boxes, atol=1e-4)
        for box, mine, package in zip(record.boxes, record.segments, other.segments):
            if len(mine):
                np.testing.assert_array_equal(mine, package)
                compared += 1
            else:  # the bbox as a polygon: the same box
                x1, y1, x2, y2 = box.tolist()
                np.testing.assert_allclose(package, [[x1, y1], [x2, y1], [x2, y2], [x1, y2]], atol=1e-4)
    assert compared == 4


def test_a_rotated_thin_coco_object_gets_the_box_of_its_mask(tmp_path):
    """A thin bar along the diagonal, drawn white into its image, rotated by up to 30 degrees: the item's box is the
    box of the bar's pixels in the augmented image; as a box (no segmentation) it is the rotated rectangle's."""
    (tmp_path / "images").mkdir()
    bar = np.float32([[25.6, 32], [32, 25.6], [102.4, 96], [96, 102.4]])
    image = np.zeros((128, 128, 3), np.uint8)
    cv2.fillPoly(image, [np.round(bar).astype(np.int32)], (255, 255, 255))
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    x1, y1 = bar.min(0).tolist()
    x2, y2 = bar.max(0).tolist()
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0}]
    hyp = {**default_hyp(), "mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "degrees": 30.0}
    hyp.update(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, shear=0.0, perspective=0.0)
    ious = {}
    for name, segmentation in (("polygon", [bar.ravel().tolist()]), ("box", None)):
        data = {"images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 128}]}
        data["annotations"] = [{**annotations[0], **({"segmentation": segmentation} if segmentation else {})}]
        data["categories"] = [{"id": 1, "name": "bar"}]
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        records, _ = load_records({"path": str(tmp_path), "train": f"{name}.json", "names": ["bar"]}, cache=False)
        assert [len(s) for s in records[0].segments] == ([4] if segmentation else [])
        ious[name] = []
        for seed in range(6):
            img, labels = DetectionDataset(records, imgsz=128, augment=True, hyp=hyp, seed=seed)[0][:2]
            ys, xs = np.nonzero(img.numpy()[0] > 200)
            drawn = np.float32([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            cx, cy, w, h = (labels[0, 2:].numpy() * 128).tolist()
            ious[name].append(_iou([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], drawn))
    assert min(ious["polygon"]) > 0.9, ious  # measured: 0.957 to 0.974
    assert np.mean(ious["box"]) < np.mean(ious["polygon"]) - 0.3, ious  # measured: a mean of 0.48


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


BAD = [
    ([[10, 10, 50, 10, 50]], "error", r"segmentation\[0\]: 5 coordinates, an odd number: expected x, y pairs"),
    ([[10, "a", 50, 10, 50, 50]], "error", r"segmentation\[0\]: non-numeric coordinate 'a'"),
    ([[10, None, 50, 10, 50, 50]], "error", r"segmentation\[0\]: non-numeric coordinate None"),
    ([[10, True, 50, 10, 50, 50]], "error", r"segmentation\[0\]: non-numeric coordinate True"),
    ([[10, 10, 50, [10], 50, 50]], "error", r"segmentation\[0\]: non-numeric coordinate \[10\]"),
    ([[10, float("nan"), 50, 10, 50, 50]], "error", r"segmentation\[0\]: NaN or inf coordinate"),
    ([TRIANGLE, [10, 10, 50, float("inf")]], "error", r"segmentation\[1\]: NaN or inf coordinate"),
    ([5, 6], "error", r"segmentation\[0\] must be a list of x, y coordinates, got 5"),
    ("abc", "error", r"segmentation must be a list of polygons .* or an RLE mask, got 'abc'"),
    ({"counts": [5]}, "error", r"segmentation: an RLE mask needs 'size' \[height, width\], got None"),
    (
        {"size": [H, W], "counts": [5, 5]},
        "error",
        r"segmentation: RLE 'counts' cover 10 pixels, the 100x200 mask 20000",
    ),
    ({"size": [H, W], "counts": [-5, 20005]}, "error", r"segmentation: RLE 'counts' has a negative run length -5"),
    ({"size": [H, W], "counts": "a"}, "error", r"segmentation: RLE 'counts' string cut short"),
    ({"size": [H, W], "counts": "0 1"}, "error", r"segmentation: RLE 'counts' has ' ', not a COCO RLE code"),
    ({"size": [H, W], "counts": 7}, "error", r"segmentation: RLE 'counts' must be a list of run lengths or a string"),
    ([[10, 10, 50, 10]], "warning", r"segmentation has no polygon of 3 points: used as its bbox"),
    ({"size": [50, 100], "counts": [5000]}, "warning", r"segmentation: RLE mask of 100x50, the image 200x100: used as"),
    ({"size": [H, W], "counts": [H * W]}, "warning", r"segmentation: RLE mask with no outline of 3 points: used as"),
    ([[10, 10, 50, 10, 30, 10]], "warning", r"segmentation of zero width or height: used as its bbox"),
]


@pytest.mark.parametrize("segmentation, severity, match", BAD)
def test_a_malformed_segmentation_names_the_file_annotation_and_key(tmp_path, segmentation, severity, match):
    """An error leaves the image out (as a malformed bbox does), a warning keeps the object as its bbox; never a
    traceback."""
    bad = {"id": 17, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "segmentation": segmentation}
    good = {"id": 18, "image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 40], "segmentation": [TRIANGLE]}
    records, report = _records(_write(tmp_path, [bad, good]))
    found = [p for p in report.problems if p.severity == severity]
    assert found, report.problems
    text = "\n".join(str(p) for p in found)
    assert all("instances_train.json" in p.file and "annotation id 17: " in p.message for p in found), text
    assert re.search(match, text), text
    if severity == "error":
        assert sorted(records) == ["b.png"]
    else:
        assert sorted(records) == ["a.png", "b.png"] and records["a.png"].segments == []
        np.testing.assert_array_equal(records["a.png"].boxes, [[10, 10, 50, 50]])


def test_a_part_of_fewer_than_3_points_is_skipped_with_one_warning(tmp_path):
    """Beside a usable part, it is skipped and named; alone, the object is its bbox with one warning, not two."""
    short = {"id": 17, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "segmentation": [[10, 10, 50, 10]]}
    mixed = {"id": 18, "image_id": 2, "category_id": 1, "bbox": [20, 10, 80, 80], "segmentation": [TRIANGLE, [1, 2]]}
    records, report = _records(_write(tmp_path, [short, mixed]))
    assert [p.message for p in report.problems] == [
        "annotation id 17: segmentation has no polygon of 3 points: used as its bbox",
        "annotation id 18: segmentation[1] has 1 point, fewer than 3: skipped",
    ]
    np.testing.assert_array_equal(records["b.png"].segments[0], np.float32(TRIANGLE).reshape(-1, 2))


def test_polygons_come_back_from_the_label_cache(tmp_path):
    data = _write(tmp_path, _annotations())
    first = load_records(data, "train", log=False)[0]
    second = load_records(data, "train", log=False)[0]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert len(a.segments) == len(b.segments) and all(np.array_equal(p, q) for p, q in zip(a.segments, b.segments))


def test_polygons_are_scaled_with_the_boxes_when_the_image_was_resized(tmp_path):
    """The JSON says 400 x 200, the photo is 200 x 100: the polygon is halved as the boxes are."""
    data = _write(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 20, 160, 160],
                              "segmentation": [[40, 20, 200, 20, 40, 180]]}])  # fmt: skip
    file = tmp_path / "annotations" / "instances_train.json"
    coco = json.loads(file.read_text())
    coco["images"][0].update(width=2 * W, height=2 * H)
    file.write_text(json.dumps(coco))
    records, report = _records(data)
    np.testing.assert_array_equal(records["a.png"].segments[0], np.float32(TRIANGLE).reshape(-1, 2))
    np.testing.assert_array_equal(records["a.png"].boxes[0], [20, 10, 100, 90])
    assert "resized?" in str(report.problems)


def test_an_rle_mask_of_an_image_without_a_size_in_the_json(tmp_path):
    """Without the image's width and height in the JSON (the package's converter needs them), an RLE mask is read at
    its own size; one too large for any photo is an error, not an allocation of its pixels."""
    rect, _ = _masks()
    huge = {"size": [100_000, 100_000], "counts": [10**10]}
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 20, 40, 20], "segmentation": {"size": [H, W],
         "counts": _runs(rect)}},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 20, 40, 20], "segmentation": huge},
    ]  # fmt: skip
    data = _write(tmp_path, annotations)
    file = tmp_path / "annotations" / "instances_train.json"
    coco = json.loads(file.read_text())
    for image in coco["images"]:
        del image["width"], image["height"]
    file.write_text(json.dumps(coco))
    records, report = _records(data)
    assert sorted(records) == ["a.png"]
    np.testing.assert_array_equal(records["a.png"].boxes, [[50, 20, 89, 39]])
    assert "annotation id 2: segmentation: an RLE mask of 100000x100000 pixels, larger than any photo" in str(
        report.problems
    )
