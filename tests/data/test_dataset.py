"""DetectionDataset, collate, rectangular batches, RAM cache and the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolotr.data.dataset import DetectionDataset, build_dataloader, collate
from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.synthetic import make_shapes_dataset
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory) -> list[ImageRecord]:
    root = tmp_path_factory.mktemp("shapes")
    yaml_file = make_shapes_dataset(root / "set", n_train=24, n_val=8, imgsz=160)
    return load_records(yaml_file, "train", cache=False)[0]


def _wide_and_tall(records: list[ImageRecord], tmp_path) -> list[ImageRecord]:
    """Records of crops of different aspect ratios (written as new JPEGs)."""
    import cv2

    out = []
    for i, (h, w) in enumerate([(160, 80), (60, 160), (160, 160), (100, 160), (160, 120), (70, 150)]):
        rec = records[i]
        img = cv2.imread(rec.path)[:h, :w]
        path = tmp_path / f"crop{i}.jpg"
        cv2.imwrite(str(path), img)
        boxes = rec.boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] > 4) & (boxes[:, 3] - boxes[:, 1] > 4)
        out.append(ImageRecord(str(path), h, w, boxes[keep], rec.classes[keep]))
    return out


def test_collate_and_shapes_map_boxes_back(shapes_records):
    dataset = DetectionDataset(shapes_records[:4], imgsz=128, augment=False)
    images, targets, paths, shapes = collate([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.uint8
    assert targets.dtype == torch.float32 and targets.shape[1] == 6
    assert targets[:, 0].tolist() == sorted(targets[:, 0].tolist())
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
    assert paths == [r.path for r in shapes_records[:4]]
    for k, rec in enumerate(shapes_records[:4]):
        (h0, w0), ((gy, gx), (padw, padh)) = shapes[k]
        assert (h0, w0) == (rec.height, rec.width)
        t = targets[targets[:, 0] == k, 2:].numpy() * 128
        xyxy = np.concatenate([t[:, :2] - t[:, 2:] / 2, t[:, :2] + t[:, 2:] / 2], 1)
        back = (xyxy - [padw, padh, padw, padh]) / [gx, gy, gx, gy]
        np.testing.assert_allclose(back, rec.boxes, atol=0.5)
        np.testing.assert_array_equal(targets[targets[:, 0] == k, 1].long().numpy(), rec.classes)


def test_rgb_order(shapes_records):
    import cv2

    rec = shapes_records[0]
    dataset = DetectionDataset([rec], imgsz=160, augment=False)
    image = dataset[0][0].permute(1, 2, 0).numpy()
    bgr = cv2.imread(rec.path)
    np.testing.assert_array_equal(image, bgr[..., ::-1])


def test_rect_batches(shapes_records, tmp_path):
    records = _wide_and_tall(shapes_records, tmp_path)
    dataset = DetectionDataset(records, imgsz=160, rect=True, batch_size=2, stride=32)
    ratios = [r.height / r.width for r in dataset.records]
    assert ratios == sorted(ratios)
    assert (dataset.batch_shapes % 32 == 0).all() and (dataset.batch_shapes <= 160).all()
    loader = build_dataloader(dataset, batch_size=2, workers=0, shuffle=True)
    sizes = []
    for images, targets, _, shapes in loader:
        assert images.shape[0] == 2 and all(s is not None for s in shapes)
        assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
        sizes.append(tuple(images.shape[2:]))
    assert len(set(sizes)) > 1 and sizes[0][0] < sizes[0][1]


def test_augmented_training_batches(shapes_records):
    dataset = DetectionDataset(shapes_records, imgsz=128, augment=True, hyp={"mosaic": 1.0})
    images, targets, _, shapes = collate([dataset[i] for i in range(8)])
    assert images.shape == (8, 3, 128, 128) and shapes == [None] * 8
    assert len(targets) > 0 and ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()
    assert (targets[:, 4:] > 0).all()
    plain = DetectionDataset(shapes_records, imgsz=128, augment=True, hyp={"mosaic": 0.0})
    images, _, _, shapes = collate([plain[i] for i in range(4)])
    assert images.shape == (4, 3, 128, 128) and all(s is not None for s in shapes)


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_bgr_swaps_the_channels_of_that_share_of_items_and_nothing_else(shapes_records, mosaic):
    """The package's bgr: with probability bgr an item's blue and red channels are swapped (the model gets it in
    BGR order); the boxes and the other draws are those of the item without it, and at 0 nothing is drawn."""
    from yolotr.data.dataset import default_hyp
    from yolotr.engine.config import resolve_config

    hyp = {**default_hyp(), "mosaic": mosaic}
    plain = DetectionDataset(shapes_records, imgsz=96, augment=True, hyp=hyp)
    always = DetectionDataset(shapes_records, imgsz=96, augment=True, hyp={**hyp, "bgr": 1.0})
    half = DetectionDataset(shapes_records, imgsz=96, augment=True, hyp={**hyp, "bgr": 0.5})
    swapped = 0
    for i in range(12):
        image, labels, _, _ = plain[(0, 1, i)]
        bgr_image, bgr_labels, _, _ = always[(0, 1, i)]
        assert torch.equal(bgr_image, image.flip(0)) and torch.equal(bgr_labels, labels)
        half_image, half_labels, _, _ = half[(0, 1, i)]
        assert torch.equal(half_labels, labels)
        assert torch.equal(half_image, image) or torch.equal(half_image, bgr_image)
        swapped += not torch.equal(half_image, image)
    assert 2 <= swapped <= 10
    assert resolve_config({})["bgr"] == 0.0 and default_hyp()["bgr"] == 0.0
    with pytest.raises(ConfigError, match="'bgr' must be in \\[0, 1\\]"):
        resolve_config({"bgr": 1.5})


def test_loader_workers_are_seeded(shapes_records):
    def first_batch(seed: int):
        dataset = DetectionDataset(shapes_records[:8], imgsz=96, augment=True)
        loader = build_dataloader(dataset, batch_size=4, workers=2, shuffle=True, seed=seed)
        images, targets, paths, _ = next(iter(loader))
        return images, targets, paths

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])


def test_ram_cache_same_output(shapes_records):
    disk = DetectionDataset(shapes_records[:4], imgsz=96)
    ram = DetectionDataset(shapes_records[:4], imgsz=96, cache_ram=True)
    for i in range(4):
        assert torch.equal(disk[i][0], ram[i][0]) and torch.equal(disk[i][1], ram[i][1])


def test_each_rank_of_a_rect_loader_gets_whole_batches_of_one_shape(shapes_records, tmp_path):
    """A DistributedSampler dealt single images round-robin, so a rank's batch mixed rect shapes and collate
    failed; each rank now gets whole batches (0, 2, ... and 1, 3, ...), and together every image once."""
    from yolotr.data.dataset import RectBatchShard

    dataset = DetectionDataset(_wide_and_tall(shapes_records, tmp_path)[:5], imgsz=160, rect=True, batch_size=2)
    seen = []
    for rank in (0, 1):
        shard = RectBatchShard(len(dataset), 2, rank, world=2)
        assert len(shard) == len(list(shard))
        batches = [dataset.batch_index[list(shard)[k : k + 2]] for k in range(0, len(shard), 2)]
        assert all(len(set(b)) == 1 for b in batches)  # one rect batch, one shape, per loader batch
        seen += list(shard)
    assert sorted(seen) == list(range(5))
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = build_dataloader(dataset, batch_size=2, workers=0, shuffle=False, rank=0)
        assert sum(images.shape[0] for images, *_ in loader) == 5  # stacked: no mixed shapes
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="set its shapes for batches of 2"):
        build_dataloader(dataset, batch_size=4, workers=0, shuffle=False)


def test_large_jpeg_reduced_decode(tmp_path):
    import cv2

    from yolotr.data.dataset import read_image

    img = np.zeros((800, 1000, 3), np.uint8)
    cv2.rectangle(img, (100, 200), (500, 600), (255, 255, 255), -1)
    cv2.imwrite(str(tmp_path / "big.jpg"), img)
    assert read_image(str(tmp_path / "big.jpg"), 200).shape == (200, 250, 3)
    assert read_image(str(tmp_path / "big.jpg"), 400).shape == (400, 500, 3)
    assert read_image(str(tmp_path / "big.jpg"), 640).shape == (800, 1000, 3)
    rec = ImageRecord(str(tmp_path / "big.jpg"), 800, 1000, [[100, 200, 501, 601]], [0])
    image, targets, _, _ = DetectionDataset([rec], imgsz=128)[0]
    ys, xs = np.nonzero(image[0].numpy() > 127)
    t = targets[0, 2:].numpy() * 128
    np.testing.assert_allclose(
        [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [*(t[:2] - t[2:] / 2), *(t[:2] + t[2:] / 2)], atol=1.5
    )


def test_a_large_jpeg_whose_sides_the_factor_does_not_divide_is_decoded_whole(tmp_path):
    """libjpeg's 1/4 decode of a 2401-px side gives 601 px covering 2404: resized as if it covered 2401, the
    content slid against the labels. Such a JPEG is decoded whole (or at a factor dividing
    both sides), and its content lands where the full decode puts it."""
    import cv2

    from yolotr.data.dataset import read_image

    img = np.zeros((1201, 2401, 3), np.uint8)
    cv2.rectangle(img, (1600, 300), (2390, 900), (255, 255, 255), -1)
    cv2.imwrite(str(tmp_path / "odd.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "even.jpg"), img[:1200, :2400], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert read_image(str(tmp_path / "odd.jpg"), 320).shape == (1201, 2401, 3)
    assert read_image(str(tmp_path / "even.jpg"), 320).shape == (300, 600, 3)  # 1/4: both sides divide
    rec = ImageRecord(str(tmp_path / "odd.jpg"), 1201, 2401, [[1600, 300, 2391, 901]], [0])
    reduced = DetectionDataset([rec], imgsz=320).load_image(0)[0]
    whole = cv2.resize(img, reduced.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(int) - whole).max() <= 8  # JPEG noise only, no shift


def test_distributed_sampler(shapes_records, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        dataset = DetectionDataset(shapes_records[:6], imgsz=64)
        loader = build_dataloader(dataset, batch_size=2, workers=0, shuffle=True, rank=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert sum(len(b[2]) for b in loader) == 6
    finally:
        dist.destroy_process_group()


def _child_uss_growth(walk) -> float:
    """MiB of private memory a forked child gains while it runs ``walk()`` (Linux only)."""
    import os

    psutil = pytest.importorskip("psutil")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what a DataLoader worker forked from the trainer is
        os.close(read)
        before = psutil.Process().memory_full_info().uss
        walk()
        os.write(write, str(psutil.Process().memory_full_info().uss - before).encode())
        os._exit(0)
    os.close(write)
    grown = float(os.read(read, 64).decode() or "nan")
    os.waitpid(pid, 0)
    return grown / 2**20


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork-based DataLoader workers only")
def test_worker_reading_every_record_copies_no_pages_of_them():
    """A forked worker that reads all records does not copy them: the table is flat arrays, not objects."""
    import gc

    rng = np.random.default_rng(0)
    records = [
        ImageRecord(f"/data/{i:012d}.jpg", 480, 640, rng.random((7, 4), np.float32) * 99, rng.integers(0, 80, 7))
        for i in range(20000)
    ]
    dataset = DetectionDataset(records, imgsz=64)
    assert len(dataset.records) == 20000
    got = dataset.records[12345]
    assert got.path == records[12345].path and (got.height, got.width) == (480, 640)
    assert np.array_equal(got.boxes, records[12345].boxes) and np.array_equal(got.classes, records[12345].classes)
    assert not got.boxes.flags.writeable  # a view into the shared table: nobody may change it in place
    assert [r.path for r in dataset.records[-2:]] == [r.path for r in records[-2:]]
    gc.collect()
    gc.freeze()  # the collector's own bookkeeping would touch every object too

    def read_all(rows):
        def walk():
            total = 0.0
            for r in rows:
                total += float(r.boxes[0, 0]) * r.width / r.height + len(r.path) + int(r.classes[0])

        return walk

    try:
        as_objects = _child_uss_growth(read_all(records))
        as_table = _child_uss_growth(read_all(dataset.records))
    finally:
        gc.unfreeze()
    assert as_objects > 6.0  # ~0.6 KiB a record: the list of objects is copied page by page
    assert as_table < 1.5, f"{as_table:.1f} MiB copied in the worker"
