"""``mixup: P``: a mosaic blended with a second one as YOLOv5's ``mixup`` and the package's ``MixUp`` blend them,
with every number drawn from the dataset's generator (none when P is 0, so the items of a run without mixup do not
change)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.conftest import assert_seeded_items_ignore_history
from yolotr.data.dataset import DetectionDataset, mosaic_only_warning
from yolotr.data.mixup import maybe_mixup, mixup
from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.synthetic import make_shapes_dataset
from yolotr.engine.config import resolve_config
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory) -> list[ImageRecord]:
    yaml_file = make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "set", n_train=24, n_val=4, imgsz=160)
    return load_records(yaml_file, "train", cache=False)[0]


@pytest.fixture(scope="module")
def raccoon_records(raccoon_voc) -> list[ImageRecord]:
    return load_records(raccoon_voc, "train", log=False)[0]


def _two_mosaics(records, size=320):
    """Two augmented mosaics of the set (image, boxes, classes), before HSV and flips."""
    dataset = DetectionDataset(records, size, augment=True)
    rng = np.random.default_rng(5)
    pool = range(len(records))
    return dataset._mosaic(3, rng, pool), dataset._mosaic(17, rng, pool)


def test_the_blend_and_labels_are_yolov5s_and_the_packages(raccoon_records):
    """The same two mosaics and the same ratio: YOLOv5's ``mixup`` (its labels ``[class, x1, y1, x2, y2]``) and
    the package's ``MixUp`` give this image, bit for bit, and these labels."""
    augmentations = pytest.importorskip(
        "yolov5.utils.augmentations", reason="the official YOLOv5 package is a bench extra (pip install -e .[bench])"
    )
    (im, b, c), (im2, b2, c2) = _two_mosaics(raccoon_records)
    assert len(b) and len(b2)
    np.random.seed(11)
    theirs, labels = augmentations.mixup(
        im.copy(), np.c_[c, b].astype(np.float32), im2.copy(), np.c_[c2, b2].astype(np.float32)
    )
    np.random.seed(11)
    r = np.random.beta(32.0, 32.0)
    ours, boxes, classes = mixup(im, b, c, im2, b2, c2, r)
    assert ours.dtype == np.uint8 and ours.shape == im.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0
    np.testing.assert_array_equal(np.c_[classes, boxes].astype(np.float32), labels)

    from ultralytics.data.augment import MixUp
    from ultralytics.utils.instance import Instances

    package = {"img": im.copy(), "cls": c[:, None], "instances": Instances(b.copy(), bbox_format="xyxy")}
    partner = {"img": im2.copy(), "cls": c2[:, None], "instances": Instances(b2.copy(), bbox_format="xyxy")}
    package["mix_labels"] = [partner]
    mix = MixUp(dataset=None, p=1.0)
    package = mix.apply_instances(mix.apply_image(package, {"r": r}), {"r": r})
    np.testing.assert_array_equal(ours, package["img"])
    np.testing.assert_array_equal(boxes, package["instances"].bboxes)
    np.testing.assert_array_equal(classes, package["cls"][:, 0])


