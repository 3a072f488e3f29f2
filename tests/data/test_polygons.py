"""Polygon labels (YOLO rows ``class x1 y1 x2 y2 ...``): their points go through mosaic and the random affine,
and each augmented box is the box of the part of its polygon in view, as YOLOv5 and the package make it from
segments. Before, the polygon became its bounding box when read, and a rotated or cropped object got the box of
that rectangle: mostly background where a thin or slanted object was cut by the border."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from yolotr.data.dataset import DetectionDataset, RecordTable, default_hyp
from yolotr.data.sources import load_records
from yolotr.data.transforms import (
    augment,
    clip_polygon,
    mosaic4,
    polygon_box,
    polygon_boxes,
    random_affine,
    transform_boxes,
)
from yolotr.errors import DataError

SIZE = 192
HYP = {**default_hyp(), "degrees": 20.0, "shear": 5.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


def _polygon(rng: np.random.Generator, centre, radius: float) -> np.ndarray:
    """A star-shaped polygon, concave in general: 5 to 12 vertices at random radii around ``centre``."""
    k = int(rng.integers(5, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = rng.uniform(0.3, 1.0, k) * radius
    return (np.stack((np.cos(angles), np.sin(angles)), 1) * radii[:, None] + centre).astype(np.float32)


def _dense_box(polygon: np.ndarray, w: float, h: float) -> np.ndarray | None:
    """The box of the part of ``polygon`` in ``[0, w] x [0, h]`` by sampling: 2,000 points an edge, and the
    rectangle's corners inside the polygon."""
    t = np.linspace(0, 1, 2000)[:, None, None]
    edges = polygon[None] + t * (np.roll(polygon, -1, 0) - polygon)[None]
    pts = edges.reshape(-1, 2)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] <= w) & (pts[:, 1] >= 0) & (pts[:, 1] <= h)]
    corners = [c for c in ((0, 0), (w, 0), (0, h), (w, h)) if cv2.pointPolygonTest(polygon, c, False) > 0]
    pts = np.concatenate([pts, np.float32(corners).reshape(-1, 2)])
    return None if not len(pts) else np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def test_polygon_box_is_the_box_of_the_part_in_view():
    rng = np.random.default_rng(0)
    for _ in range(300):
        polygon = _polygon(rng, rng.uniform(-40, 140, 2), rng.uniform(10, 90))
        expected = _dense_box(polygon, 100, 80)
        got = polygon_box(polygon, 100, 80)
        if expected is None:
            assert not got.any()
        else:
            np.testing.assert_allclose(got, expected, atol=0.1)
    assert not polygon_box(np.float32([[-30, 10], [-10, 10], [-20, 30]]), 100, 80).any()  # wholly outside
    inside_out = np.float32([[-10, -10], [110, -10], [110, 90], [-10, 90]])  # the rectangle inside the polygon
    np.testing.assert_allclose(polygon_box(inside_out, 100, 80), [0, 0, 100, 80])


