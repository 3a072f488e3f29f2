"""``copy_paste: P``: the mirrors of a sample of a mosaic's objects with a polygon pasted as YOLOv5's ``copy_paste``
pastes them, every number drawn from the dataset's generator (none at 0 or without polygons, so those items do not
change)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from tests.data.conftest import assert_seeded_items_ignore_history
from yolotr.data.copy_paste import copy_paste, maybe_copy_paste
from yolotr.data.dataset import DetectionDataset
from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.config import resolve_config
from yolotr.errors import ConfigError


def _star(rng: np.random.Generator, centre, radius: float) -> np.ndarray:
    """A star-shaped polygon (concave in general), 5 to 11 vertices around ``centre``: ``(K, 2)`` float32."""
    k = int(rng.integers(5, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = rng.uniform(0.3, 1.0, k) * radius
    return (np.stack((np.cos(angles), np.sin(angles)), 1) * radii[:, None] + centre).astype(np.float32)


def _scene(seed: int, size: int = 256, n: int = 8):
    """A noise canvas with ``n`` star polygons (clipped to it), their boxes and classes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    segments = [_star(rng, rng.uniform(0, size, 2), rng.uniform(8, 50)).clip(0, size) for _ in range(n)]
    boxes = np.array([[*p.min(0), *p.max(0)] for p in segments], np.float32)
    return image, boxes, rng.integers(0, 5, n), segments


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory) -> list[ImageRecord]:
    """The shapes set with each object given as the diamond inscribed in its box."""
    yaml_file = make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "set", n_train=16, n_val=4, imgsz=160)
    records = []
    for rec in load_records(yaml_file, "train", cache=False)[0]:
        x1, y1, x2, y2 = rec.boxes.T
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        diamonds = list(np.stack([np.stack(v, 1) for v in ((cx, y1), (x2, cy), (cx, y2), (x1, cy))], 1))
        records.append(ImageRecord(rec.path, rec.height, rec.width, rec.boxes, rec.classes, diamonds))
    return records


def test_the_image_labels_and_polygons_are_yolov5s(monkeypatch):
    """Random scenes and samples: YOLOv5's ``copy_paste`` given the same sample (its ``random.sample`` patched)
    gives this image, bit for bit, these labels ``[class, x1, y1, x2, y2]`` and these polygons; mirrors are both
    pasted and refused (one refused because of a mirror pasted before it is among them)."""
    augmentations = pytest.importorskip(
        "yolov5.utils.augmentations", reason="the official YOLOv5 package is a bench extra (pip install -e .[bench])"
    )
    pasted = refused = 0
    for seed in range(40):
        image, boxes, classes, segments = _scene(seed)
        picks = list(np.random.default_rng(100 + seed).permutation(len(boxes))[: 2 + seed % 7])
        fake = types.SimpleNamespace(sample=lambda population, k, picks=picks: picks[:k] if k == len(picks) else None)
        monkeypatch.setattr(augmentations, "random", fake)
        labels = np.c_[classes, boxes].astype(np.float32)
        theirs, their_labels, their_segments = augmentations.copy_paste(
            image.copy(), labels, [s.copy() for s in segments], p=len(picks) / len(boxes)
        )
        ours, b, c, s = copy_paste(image.copy(), boxes, classes, segments, picks)
        assert ours.dtype == np.uint8 and b.dtype == np.float32 and c.dtype == np.int64
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0
        np.testing.assert_array_equal(np.c_[c, b].astype(np.float32), their_labels)
        assert len(s) == len(their_segments)
        for mine, yours in zip(s, their_segments):
            np.testing.assert_array_equal(mine, yours)
        pasted += len(b) - len(boxes)
        refused += len(picks) - (len(b) - len(boxes))
        assert (ours != image).any() == (len(b) > len(boxes))
    assert pasted > 20 and refused > 20, (pasted, refused)