def test_no_draw_at_zero_and_yolov5s_order_otherwise():
    """At 0 the generator is left as it was (the items of a run without mixup stay the same); otherwise the coin,
    the partner's index, the partner's own draws, then the ratio."""
    first = (np.zeros((8, 8, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert maybe_mixup(first, 0.0, rng, 10, lambda j: pytest.fail("no partner at 0")) is first
    assert rng.bit_generator.state == before

    seen = []
    second = (np.full((8, 8, 3), 200, np.uint8), np.float32([[1, 1, 4, 4]]), np.int64([2]))
    image, boxes, classes = maybe_mixup(first, 1.0, rng, 10, lambda j: seen.append((j, rng.random())) or second)
    check = np.random.default_rng(0)
    assert check.random() < 1.0
    j, partner_draw = int(check.integers(0, 10)), check.random()
    r = check.beta(32.0, 32.0)
    assert seen == [(j, partner_draw)]
    assert image[0, 0, 0] == np.uint8(200 * (1 - r)) and classes.tolist() == [2] and boxes.tolist() == [[1, 1, 4, 4]]


@pytest.mark.parametrize(("p", "mosaic", "expected"), [(0.3, 1.0, 0.3), (1.0, 0.5, 0.5), (1.0, 0.0, 0.0)])
def test_the_fraction_of_items_mixed_is_p_of_the_mosaic_items(shapes_records, monkeypatch, p, mosaic, expected):
    """YOLOv5's rule: only an item that got a mosaic is mixed (with ``mosaic: 0.5`` and ``mixup: 1`` half the
    items). Each mixed item makes one mosaic more."""
    calls = []
    original = DetectionDataset._mosaic
    monkeypatch.setattr(DetectionDataset, "_mosaic", lambda self, *a: calls.append(1) or original(self, *a))
    dataset = DetectionDataset(shapes_records, 96, augment=True, hyp={"mixup": p, "mosaic": mosaic})
    n = 1000
    mosaics = 0
    for k in range(n):
        before = len(calls)
        dataset[(1, k, k % len(dataset))]  # a new draw each time: epoch k
        mosaics += len(calls) > before
    mixed = (len(calls) - mosaics) / n
    assert abs(mixed - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-12) / n) + 1e-9


def test_a_mixed_item_has_about_twice_the_labels(raccoon_records):
    counts = {}
    for p in (0.0, 1.0):
        dataset = DetectionDataset(raccoon_records, 320, augment=True, hyp={"mixup": p})
        counts[p] = np.mean([len(dataset[(2, 0, k)][1]) for k in range(0, 160, 2)])
    assert 1.7 < counts[1.0] / counts[0.0] < 2.3, counts


def test_a_seeded_item_is_the_same_in_any_worker_and_leaves_the_global_generators(shapes_records):
    """The index ``(seed, epoch, i)`` decides the mixed item (what a resume relies on), whatever the dataset served
    before; numpy's and Python's global generators (which YOLOv5 draws from) are not touched."""
    assert_seeded_items_ignore_history(shapes_records, {"mixup": 0.5}, served_before=10, items=12)


def test_the_partners_polygons_give_its_boxes(shapes_records):
    """Every object drawn as a small square polygon inside a much larger box: the labels of both mosaics of a
    mixed item are the polygons' boxes (a partner read without its polygons would bring the large boxes)."""
    records = []
    for rec in shapes_records:
        centre = (rec.boxes[:, :2] + rec.boxes[:, 2:]) / 2
        squares = [np.float32([[-4, -4], [4, -4], [4, 4], [-4, 4]]) + c for c in centre]
        large = np.concatenate([centre - 30, centre + 30], 1).clip(0, [rec.width, rec.height] * 2)
        records.append(ImageRecord(rec.path, rec.height, rec.width, large.astype(np.float32), rec.classes, squares))
    hyp = {"mixup": 1.0, "scale": 0.0, "degrees": 0.0, "shear": 0.0, "fliplr": 0.0}
    dataset = DetectionDataset(records, 160, augment=True, hyp=hyp)
    sizes = np.concatenate([dataset[(0, 0, k)][1][:, 4:] for k in range(len(records))]) * 160
    assert len(sizes) > 2 * len(records) and sizes.max() <= 8.01


@pytest.mark.parametrize("value", [-0.1, 1.5, "often"])
def test_a_mixup_outside_0_1_is_refused_at_the_key(value):
    assert resolve_config({"mixup": 0.25})["mixup"] == 0.25
    with pytest.raises(ConfigError, match="'mixup'"):
        resolve_config({"mixup": value})


@pytest.mark.parametrize(
    "hyp, named",
    [
        ({"mosaic": 0.0, "mixup": 0.3, "copy_paste": 0.0}, "mixup: 0.3 with mosaic: 0"),
        ({"mosaic": 0.0, "mixup": 0.3, "copy_paste": 0.1}, "mixup: 0.3 and copy_paste: 0.1 with mosaic: 0"),
        ({"mosaic": 0.0, "mixup": 0.0, "copy_paste": 0.1}, "copy_paste: 0.1 with mosaic: 0"),
        ({"mosaic": 0.5, "mixup": 0.3, "copy_paste": 0.1}, None),
        ({"mosaic": 0.0, "mixup": 0.0, "copy_paste": 0.0}, None),
    ],
)
def test_mixup_and_copy_paste_without_mosaics_are_warned_of(hyp, named):
    """Both act on mosaic items only: set with ``mosaic: 0`` they changed nothing, and nothing said so."""
    message = mosaic_only_warning(hyp)
    assert message is None if named is None else message.startswith(named) and "changes nothing" in message


def test_the_trainer_warns_of_mixup_without_mosaics(tmp_path, caplog):
    from tests.engine.conftest import tiny_train_cfg
    from yolotr.engine.trainer import Trainer

    data = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64, seed=1)
    for mosaic, warned in ((0.0, True), (1.0, False)):
        caplog.clear()
        trainer = Trainer(tiny_train_cfg(data, tmp_path, mosaic=mosaic, mixup=0.5, autoanchor=False))
        with caplog.at_level("WARNING", logger="yolotr"):
            trainer._setup()
        assert any("mixup: 0.5 with mosaic: 0 changes nothing" in r.getMessage() for r in caplog.records) is warned