def test_polygon_boxes_are_exact_for_all_polygons_at_once():
    """The batched box (rows padded by repeating a vertex) equals the sampled one for every polygon, and a rotated
    box cut by the border gets the box of its visible part (it was clipped one box at a time before)."""
    rng = np.random.default_rng(1)
    polygons = [_polygon(rng, rng.uniform(-40, 140, 2), rng.uniform(10, 90)) for _ in range(200)]
    longest = max(len(p) for p in polygons)
    padded = np.stack([np.concatenate([p, np.repeat(p[-1:], longest - len(p), 0)]) for p in polygons])
    got = polygon_boxes(padded, 100, 80)
    for polygon, box in zip(polygons, got):
        expected = _dense_box(polygon, 100, 80)
        np.testing.assert_allclose(box, np.zeros(4) if expected is None else expected, atol=0.1)
    boxes = np.float32([[-20, 10, 40, 30], [60, 50, 130, 120], [10, 10, 30, 30], [300, 300, 320, 320]])
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(center=(50, 40), angle=30, scale=1.0)
    for box, out in zip(boxes, transform_boxes(boxes, m, clip=(100, 80))):
        x1, y1, x2, y2 = box
        quad = (np.float64([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) @ m[:2, :2].T + m[:2, 2]).astype(np.float32)
        expected = _dense_box(quad, 100, 80)
        np.testing.assert_allclose(out, np.zeros(4) if expected is None else expected, atol=0.1)


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """An image with 3 grey polygons, their boxes and polygons."""
    rng = np.random.default_rng(seed)
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    polygons = [_polygon(rng, rng.uniform(40, SIZE - 40, 2), rng.uniform(20, 40)) for _ in range(3)]
    boxes = np.float32([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polygons])
    return image, boxes, polygons


class Draws:
    """Stands for the generator in :func:`random_affine`: the eight numbers it draws, in its order (perspective 2,
    angle, zoom, shear 2, translation 2), given as fractions of each range."""

    def __init__(self, values):
        self.values = list(values)

    def uniform(self, lo, hi, size=None):
        take = [lo + self.values.pop(0) * (hi - lo) for _ in range(size or 1)]
        return np.array(take) if size else take[0]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_augmented_boxes_follow_the_polygons_drawn(monkeypatch):
    """Mosaic, rotation, shear and the crop, replayed on one filled polygon at a time: the box must be that
    polygon's drawn pixels' box. With the rectangles of the polygons (the old reading) the mean IoU is lower."""
    ious, rect_ious = [], []
    for seed in range(16):
        scenes = [_scene(seed * 4 + k) for k in range(4)]
        images, boxes = [s[0] for s in scenes], [s[1] for s in scenes]
        ids = [np.arange(3) + 3 * k for k in range(4)]
        polygons = [s[2] for s in scenes]

        def chain(imgs, segments, seed=seed, boxes=boxes, ids=ids):
            rng = np.random.default_rng(seed)
            if segments is None:
                canvas, b, c = mosaic4(imgs, boxes, ids, SIZE, rng)
            else:
                canvas, b, c, segments = mosaic4(imgs, boxes, ids, SIZE, rng, segments=segments)
            return augment(canvas, b, c, HYP, rng, border=-SIZE // 2, segments=segments)

        _, out_boxes, out_ids = chain(images, polygons)
        _, rect_boxes, rect_ids = chain(images, None)
        for box, k in zip(out_boxes, out_ids):
            if min(box[2] - box[0], box[3] - box[1]) < 16:  # a pixel of rasterisation is too much of a small box
                continue
            masks = [np.zeros_like(im) for im in images]
            cv2.fillPoly(masks[k // 3], [np.round(polygons[k // 3][k % 3]).astype(np.int32)], (255, 255, 255))
            warped, _, _ = chain(masks, polygons)
            ys, xs = np.nonzero(warped[..., 0] > 127)
            drawn = np.float32([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            ious.append(_iou(box, drawn))
            if k in rect_ids:
                rect_ious.append(_iou(rect_boxes[list(rect_ids).index(k)], drawn))
    assert len(ious) >= 40
    assert min(ious) >= 0.8 and float(np.mean(ious)) >= 0.9, sorted(ious)[:5]  # measured: 0.83, 0.93
    assert float(np.mean(rect_ious)) < float(np.mean(ious)) - 0.08  # measured: 0.79


def test_polygon_rows_keep_their_points_through_the_cache_and_the_record_table(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((100, 200, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((100, 200, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.5 0.1 0.1 0.9\n")
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.1234567 0.1 0.5 0.1 0.1 0.9\n")
    data = {"path": str(tmp_path), "train": "images", "names": ["box", "triangle"]}
    seen = []
    for _ in range(2):  # validated, then read from the label cache: the same points (a resume reads the cache)
        records, _ = load_records(data, "train")
        a, b = sorted(records, key=lambda r: r.path)
        assert [len(s) for s in a.segments] == [0, 3] and [len(s) for s in b.segments] == [0, 3]
        np.testing.assert_allclose(a.segments[1], [[20, 10], [100, 10], [20, 90]])
        np.testing.assert_allclose(a.boxes[1], [20, 10, 100, 90])
        seen.append(b.segments[1])
    np.testing.assert_array_equal(seen[0], seen[1])
    assert seen[0][0, 0] == np.float32(24.69)  # 0.1234567 x 200 px, to 0.01 px
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    records, _ = load_records(data, "train")
    a, b = sorted(records, key=lambda r: r.path)
    table = RecordTable([a, b])
    assert [len(s) for s in table[0].segments] == [0, 3] and table[1].segments == []
    np.testing.assert_array_equal(table[0].segments[1], a.segments[1])


def test_a_polygon_cut_by_the_crop_keeps_the_box_of_its_part_in_view():
    """YOLOv5's case: a triangle whose sliver in view is 0.2 px is dropped; its rectangle's corner kept 45 px."""

    image = np.zeros((128, 128, 3), np.uint8)
    triangle = [np.float32([[0, 0], [60, 0], [0, 60]])]
    box = np.float32([[0, 0, 60, 60]])
    draws = [0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.0, 0.0]  # zoom 1.5, translate -0.1
    hyp = dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0)
    _, kept, _ = random_affine(image, box, np.zeros(1, np.int64), Draws(draws), **hyp, segments=triangle)
    assert len(kept) == 0
    _, as_box, _ = random_affine(image, box, np.zeros(1, np.int64), Draws(draws), **hyp)
    assert len(as_box) == 1


def test_the_dataset_augments_polygon_rows_by_their_points(tmp_path, monkeypatch):
    """A thin diagonal polygon rotated by 45 degrees: its box is narrow, the box of its rectangle square."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((128, 128, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.2 0.25 0.25 0.2 0.8 0.75 0.75 0.8\n")  # a thin bar along y = x
    records, _ = load_records({"path": str(tmp_path), "train": "images", "names": ["bar"]}, "train")
    hyp = {**default_hyp(), "mosaic": 0.0, "degrees": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0}
    items = {}
    for name, recs in (("polygon", records), ("rectangle", [type(records[0])(**{**vars(records[0]), "segments": []})])):
        dataset = DetectionDataset(recs, imgsz=128, augment=True, hyp=hyp)
        items[name] = dataset[0][1]
    for labels in items.values():
        assert len(labels) == 1
    np.testing.assert_allclose(items["polygon"][0, 4:].numpy(), [0.6, 0.6], atol=0.02)  # unrotated: the same
    rotated = {**hyp, "degrees": 45.0}
    widths = {}
    for name, recs in (("polygon", records), ("rectangle", [type(records[0])(**{**vars(records[0]), "segments": []})])):
        areas = [float(DetectionDataset(recs, imgsz=128, augment=True, hyp=rotated, seed=s)[0][1][0, 4:].prod())
                 for s in range(8)]  # fmt: skip
        widths[name] = float(np.mean(areas))
    assert widths["polygon"] < 0.6 * widths["rectangle"]


@pytest.mark.usefixtures("one_thread")
def test_boxes_agree_with_yolov5_random_perspective_on_segments():
    """YOLOv5's ``random_perspective`` with segments (resampled to 1,000 points, the box of those in view, area
    threshold 0.01), fed the same eight draws: the same objects kept and their boxes within a pixel."""
    augmentations = pytest.importorskip(
        "yolov5.utils.augmentations", reason="the official YOLOv5 package is a bench extra (pip install -e .[bench])"
    )

    rng = np.random.default_rng(1)
    image = np.zeros((256, 256, 3), np.uint8)
    hyp = dict(degrees=10.0, translate=0.1, scale=0.5, shear=2.0, perspective=0.0)
    same = total = 0
    for _ in range(300):
        n = int(rng.integers(1, 6))
        polygons = [_polygon(rng, rng.uniform(0, 256, 2), rng.uniform(10, 80)) for _ in range(n)]
        boxes = np.float32([[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polygons])
        boxes = boxes.clip(0, 256)
        draws = rng.random(8)
        order = iter(draws)  # YOLOv5 draws in the same order: perspective 2, angle, zoom, shear 2, translate 2
        saved = random.uniform
        random.uniform = lambda lo, hi, order=order: lo + next(order) * (hi - lo)
        try:
            targets = np.concatenate([np.arange(n)[:, None], boxes], 1)
            _, theirs = augmentations.random_perspective(image.copy(), targets, polygons, border=(-64, -64), **hyp)
        finally:
            random.uniform = saved
        _, ours, ids = random_affine(
            image.copy(), boxes, np.arange(n), Draws(draws), border=-64, segments=polygons, **hyp
        )
        total += len(theirs)
        if sorted(ids.tolist()) == sorted(theirs[:, 0].astype(int).tolist()):
            same += 1
            for row in theirs:
                np.testing.assert_allclose(ours[list(ids).index(int(row[0]))], row[1:], atol=1.0)
    assert total > 200 and same >= 290


def test_a_polygon_that_sticks_out_is_clipped_to_the_image_as_a_polygon(tmp_path, monkeypatch):
    """Its vertices were clamped one by one, which is another shape: 3,250 px² of a visible 5,940."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 -0.4 0.35 0.35 -0.4 -0.4 -0.4\n")  # its box reaches in, it not
    with pytest.raises(DataError, match="polygon wholly outside the 100x100 image"):
        load_records({"path": str(tmp_path), "train": "images", "names": ["t"]}, "train", cache=False)
    (tmp_path / "labels" / "a.txt").write_text("0 -0.6 0.5 0.5 -0.6 0.9 0.9\n")
    (record,), report = load_records({"path": str(tmp_path), "train": "images", "names": ["t"]}, "train", cache=False)
    assert cv2.contourArea(record.segments[0]) == pytest.approx(5940, abs=1)
    np.testing.assert_allclose(record.boxes[0], [0, 0, 90, 90], atol=0.01)
    assert "polygon 60.0 px outside the image, clipped" in str(report.problems)


def test_mosaic_clips_polygons_to_its_canvas():
    """A tile is cut at the canvas's sides; a polygon's part beyond them is not in the image, and with a zoom
    below 0.6 the canvas's side comes into view: the box reached over the grey padding."""
    rng = np.random.default_rng(3)
    images = [np.zeros((SIZE, SIZE, 3), np.uint8) for _ in range(4)]
    big = np.float32([[-50, -50], [SIZE + 50, -50], [SIZE + 50, SIZE + 50], [-50, SIZE + 50]])  # past every side
    boxes = [np.float32([[0, 0, SIZE, SIZE]])] * 4
    ids = [np.array([k]) for k in range(4)]
    _, kept, _, polygons = mosaic4(images, boxes, ids, SIZE, rng, segments=[[big]] * 4)
    assert len(polygons) == len(kept) == 4
    for polygon in polygons:
        assert polygon.min() >= 0 and polygon.max() <= 2 * SIZE


def test_the_one_percent_rule_is_for_objects_with_a_polygon():
    """A box with 8 % of its area left in view beside a polygon object: kept at 1 % where any object of the image
    had a polygon (a mosaic partner's, even), dropped at 10 % as both references drop a box."""

    image = np.zeros((128, 128, 3), np.uint8)
    boxes = np.float32([[0, 10, 60, 110], [60, 40, 100, 80]])
    triangle = np.float32([[60, 40], [100, 40], [80, 80]])
    draws = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 9 / 128, 0.5]  # shifted 55 px to the left: 5 of the box's 60 px stay
    hyp = dict(degrees=0.0, translate=0.5, scale=0.0, shear=0.0, perspective=0.0)
    rectangle = np.float32([[0, 10], [60, 10], [60, 110], [0, 110]])  # the first object's box, as a polygon
    for segments, kept in (([np.zeros((0, 2), np.float32), triangle], [1]), ([rectangle, triangle], [0, 1])):
        _, _, classes = random_affine(image, boxes, np.arange(2), Draws(draws), **hyp, segments=segments)
        assert classes.tolist() == kept


def test_the_box_of_a_polygon_cut_by_its_image_border_is_the_box_of_its_part_inside(tmp_path, monkeypatch):
    """Concave polygons cut by the border into pieces: the clipped outline's corners are not all in the
    polygon, so the record's box is the exact one of the part inside (measured by sampling the outline)."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(5)
    expected, split = {}, 0
    for i in range(3000):  # all the pieces' cases among them (6 in 3,000), and 20 others
        polygon = _polygon(rng, rng.uniform([60, 40], [140, 120]), rng.uniform(30, 60))
        box = _dense_box(polygon, 100, 80)
        if box is None or min(box[2] - box[0], box[3] - box[1]) < 1:
            continue
        outline = clip_polygon(polygon, 0, 0, 100, 80)
        joined = np.abs(np.concatenate((outline.min(0), outline.max(0))) - box).max() > 0.5
        if not joined and len(expected) - split >= 20:
            continue
        split += joined
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), np.zeros((80, 100, 3), np.uint8))
        row = " ".join(f"{x / 100:.6f} {y / 80:.6f}" for x, y in polygon)
        (tmp_path / "labels" / f"{i}.txt").write_text(f"0 {row}\n")
        expected[f"{i}.png"] = box
    records, _ = load_records({"path": str(tmp_path), "train": "images", "names": ["p"]}, "train", cache=False)
    assert len(records) == len(expected) and split >= 5
    for record in records:
        np.testing.assert_allclose(record.boxes[0], expected[record.path.split("/")[-1]], atol=0.1)


def test_distinct_polygons_sharing_a_box_are_both_kept(tmp_path, monkeypatch):
    """Two triangles in the same square (one pointing up, one down) have one class and one box; the package's
    loader (8.4) keeps both and drops only a polygon given twice. Judged by box, the second was dropped."""
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((100, 100, 3), np.uint8))
    up, down = "0 0.2 0.8 0.5 0.2 0.8 0.8", "0 0.2 0.2 0.8 0.2 0.5 0.8"
    (tmp_path / "labels" / "a.txt").write_text(f"{up}\n{down}\n{up}\n0 0.2 0.2 0.8 0.8 0.6 0.6\n")
    (record,), report = load_records({"path": str(tmp_path), "train": "images", "names": ["t"]}, "train", cache=False)
    assert len(record.boxes) == 3 and len(record.segments) == 3
    np.testing.assert_allclose(record.boxes[:2], [[20, 20, 80, 80]] * 2, atol=0.01)
    assert [p.message for p in report.problems] == ["duplicate polygon dropped"]
