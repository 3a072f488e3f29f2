"""Training loader throughput: yolotr vs Ultralytics on the raccoon set.

Both loaders run the same job: mosaic on (probability 1), random affine, HSV jitter, flips,
imgsz 320, batch 16, 2 workers, shuffled; images/s is measured over ``--batches`` batches
after the first one (worker start-up excluded), best of ``--repeats`` interleaved runs (the
CPU may be shared). The Ultralytics column appears when the
``ultralytics`` package is importable (``pip install ultralytics``); it reads a YOLO-txt copy of
the labels written to a temporary folder (images are symlinked, nothing is copied).

    python bench/dataloader.py [--data raccoon.yaml] [--batches 40] [--repeats 3] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared_data import raccoon_data  # noqa: E402

from yolotr.data.dataset import DetectionDataset, build_dataloader, default_hyp  # noqa: E402
from yolotr.data.sources import load_dataset_config, load_records  # noqa: E402


def images_per_second(loader, batches: int) -> float:
    """Images/s over ``batches`` batches after the first, cycling over epochs."""
    seen, start, done = 0, None, 0
    while done <= batches:
        for images, *_ in loader:
            if start is None:
                start = time.perf_counter()
            else:
                seen += images.shape[0]
            done += 1
            if done > batches:
                break
    return seen / (time.perf_counter() - start)


def bench_yolotr(records, args) -> float:
    dataset = DetectionDataset(records, imgsz=args.imgsz, augment=True, hyp={"mosaic": 1.0})
    loader = build_dataloader(dataset, args.batch, workers=args.workers, shuffle=True)
    return images_per_second(loader, args.batches)


def write_yolo_copy(records, names: list[str], folder: Path) -> Path:
    """Symlink the images and write their labels as YOLO txt; return the images folder."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for r in records:
        name = Path(r.path).name
        (folder / "images" / name).symlink_to(r.path)
        lines = []
        for c, (x1, y1, x2, y2) in zip(r.classes.tolist(), r.boxes.tolist()):
            cx, cy, w, h = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height, (x2 - x1) / r.width, (y2 - y1) / r.height
            lines.append(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (folder / "labels" / f"{Path(name).stem}.txt").write_text("".join(lines))
    return folder / "images"


def bench_ultralytics(records, names: list[str], args) -> float:
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader as ul_loader
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.utils import DEFAULT_CFG

    hyp = default_hyp()
    with tempfile.TemporaryDirectory() as tmp:
        images = write_yolo_copy(records, names, Path(tmp))
        cfg = get_cfg(DEFAULT_CFG, {**{k: hyp[k] for k in hyp}, "imgsz": args.imgsz, "mosaic": 1.0, "cache": False})
        data = {"names": dict(enumerate(names)), "nc": len(names), "channels": 3}
        dataset = build_yolo_dataset(cfg, str(images), args.batch, data, mode="train")
        loader = ul_loader(dataset, args.batch, args.workers, shuffle=True, pin_memory=False, device="cpu")
        return images_per_second(loader_images(loader), args.batches)


class loader_images:  # noqa: N801 - a tiny adapter, used like a function
    """Adapt Ultralytics' dict batches to ``(images, ...)`` tuples."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            yield (batch["img"],)

    def __len__(self):
        return len(self.loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset YAML (default: the shared raccoon set)")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each loader; the best counts")
    args = parser.parse_args()
    config = load_dataset_config(args.data or raccoon_data())
    records, _ = load_records(config, "train")
    print(
        f"training loader, {len(records)} images, mosaic on, imgsz {args.imgsz}, batch {args.batch}, "
        f"{args.workers} workers, {args.batches} timed batches, {os.cpu_count()} CPUs"
    )
    try:
        import ultralytics
    except ImportError:
        ultralytics = None
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(bench_yolotr(records, args))
        if ultralytics is not None:
            theirs.append(bench_ultralytics(records, config.names, args))
    print(f"best of {args.repeats} interleaved runs")
    print(f"{'loader':<24}{'images/s':>10}{'ratio':>8}")
    print(f"{'yolotr':<24}{max(ours):>10.1f}{'':>8}")
    if ultralytics is None:
        print(f"{'ultralytics':<24}{'-':>10}{'-':>8}  (not installed: pip install ultralytics)")
        return
    print(f"{'ultralytics ' + ultralytics.__version__:<24}{max(theirs):>10.1f}{'':>8}")
    print(f"{'yolotr / ultralytics':<24}{'':>10}{max(ours) / max(theirs):>7.2f}x")


if __name__ == "__main__":
    main()
