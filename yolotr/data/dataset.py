"""DetectionDataset, collate and the DataLoader builder.

Derived from YOLOv5's ``LoadImagesAndLabels``: same image sizes, mosaic, rectangular validation
batches and ``shapes`` tuple, but it reads :class:`~yolotr.data.sources.ImageRecord` objects
(checked by :mod:`yolotr.data.validation`, cached by :mod:`yolotr.data.label_cache`), draws every
random number from a per-worker ``numpy.random.Generator``, and JPEGs much larger than the
training size are decoded at 1/2, 1/4 or 1/8 scale by libjpeg before the final resize
(:func:`~yolotr.data.image_read.read_image`).
"""

from __future__ import annotations

import logging
import math
import operator
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from yolotr.data.copy_paste import maybe_copy_paste
from yolotr.data.cutmix import maybe_cutmix
from yolotr.data.image_read import read_image
from yolotr.data.mixup import maybe_mixup
from yolotr.data.sources import ImageRecord
from yolotr.data.transforms import augment, colour_flips, hyp_affine, letterbox, mosaic4

LOGGER = logging.getLogger("yolotr")

AUG_KEYS = (
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "perspective",
    "flipud",
    "fliplr",
    "bgr",
    "mosaic",
    "mixup",
    "copy_paste",
    "cutmix",
)

Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]]


def mosaic_only_warning(hyp: dict) -> str | None:
    """The warning for ``mixup``, ``copy_paste`` or ``cutmix`` above 0 with ``mosaic: 0``: they act on mosaics only
    (as YOLOv5's mixup and copy_paste do), so they change nothing; None when there is nothing to say."""
    idle = [key for key in ("mixup", "copy_paste", "cutmix") if hyp.get(key, 0) > 0]
    if not idle or hyp.get("mosaic", 0) > 0:
        return None
    given = " and ".join(f"{key}: {hyp[key]}" for key in idle)
    return (
        f"{given} with mosaic: 0 changes nothing: mixup, copy_paste and cutmix act on mosaics only, as YOLOv5's "
        "(the ultralytics package's mixup and cutmix also take single images)"
    )


@lru_cache(maxsize=1)
def default_hyp() -> dict:
    """The augmentation keys of ``cfg/default.yaml``."""
    cfg = yaml.safe_load((Path(__file__).parents[1] / "cfg" / "default.yaml").read_text(encoding="utf-8"))
    return {k: cfg[k] for k in AUG_KEYS}


class RecordTable(Sequence[ImageRecord]):
    """Records held as a few flat numpy arrays, read back as :class:`ImageRecord` views.

    A list of record objects is a few Python objects per image; a forked DataLoader worker that reads
    them writes their reference counts and so copies the memory pages they sit on (about 0.6 KiB per
    record and worker, 70 MiB per worker for COCO's 118k training images). Every worker reads the same
    few arrays here instead. ``table[i]`` builds a new record whose ``boxes`` and ``classes`` are
    read-only views into the table.
    """

    def __init__(self, records: Sequence[ImageRecord]):
        paths = [r.path.encode("utf-8", "surrogateescape") for r in records]
        self._path_end = np.cumsum([len(p) for p in paths], dtype=np.int64)
        self._paths = np.frombuffer(b"".join(paths), dtype=np.uint8)
        self._hw = np.array([(r.height, r.width) for r in records], dtype=np.int64).reshape(-1, 2)
        self._box_end = np.cumsum([len(r.boxes) for r in records], dtype=np.int64)
        self._boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4), np.float32)
        self._classes = np.concatenate([r.classes for r in records]) if records else np.zeros(0, np.int64)
        # polygons: each object's point count (0 for a box, and for every object of an image without polygons)
        counts = [len(s) for r in records for s in (r.segments or [()] * len(r.boxes))]
        self._point_end = np.cumsum(counts, dtype=np.int64)
        points = [s for r in records for s in r.segments]
        self._points = np.concatenate(points) if points else np.zeros((0, 2), np.float32)
        for array in (self._hw, self._boxes, self._classes, self._point_end, self._points):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self._hw)

    @property
    def has_polygons(self) -> bool:
        """Whether any object of any record has a polygon."""
        return len(self._points) > 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} records")
        i %= len(self)
        p0, p1 = (self._path_end[i - 1] if i else 0), self._path_end[i]
        b0, b1 = (self._box_end[i - 1] if i else 0), self._box_end[i]
        h, w = self._hw[i]
        path = self._paths[p0:p1].tobytes().decode("utf-8", "surrogateescape")
        segments = []
        if b1 > b0 and self._point_end[b1 - 1] > (self._point_end[b0 - 1] if b0 else 0):  # a polygon among them
            ends = self._point_end[b0:b1]
            starts = np.concatenate(([self._point_end[b0 - 1] if b0 else 0], ends[:-1]))
            segments = [self._points[s:e] for s, e in zip(starts, ends)]
        return ImageRecord(path, int(h), int(w), self._boxes[b0:b1], self._classes[b0:b1], segments)

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))


