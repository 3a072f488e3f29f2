"""``cutmix: P``: a rectangle of a second mosaic, with its objects, pasted into a training mosaic, as the ultralytics
package's ``CutMix``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.conftest import assert_seeded_items_ignore_history
from yolotr.data.cutmix import box_ioa, cut_rectangle, cutmix, maybe_cutmix
from yolotr.data.dataset import DetectionDataset
from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.config import resolve_config
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory) -> list[ImageRecord]:
    yaml_file = make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "set", n_train=24, n_val=4, imgsz=160)
    return load_records(yaml_file, "train", cache=False)[0]


def _random_mosaic(rng, size=96, n=6):
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    xy = rng.uniform(0, size - 8, (n, 2)).astype(np.float32)
    wh = rng.uniform(2, 40, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, np.minimum(xy + wh, size)], 1)
    return image, boxes, rng.integers(0, 5, n).astype(np.int64)


def test_the_rectangle_and_the_overlaps_are_the_packages(monkeypatch):
    """For the same draws, ``cut_rectangle`` is the package's ``_rand_bbox`` and ``box_ioa`` its ``bbox_ioa``."""
    augment = pytest.importorskip("ultralytics.data.augment", reason="the ultralytics package is a bench extra")
    from ultralytics.utils.metrics import bbox_ioa

    rng = np.random.default_rng(0)
    package = augment.CutMix(dataset=None, p=1.0)
    for _ in range(300):
        width, height = int(rng.integers(16, 700)), int(rng.integers(16, 700))
        lam, cx, cy = float(rng.random()), int(rng.integers(0, width)), int(rng.integers(0, height))
        centre = iter([cx, cy])
        monkeypatch.setattr(augment.np.random, "beta", lambda a, b, lam=lam: lam)
        monkeypatch.setattr(augment.np.random, "randint", lambda high, centre=centre: next(centre))
        assert cut_rectangle(width, height, lam, cx, cy) == tuple(int(v) for v in package._rand_bbox(width, height))
    monkeypatch.undo()
    for _ in range(50):
        a, b = _random_mosaic(rng, n=3)[1], _random_mosaic(rng, n=7)[1]
        np.testing.assert_allclose(box_ioa(a, b), bbox_ioa(a, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("polygons", [False, True])
def test_the_pasted_pixels_and_objects_are_the_packages(polygons):
    """The same two mosaics and rectangle: the package's ``CutMix.apply_image`` / ``apply_instances`` give this image,
    bit for bit, and these labels (its threshold 1 % of a box when the item holds polygons, else 10 %)."""
    pytest.importorskip("ultralytics.data.augment", reason="the ultralytics package is a bench extra")
    from ultralytics.data.augment import CutMix
    from ultralytics.utils.instance import Instances

    rng = np.random.default_rng(1)
    pasted = 0
    for _ in range(200):
        first, second = _random_mosaic(rng), _random_mosaic(rng, n=12)
        lam, cx, cy = float(rng.random()), int(rng.integers(0, 96)), int(rng.integers(0, 96))
        area = np.float32(cut_rectangle(96, 96, lam, cx, cy))
        image, boxes, classes = cutmix(first, second, area, 0.01 if polygons else 0.1)

        def labels(mosaic):
            segments = np.zeros((len(mosaic[1]) if polygons else 0, 100, 2), np.float32)
            instances = Instances(mosaic[1].copy(), segments=segments, bbox_format="xyxy", normalized=False)
            return {"img": mosaic[0].copy(), "cls": mosaic[2][:, None], "instances": instances}

        package = labels(first)
        package["mix_labels"] = [labels(second)]
        ioa = box_ioa(area[None], second[1])[0]
        inside = np.nonzero(ioa >= (0.01 if polygons else 0.1))[0]
        if len(inside):
            params = {"area": area, "indexes2": inside, "w": 96, "h": 96}
            mix = CutMix(dataset=None, p=1.0)
            package = mix.apply_instances(mix.apply_image(package, params), params)
            pasted += 1
        np.testing.assert_array_equal(image, package["img"])
        np.testing.assert_allclose(boxes, package["instances"].bboxes, atol=1e-5)
        np.testing.assert_array_equal(classes, package["cls"][:, 0])
    assert pasted > 50


def test_no_draw_at_zero_and_the_packages_order_otherwise():
    """At 0 the generator is left as it was (a run without cutmix has the items it had); otherwise the coin, the
    partner's index, its own draws, three rectangles (lam, x, y), then which free one."""
    empty = (np.zeros((32, 32, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert maybe_cutmix(empty, 0.0, rng, 10, lambda j: pytest.fail("no partner at 0"), False) is empty
    assert rng.bit_generator.state == before

    second = (np.full((32, 32, 3), 200, np.uint8), np.float32([[0, 0, 32, 32]]), np.int64([4]))
    seen = []
    image, boxes, classes = maybe_cutmix(empty, 1.0, rng, 10, lambda j: seen.append((j, rng.random())) or second, False)
    check = np.random.default_rng(0)
    assert check.random() < 1.0
    assert seen == [(int(check.integers(0, 10)), check.random())]
    areas = []
    for _ in range(3):
        lam = float(check.beta(1.0, 1.0))
        areas.append(cut_rectangle(32, 32, lam, int(check.integers(0, 32)), int(check.integers(0, 32))))
    x1, y1, x2, y2 = areas[int(check.choice(3))]  # no box in the first: every rectangle is free
    assert classes.tolist() == [4] and boxes.tolist() == [[x1, y1, x2, y2]]
    assert (image[y1:y2, x1:x2] == 200).all() and image.sum() == 200 * 3 * (y2 - y1) * (x2 - x1)


def test_a_rectangle_touching_a_box_of_the_first_is_never_cut():
    """A first mosaic whose one box covers the whole image leaves no free rectangle: the item is left as it was."""
    rng = np.random.default_rng(3)
    full = (np.zeros((32, 32, 3), np.uint8), np.float32([[0, 0, 32, 32]]), np.int64([1]))
    second = (np.full((32, 32, 3), 9, np.uint8), np.float32([[0, 0, 32, 32]]), np.int64([2]))
    for _ in range(20):
        assert maybe_cutmix(full, 1.0, rng, 10, lambda j: second, False) is full


def test_cut_items_gain_objects_inside_the_image_and_mosaics_only(shapes_records):
    """At 1 with mosaics, some items gain objects (the shapes set has polygons: 1 % of a box is enough), every box
    within the image; with ``mosaic: 0`` nothing is cut (mosaic items only, as mixup)."""
    plain = DetectionDataset(shapes_records, 96, augment=True, hyp={"cutmix": 0.0})
    cut = DetectionDataset(shapes_records, 96, augment=True, hyp={"cutmix": 1.0})
    gained = 0
    for k in range(40):
        a, b = plain[(2, 0, k % 24)], cut[(2, 0, k % 24)]
        gained += len(b[1]) > len(a[1])
        xywh = b[1][:, 2:]
        assert ((xywh[:, :2] - xywh[:, 2:] / 2 >= -1e-6) & (xywh[:, :2] + xywh[:, 2:] / 2 <= 1 + 1e-6)).all()
    assert gained >= 5
    no_mosaic = DetectionDataset(shapes_records, 96, augment=True, hyp={"cutmix": 1.0, "mosaic": 0.0})
    still = DetectionDataset(shapes_records, 96, augment=True, hyp={"cutmix": 0.0, "mosaic": 0.0})
    for k in range(8):
        assert (no_mosaic[(2, 0, k)][0] == still[(2, 0, k)][0]).all()


def test_a_seeded_item_is_the_same_in_any_worker_and_leaves_the_global_generators(shapes_records):
    assert_seeded_items_ignore_history(shapes_records, {"cutmix": 0.7}, served_before=10, items=12)


@pytest.mark.parametrize("value", [-0.1, 1.5, "often"])
def test_a_cutmix_outside_0_1_is_refused_at_the_key(value):
    assert resolve_config({"cutmix": 0.25})["cutmix"] == 0.25
    with pytest.raises(ConfigError, match="'cutmix'"):
        resolve_config({"cutmix": value})