def test_a_mirror_has_the_flipped_box_and_polygon_and_the_flipped_pixels():
    """A square object left of the centre line: its mirror's box is ``(W - x2, y1, W - x1, y2)``, its pixels are
    the flipped canvas's under the flipped square, and nothing else changes."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    square = np.float32([[10, 20], [40, 20], [40, 60], [10, 60]])
    boxes, classes = np.float32([[10, 20, 40, 60]]), np.int64([3])
    out, b, c, s = copy_paste(image.copy(), boxes, classes, [square], [0])
    np.testing.assert_array_equal(b, [[10, 20, 40, 60], [80, 20, 110, 60]])
    assert c.tolist() == [3, 3]
    np.testing.assert_array_equal(s[1], [[110, 20], [80, 20], [80, 60], [110, 60]])
    # YOLOv5's mask: the square's pixel columns 10..40 flipped to 79..109 (the polygon's 80..110 one to the left)
    np.testing.assert_array_equal(out[20:61, 79:110], image[20:61, 10:41][:, ::-1])
    changed = np.zeros(image.shape[:2], bool)
    changed[20:61, 79:110] = True
    np.testing.assert_array_equal(out[~changed], image[~changed])
    assert (out[changed] != image[changed]).any()
    canvas = image.copy()
    assert copy_paste(canvas, boxes, classes, [square], [0])[0] is canvas  # in place, as YOLOv5's
    np.testing.assert_array_equal(canvas, out)


def test_a_mirror_covering_a_box_is_not_pasted():
    """An object across the centre line covers itself mirrored (IoA >= 0.3 with its own box): not pasted."""
    image = np.zeros((100, 100, 3), np.uint8)
    square = np.float32([[40, 10], [70, 10], [70, 30], [40, 30]])
    out, b, c, s = copy_paste(image, np.float32([[40, 10, 70, 30]]), np.int64([0]), [square], [0])
    assert out is image and len(b) == 1 and len(s) == 1


def test_no_draw_at_zero_without_polygons_or_for_a_sample_of_none():
    """Nothing drawn and the arguments given back (YOLOv5 draws nothing either): at P = 0, when every object is
    a box, and when ``round(P * n)`` is 0 (Python's rounding: 0.5 of one polygon is 0)."""
    image, boxes, classes, segments = _scene(1, n=3)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    boxes_only = [np.zeros((0, 2), np.float32)] * 3
    one = [segments[0], *boxes_only[:2]]
    for p, polygons in ((0.0, segments), (1.0, boxes_only), (0.5, one), (0.1, segments)):
        result = maybe_copy_paste(image, boxes, classes, polygons, p, rng)
        assert all(x is y for x, y in zip(result, (image, boxes, classes, polygons)))
    assert rng.bit_generator.state == before
    with pytest.raises(ValueError, match="no polygon"):
        copy_paste(image, boxes, classes, one, [1])


def test_the_sample_is_round_p_n_of_the_objects_with_a_polygon_from_the_generator(monkeypatch):
    """Only rows with a polygon are picked, ``round(P * n)`` of them, in the order ``rng.choice`` gives."""
    image, boxes, classes, segments = _scene(2, n=6)
    segments[1] = segments[4] = np.zeros((0, 2), np.float32)
    seen = []
    monkeypatch.setattr("yolotr.data.copy_paste.copy_paste", lambda *args: seen.append(list(args[4])) or args[:4])
    maybe_copy_paste(image, boxes, classes, segments, 0.5, np.random.default_rng(7))
    rows = np.array([0, 2, 3, 5])
    assert seen == [list(rows[np.random.default_rng(7).choice(4, size=2, replace=False)])]


def test_items_get_mirrors_and_stay_exact_per_seeded_index(shapes_records):
    """With P = 1 mosaic items have more labels; an index ``(seed, epoch, i)`` gives the same item in any worker
    (what a resume relies on), and numpy's and Python's global generators are not touched."""
    counts = {}
    for p in (0.0, 1.0):
        dataset = DetectionDataset(shapes_records, 160, augment=True, hyp={"copy_paste": p, "fliplr": 0.0})
        counts[p] = sum(len(dataset[(0, 0, k)][1]) for k in range(len(dataset)))
    assert counts[1.0] > 1.2 * counts[0.0], counts
    assert_seeded_items_ignore_history(shapes_records, {"copy_paste": 0.5}, served_before=5, items=8)


def test_copy_paste_does_not_change_items_without_polygons_or_at_zero(shapes_records):
    """A set of boxes at P = 1 and a polygon set at P = 0 give the items of a yolotr without the setting."""
    boxes_only = [ImageRecord(r.path, r.height, r.width, r.boxes, r.classes, []) for r in shapes_records]
    for records, p in ((boxes_only, 1.0), (shapes_records, 0.0)):
        plain = DetectionDataset(records, 96, augment=True, hyp={"mixup": 0.5})
        pasted = DetectionDataset(records, 96, augment=True, hyp={"mixup": 0.5, "copy_paste": p})
        for k in range(len(records)):
            x, y = plain[(1, 2, k)], pasted[(1, 2, k)]
            assert (x[0] == y[0]).all() and (x[1] == y[1]).all()
    plain = DetectionDataset(shapes_records, 96, augment=True)
    pasted = DetectionDataset(shapes_records, 96, augment=True, hyp={"copy_paste": 1.0})
    assert any((plain[(1, 2, k)][1].shape != pasted[(1, 2, k)][1].shape) for k in range(len(shapes_records)))


@pytest.mark.parametrize("value", [-0.1, 1.5, "often"])
def test_a_copy_paste_outside_0_1_is_refused_at_the_key(value):
    assert resolve_config({"copy_paste": 0.25})["copy_paste"] == 0.25
    with pytest.raises(ConfigError, match="'copy_paste'"):
        resolve_config({"copy_paste": value})


def test_the_flip_mode_is_taken_and_the_mixup_mode_refused_with_a_hint():
    """The package's default ``copy_paste_mode: flip`` (in every args.yaml it writes) is the mode copy_paste has."""
    assert resolve_config({"copy_paste_mode": "flip"})["copy_paste_mode"] == "flip"
    assert resolve_config({"copy_paste_mode": " Flip"})["copy_paste_mode"] == "flip"
    with pytest.raises(ConfigError, match="copy_paste_mode': the package's mixup mode .* is not implemented"):
        resolve_config({"copy_paste_mode": "mixup"})
    with pytest.raises(ConfigError, match="'copy_paste_mode' must be flip, got 'rotate'"):
        resolve_config({"copy_paste_mode": "rotate"})


@pytest.mark.parametrize("whole_pixels", [False, True])
def test_the_packages_copy_paste_pastes_the_same_mirrors_with_a_mask_one_column_off_at_most(whole_pixels):
    """Three objects apart on the left half, P = 1: the package's ``CopyPaste`` (flip mode, no draw) pastes the
    same mirrors (labels equal); its mask (the mirrored polygon filled) differs from YOLOv5's (the filled polygon
    mirrored) only on the outline: each pixel that differs is one column from a pixel of the other mask's
    outline."""
    augment = pytest.importorskip("ultralytics.data.augment")
    from ultralytics.utils.instance import Instances

    rng = np.random.default_rng(int(whole_pixels))
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    segments = []
    for k in range(3):
        radii = rng.uniform(5, 12, 12)[:, None]
        polygon = np.stack((np.cos(angles), np.sin(angles)), 1) * radii + [20.3 + 30 * k, 30.6 + 70 * k]
        segments.append((np.round(polygon) if whole_pixels else polygon).astype(np.float32))
    boxes = np.array([[*p.min(0), *p.max(0)] for p in segments], np.float32)
    classes = np.arange(3)
    instances = Instances(boxes.copy(), segments=np.stack(segments), bbox_format="xyxy", normalized=False)
    package = augment.CopyPaste(p=1.0)(
        {"img": image.copy(), "cls": classes[:, None].astype(np.float32), "instances": instances}
    )
    ours, b, c, _ = copy_paste(image.copy(), boxes, classes, segments, [0, 1, 2])
    assert len(b) == 6
    np.testing.assert_allclose(package["instances"].bboxes, b, atol=1e-4)
    np.testing.assert_array_equal(package["cls"][:, 0], c)
    ours_mask, theirs_mask = (ours != image).any(2), (package["img"] != image).any(2)
    differ = ours_mask != theirs_mask
    assert differ.any() and differ.sum() < 0.2 * ours_mask.sum()
    near = np.zeros_like(differ)
    for mask in (ours_mask, theirs_mask):
        edge = mask & ~(np.roll(mask, 1, 1) & np.roll(mask, -1, 1))  # a pixel of the mask beside one outside
        near |= edge | np.roll(edge, 1, 1) | np.roll(edge, -1, 1)
    assert near[differ].all()
    same = ~differ & ours_mask
    np.testing.assert_array_equal(ours[same], package["img"][same])