class DetectionDataset(Dataset):
    """Images and boxes of validated records, letterboxed or augmented.

    Item ``i`` is ``(image, labels, path, shapes)``:

    - ``image``: ``(3, H, W)`` uint8 RGB tensor; ``H = W = imgsz`` unless ``rect``.
    - ``labels``: ``(N, 6)`` float32 ``[0, class, cx, cy, w, h]`` normalized to ``(W, H)``.
    - ``shapes``: ``((h0, w0), ((h / h0, w / w0), (padw, padh)))`` to map boxes back to the
      original image, or None for a mosaic (YOLOv5's convention).

    Args:
        records: usable images from :func:`~yolotr.data.sources.load_records`.
        imgsz: training/validation size in pixels.
        augment: training augmentation (mosaic, copy-paste, affine, mixup, cutmix, HSV, flips per ``hyp``).
        hyp: augmentation keys of ``cfg/default.yaml``; missing keys take the defaults.
        rect: rectangular batches (validation): records are sorted by aspect ratio and each batch
            is letterboxed to the smallest stride multiple that fits it. Do not shuffle.
        batch_size: the batch size the rectangular shapes are computed for.
        stride: the model's largest stride.
        cache_ram: decode and resize every image once, up front, and keep it in memory.
        pad: extra padding (in strides) of rectangular batches.
        stretch: every image resized to the ``imgsz`` square without keeping its aspect ratio (bilinear, as
            the package's RT-DETR dataset), before the mosaic as without it; not with ``rect``.
        seed: seed of the generator used without DataLoader workers.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        imgsz: int = 640,
        augment: bool = False,
        hyp: dict | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        cache_ram: bool = False,
        pad: float = 0.0,
        seed: int = 0,
        stretch: bool = False,
    ):
        if imgsz % stride:
            raise ValueError(f"imgsz {imgsz} must be a multiple of the stride {stride}")
        if stretch and rect:
            raise ValueError("stretch fills the imgsz square: it takes no rectangular batches (rect)")
        self.stretch = stretch
        records = list(records)
        self.imgsz, self.augment, self.rect, self.stride = imgsz, augment, rect, stride
        self.hyp = {**default_hyp(), **(hyp or {})}
        self.mosaic = augment and not rect
        self.rng = np.random.default_rng(seed)
        self.batch_shapes: np.ndarray | None = None
        self.batch_index: np.ndarray | None = None
        self.rect_batch_size = batch_size if rect else None  # the loader must batch as the shapes were set
        if rect:
            records = self._make_rect(records, batch_size, pad)
        self.records = RecordTable(records)
        self._ram: list[tuple[np.ndarray, tuple[int, int], tuple[int, int]]] | None = None
        self._buffer: OrderedDict[int, tuple[np.ndarray, tuple[int, int], tuple[int, int]]] = OrderedDict()
        self._buffer_size = min(len(self.records), batch_size * 8, 1000) if self.mosaic else 0
        if cache_ram:
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                self._ram = list(pool.map(self._read, range(len(self.records))))
            nbytes = sum(im.nbytes for im, _, _ in self._ram)
            LOGGER.info("cached %d images in RAM (%.1f MB)", len(self._ram), nbytes / 1e6)

    def _make_rect(self, records: list[ImageRecord], batch_size: int, pad: float) -> list[ImageRecord]:
        """Sort ``records`` by aspect ratio and set the shape of each batch; returns the sorted records."""
        ar = np.array([r.height / r.width for r in records])
        order = ar.argsort(kind="stable")
        records = [records[i] for i in order]
        ar = ar[order]
        n = len(ar)
        self.batch_index = np.arange(n) // batch_size
        nb = int(self.batch_index[-1]) + 1 if n else 0
        shapes = np.ones((nb, 2))
        for b in range(nb):
            a = ar[self.batch_index == b]
            lo, hi = a.min(), a.max()
            if hi < 1:
                shapes[b] = hi, 1
            elif lo > 1:
                shapes[b] = 1, 1 / lo
        self.batch_shapes = (np.ceil(shapes * self.imgsz / self.stride + pad) * self.stride).astype(int)
        return records

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image ``i`` resized so its long side is ``imgsz`` (with ``stretch``: to the ``imgsz`` square):
        ``(img BGR, (h0, w0), (h, w))``."""
        rec = self.records[i]
        h0, w0 = rec.height, rec.width
        # a JPEG may be decoded reduced, down to imgsz on the side that is resized least
        img = read_image(rec.path, math.ceil(self.imgsz * max(h0, w0) / min(h0, w0)) if self.stretch else self.imgsz)
        if img is None:
            LOGGER.warning("%s: cannot be read any more (changed since validation?); a grey image is used", rec.path)
            img = np.full((h0, w0, 3), 114, np.uint8)
        r = self.imgsz / max(h0, w0)
        h, w = min(math.ceil(h0 * r), self.imgsz), min(math.ceil(w0 * r), self.imgsz)
        if self.stretch:
            h = w = self.imgsz
        if img.shape[:2] != (h, w):
            shrink = img.shape[0] > h and not self.augment and not self.stretch  # the package stretches bilinearly
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return img, (h0, w0), (h, w)

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Like :meth:`_read`, from the RAM cache or the mosaic buffer when it is there.

        With mosaic, each worker keeps its last ``min(n, 8 batch_size, 1000)`` images (the
        "buffer") and draws the three mosaic partners of an image from it, like Ultralytics:
        one decode per sample instead of four.
        """
        if self._ram is not None:
            return self._ram[i]
        if i in self._buffer:
            self._buffer.move_to_end(i)
            return self._buffer[i]
        item = self._read(i)
        if self._buffer_size:
            self._buffer[i] = item
            while len(self._buffer) > self._buffer_size:
                self._buffer.popitem(last=False)
        return item

    def _scaled_boxes(self, i: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Record ``i``'s boxes, classes and polygons (``(0, 2)`` for an object given as a box; an empty list for
        an image without polygons) at the image size ``hw``."""
        rec = self.records[i]
        sx, sy = hw[1] / rec.width, hw[0] / rec.height
        segments = [p * np.float32([sx, sy]) for p in rec.segments]
        return rec.boxes * np.float32([sx, sy, sx, sy]), rec.classes.copy(), segments

    def _mosaic(self, i: int, rng: np.random.Generator, pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``i`` in a mosaic with three images of ``pool``, through copy-paste (objects with a polygon) and the
        random affine (not yet the HSV jitter and flips): ``((imgsz, imgsz, 3) uint8 BGR, (N, 4) float32 xyxy,
        (N,) int64)``."""
        idx = [i, *(pool[k] for k in rng.integers(0, len(pool), 3))]
        images, boxes, classes, segments = [], [], [], []
        for j in idx:
            img, _, hw = self.load_image(j)
            b, c, s = self._scaled_boxes(j, hw)
            images.append(img)
            boxes.append(b)
            classes.append(c)
            segments.append(s)
        if any(segments):  # polygons: the box of each one's part in view (an image without: all boxes)
            segments = [s or [np.zeros((0, 2), np.float32)] * len(b) for s, b in zip(segments, boxes)]
            img, b, c, s = mosaic4(images, boxes, classes, self.imgsz, rng, segments=segments)
            img, b, c, s = maybe_copy_paste(img, b, c, s, self.hyp["copy_paste"], rng)
            return hyp_affine(img, b, c, self.hyp, rng, border=-self.imgsz // 2, segments=s)
        img, b, c = mosaic4(images, boxes, classes, self.imgsz, rng)
        return hyp_affine(img, b, c, self.hyp, rng, border=-self.imgsz // 2)

    def __getitem__(self, i: int | tuple[int, int, int]):
        """Item ``i``; an index ``(seed, epoch, i)`` draws its augmentation from a generator seeded
        with that triple (and mosaic partners from the whole set), so a sample is the same whichever
        worker makes it and whenever: this is what makes training resume exactly."""
        if isinstance(i, tuple):
            rng = np.random.default_rng(i)
            i = i[2]
            pool = range(len(self.records))
        else:
            rng = self.rng
            pool = list(self._buffer) if self._buffer and self._ram is None else range(len(self.records))
        if self.mosaic and rng.random() < self.hyp["mosaic"]:
            first = self._mosaic(i, rng, pool)

            def another(j: int):  # a partner's mosaic (mixup, cutmix), made alike
                return self._mosaic(j, rng, pool)

            img, b, c = maybe_mixup(first, self.hyp["mixup"], rng, len(self), another)
            polygons = self.records.has_polygons
            img, b, c = maybe_cutmix((img, b, c), self.hyp["cutmix"], rng, len(self), another, polygons)
            img, b = colour_flips(img, b, self.hyp, rng)
            shapes = None
        else:
            img, (h0, w0), (h, w) = self.load_image(i)
            shape = self.batch_shapes[self.batch_index[i]] if self.rect else (self.imgsz, self.imgsz)
            img, ratio, (padw, padh) = letterbox(img, tuple(shape), auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h / h0 * ratio[0], w / w0 * ratio[1]), (padw, padh)))
            b, c, s = self._scaled_boxes(i, (h, w))
            b = b * np.float32(ratio * 2) + np.float32([padw, padh, padw, padh])
            if self.augment:
                polygons = [p * np.float32(ratio) + np.float32([padw, padh]) for p in s] or None
                img, b, c = augment(img, b, c, self.hyp, rng, segments=polygons)
        return _to_item(img, b, c, self.records[i].path, shapes)


def _to_item(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, path: str, shapes):
    h, w = img.shape[:2]
    labels = np.zeros((len(boxes), 6), np.float32)
    if len(boxes):
        labels[:, 1] = classes
        labels[:, 2] = (boxes[:, 0] + boxes[:, 2]) / 2 / w
        labels[:, 3] = (boxes[:, 1] + boxes[:, 3]) / 2 / h
        labels[:, 4] = (boxes[:, 2] - boxes[:, 0]) / w
        labels[:, 5] = (boxes[:, 3] - boxes[:, 1]) / h
    chw = np.stack(cv2.split(img)[::-1])  # BGR (H, W, 3) to RGB (3, H, W), faster than numpy's strided copy
    return torch.from_numpy(chw), torch.from_numpy(labels), path, shapes


def collate(batch) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Shapes | None]]:
    """``(images uint8 (B, 3, H, W) RGB, targets float32 (N, 6), paths, shapes)``.

    ``targets`` rows are ``[image_index, class, cx, cy, w, h]`` normalized to ``(W, H)``.
    """
    images, labels, paths, shapes = zip(*batch)
    for k, lab in enumerate(labels):
        lab[:, 0] = k
    return torch.stack(images, 0), torch.cat(labels, 0), list(paths), list(shapes)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own generator, derived from the loader's seed."""
    info = get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    cv2.setNumThreads(0)
    if isinstance(info.dataset, DetectionDataset):
        info.dataset.rng = np.random.default_rng(seed)


class _Repeat:
    """A batch sampler that starts over forever (a new pass of the wrapped sampler each time)."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        while True:
            yield from iter(self.sampler)


class InfiniteDataLoader(DataLoader):
    """A DataLoader whose workers keep prefetching across epochs: each ``iter()`` yields one
    epoch (``len(loader)`` batches) from one iterator that never ends, so small datasets do not
    stall at every epoch boundary (Ultralytics' ``InfiniteDataLoader`` does the same).

    A ``DistributedSampler``'s ``set_epoch`` takes effect from the next pass the workers start,
    which may be one epoch late because of prefetching. Leaving an epoch early leaves its
    remaining batches to the next ``iter()``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "batch_sampler", _Repeat(self.batch_sampler))
        self._iterator = None

    def __len__(self) -> int:
        return len(self.batch_sampler.sampler)

    def start(self) -> InfiniteDataLoader:
        """Start the workers now (they fork from the process as it is at this moment) instead of at the
        first ``iter()``; returns the loader."""
        if self._iterator is None:
            self._iterator = super().__iter__()
        return self

    def __iter__(self):
        if self._iterator is None:
            self._iterator = super().__iter__()
        for _ in range(len(self)):
            yield next(self._iterator)


def build_dataloader(
    dataset: DetectionDataset,
    batch_size: int,
    workers: int = 8,
    shuffle: bool = True,
    rank: int = -1,
    seed: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """An :class:`InfiniteDataLoader` of ``dataset`` with :func:`collate`.

    Pinned memory for batches bound for a CUDA device (``pin_memory``; None: whenever CUDA is available);
    a ``DistributedSampler`` when ``rank >= 0`` (call its ``set_epoch`` every epoch; for a rect dataset a
    :class:`RectBatchShard`, whole batches of one shape per rank); seeded workers
    (``seed + rank``), so a run replays the same augmentations. Rectangular datasets are never shuffled.
    """
    if dataset.rect and shuffle:
        LOGGER.warning("rect=True is incompatible with shuffle; shuffle turned off")
        shuffle = False
    if dataset.rect and batch_size != dataset.rect_batch_size:
        raise ValueError(
            f"batch_size {batch_size}: this rect dataset set its shapes for batches of {dataset.rect_batch_size}"
        )
    if rank >= 0 and dataset.rect:
        sampler = RectBatchShard(len(dataset), batch_size, rank)
    else:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed) if rank >= 0 else None
    workers = max(0, min(workers, os.cpu_count() or 1))
    generator = torch.Generator()
    generator.manual_seed(seed + max(rank, 0))
    return InfiniteDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=workers > 0,
    )


def stop_workers(*loaders) -> None:
    """Stop, now, the persistent worker processes of each of ``loaders`` (DataLoaders; ``None`` and loaders without
    workers are skipped); a later ``iter()`` starts new ones. Left to the garbage collector, a loader and its queues
    form a cycle that a later collection may finalize in any order: the workers' stop signal can go to a queue
    already closed, and that collection, at some unrelated point of the program, waits 5 s for each worker."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # where DataLoader keeps the iterator of persistent workers
        if hasattr(iterator, "_shutdown_workers"):  # torch's own stop (DataLoader has no public one)
            iterator._shutdown_workers()
            loader._iterator = None


class RectBatchShard(torch.utils.data.Sampler[int]):
    """This rank's share of a rect dataset: whole batches, batch ``rank``, ``rank + world``, ... in order.

    A ``DistributedSampler`` deals single images round-robin, so one rank's batch mixed images of different
    rect batches (different shapes) and ``collate`` failed. Ranks may get one batch more than others (no
    padding with repeats: validation counts each image once).
    """

    def __init__(self, n: int, batch_size: int, rank: int, world: int | None = None):
        import torch.distributed as dist

        self.n, self.batch_size, self.rank = n, batch_size, rank
        self.world = world if world is not None else (dist.get_world_size() if dist.is_initialized() else 1)

    def _batches(self) -> range:
        return range(self.rank, math.ceil(self.n / self.batch_size), self.world)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle (rect batches keep their order); here for the ``DistributedSampler`` habit."""

    def __iter__(self) -> Iterator[int]:
        for b in self._batches():
            yield from range(b * self.batch_size, min((b + 1) * self.batch_size, self.n))

    def __len__(self) -> int:
        return sum(min((b + 1) * self.batch_size, self.n) - b * self.batch_size for b in self._batches())
