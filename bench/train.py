"""Fine-tuning speed, memory and accuracy: yolotr's trainer against the official YOLOv5 ``train.py``.

Both sides fine-tune the official Ultralytics ``yolov5n.pt`` (COCO, 80 classes; the Detect head is
rebuilt for 1 class) on the raccoon set (160 train / 40 val images) with the same settings: CPU,
imgsz 320, batch 16, 10 epochs, SGD lr0 0.01 and the rest of YOLOv5's ``hyp.scratch-low`` (which
yolotr's ``cfg/default.yaml`` mirrors), nominal batch 64, linear LR decay (the official default),
no AMP, seed 0, 2 DataLoader workers, 2 torch threads (``torch.set_num_threads`` and
``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), validation only after the last epoch (official ``noval``
semantics, yolotr ``val_period = epochs``). Each side runs in its own subprocess, one after the other.

Prints, per side and as the ratio yolotr/official:

- wall time: the whole subprocess, imports and setup and the final validation included;
- CPU time: user + system seconds of the same (the child and its DataLoader workers, from ``os.wait4``),
  which a busy machine inflates less than the wall time;
- train time: from the start of the first batch (the DataLoader has delivered it) to the end of the
  last epoch's last batch, read inside the child through the trainers' hooks (official callbacks
  ``on_train_batch_start``/``on_train_epoch_end``; yolotr ``on_batch_start`` and ``_end_epoch``);
  per-epoch checkpointing is inside, setup, AutoAnchor and validation are not;
- images/s = epochs x train images / train time (the same definition on both sides), and the same
  from the median epoch (first to last batch of one epoch), which shrugs off a few disturbed epochs;
- images/CPU-s: train images per CPU second of the child and its DataLoader workers in the median
  epoch (``psutil`` at the same marks): the cost of an image, which other processes on a busy machine
  change far less than they change the images/s;
- peak RSS main: the kernel's high-water mark of the child, from ``os.wait4`` (``ru_maxrss``: the
  largest of the child and its reaped DataLoader workers, not their sum);
- peak RSS tree: the largest sum of RSS over the child and all its descendants (DataLoader workers),
  polled with ``psutil`` every 0.2 s (a page shared after ``fork`` counts in every process mapping it);
- processes at peak tree: how many processes that sum was over (the child and its workers);
- peak PSS tree: the largest sum of proportional set sizes over the same tree, polled every second (a
  page shared by n processes counts 1/n in each: the memory the run really occupies);
- mean training loss (box + objectness + class) of the first and last epoch, and in how many
  epochs it fell below the epoch before (``--scratch`` shows training from random weights);
- final mAP50 and mAP50-95 on the val split of the final EMA weights: "own val" from each run's
  ``results.csv`` (conf 0.001, IoU 0.6, max 300 detections on both sides, but each with its own
  loader and AP code), "yolotr val" with yolotr's validator for both (the official run's weights
  are handed over as YAML + tensors), the like-for-like accuracy comparison.

The official side needs YOLO-format labels: the VOC XML is converted (corners ``(xmin - 1,
ymin - 1, xmax, ymax)``, as yolotr reads VOC) into a temporary ``images/`` (symlinks) +
``labels/`` layout. The official code is the ``yolov5`` pip package (7.0.14) with the imports
it cannot do without (the ``bench`` extra; installed here with ``pip install --no-deps yolov5==7.0.14
roboflow requests-toolbelt python-dotenv filetype pillow-avif-plugin`` so that torch stays as it
is; ``psutil`` is needed too). It runs offline: no Hugging Face Hub lookup for the local
checkpoint, ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS``, ``YOLO_OFFLINE``, a local TrueType font in
place of the ``Arial.ttf`` it would download, no plots. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` lets
it unpickle its checkpoints under torch >= 2.6, ``np.trapz`` is restored for numpy >= 2.4, and its
``noval`` (which crashes in 7.0.14) is reproduced by skipping the epoch-end validations before the last.

Timings are only as good as the machine is quiet: with 2 threads on 2 cores, any other busy process
slows an epoch several-fold (OpenMP threads wait on each other). The load average is logged per side.

    python bench/train.py                       # both sides, 10 epochs (~4 min on 2 idle CPU cores)
    python bench/train.py --epochs 3 --only yolotr
    python bench/train.py --scratch             # yolov5n.yaml from random weights on both sides
    python bench/train.py --seed 1              # mAP after 10 short epochs moves with the seed
    python bench/train.py --workdir /tmp/bench  # keep the runs and the child logs

Data root: ``$YOLOTR_SHARED`` (default ``<repo>/../shared``), with ``weights/yolov5n.pt`` and
``data/raccoon/{images,annotations,train.txt,val.txt}``.

``--family anchor-free``: ``yolov8n.yaml`` from random weights on the built-in shapes set
(``yolotr.data.synthetic.make_shapes_dataset``, written in YOLO format into the work folder: 256 train /
64 val images of 128 px, 3 classes), yolotr's trainer against the ``ultralytics`` package's
(``YOLO("yolov8n.yaml").train(...)``, 8.4.190, ``pip install --no-deps ultralytics==8.4.190 polars
polars-runtime-32 psutil``), seeds 0, 1 and 2, each seed and side in its own subprocess, the order of
the two sides alternating from seed to seed. Both sides: imgsz 128, batch 16, 10 epochs, SGD lr0 0.01,
lrf 0.01, linear decay, nominal batch 16 (an optimizer step per batch: 160 steps, which reach a
mAP50-95 of about 0.2), warmup 1 epoch (``round(warmup_epochs x batches)`` iterations as the package
counts them: yolotr's ``warmup_min_iters`` 0), the package's
augmentation defaults (which yolotr's mirror; a mismatch is logged), ``close_mosaic`` 0 (the
package's default is 10), no AMP, 2 torch threads and 2 DataLoader workers (on a CPU the package
would take ``cpu_count - 1`` threads and 0 workers: its ``NUM_THREADS`` and the trainer's ``workers``
are set back), validation after the last epoch only (conf 0.001, NMS IoU 0.7 as the package
validates, max 300 detections). The package runs offline: ``YOLO_OFFLINE`` (it then tries no font or
asset download: no socket is opened), its settings in the work folder with ``sync=False``, no plots,
no AMP check. "yolotr val" validates the package's final EMA weights (``weights/last.pt``) with
yolotr's validator through ``yolotr.YOLO(path)``, in the parent process (which never imports
``ultralytics``); "package val" is the package's validator on both, yolotr's final EMA weights loaded
by name into its ``DetectionModel`` in a subprocess. Both validators use multi-label NMS (every class
above conf is a candidate, as YOLOv5's ``val.py``); before yolotr's did, its one-class-per-box NMS read
about 0.1 lower in mAP50-95 on these 3 classes. Each row gives the mean over the seeds, then the seeds;
the bars are checked below.

    python bench/train.py --family anchor-free                 # 3 seeds x 2 sides, ~25 min on 2 idle cores
    python bench/train.py --family anchor-free --seed 0 --epochs 2 --only ultralytics
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from machine import machine_line
from shared_data import raccoon_data, raccoon_root, shared_root

LOGGER = logging.getLogger("bench.train")
SIDES = ("yolotr", "official", "ultralytics")
CHILDREN = (*SIDES, "ultralytics-val")  # the last: the package's validator on yolotr's final weights
FAMILY_SIDES = {"yolov5": ("yolotr", "official"), "anchor-free": ("yolotr", "ultralytics")}
FAMILY_DEFAULTS = {  # what None (not given on the command line) becomes, per family
    "yolov5": {"epochs": 10, "imgsz": 320, "seed": [0]},
    "anchor-free": {"epochs": 10, "imgsz": 128, "seed": [0, 1, 2]},
}
AF_MODEL = "yolov8n.yaml"
AF_VAL_IOU = 0.7  # the package's NMS IoU when it validates during training; yolotr's side is set to it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def weights_path() -> Path:
    path = shared_root() / "weights" / "yolov5n.pt"
    if not path.is_file():
        sys.exit(f"official checkpoint not found at {path}: set YOLOTR_SHARED")
    return path


def split_stems(root: Path, split: str) -> list[str]:
    return [s.strip() for s in (root / f"{split}.txt").read_text().splitlines() if s.strip()]


def find_image(root: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (root / "images" / f"{stem}{suffix}").is_file():
            return root / "images" / f"{stem}{suffix}"
    raise FileNotFoundError(f"no image for {stem} in {root / 'images'}")


# --------------------------------------------------------------------------- official data layout


def voc_to_yolo(root: Path, out: Path, names: list[str]) -> Path:
    """Write ``out/{images,labels}`` (image symlinks, YOLO txt) and ``out/data.yaml`` for YOLOv5."""
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    index = {n: i for i, n in enumerate(names)}
    for split in ("train", "val"):
        listed = []
        for stem in split_stems(root, split):
            image = find_image(root, stem)
            link = out / "images" / image.name
            if not link.exists():
                link.symlink_to(image)
            with Image.open(image) as im:
                w, h = im.size
            lines = []
            for obj in ET.parse(root / "annotations" / f"{stem}.xml").getroot().iter("object"):
                box = obj.find("bndbox")
                x1, y1, x2, y2 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
                x1, y1, x2, y2 = max(x1 - 1, 0.0), max(y1 - 1, 0.0), min(x2, w), min(y2, h)
                if x2 <= x1 or y2 <= y1:
                    continue
                cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                lines.append(f"{index[obj.find('name').text.strip()]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
            (out / "labels" / f"{image.stem}.txt").write_text("".join(f"{line}\n" for line in lines))
            listed.append(str(link))
        (out / f"{split}.txt").write_text("".join(f"{p}\n" for p in listed))
    data = out / "data.yaml"
    data.write_text(
        f"path: {out}\ntrain: {out / 'train.txt'}\nval: {out / 'val.txt'}\n"
        f"names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    )
    return data


def place_font(config_dir: Path) -> None:
    """Give YOLOv5 a local ``Arial.ttf`` (any TrueType font) so ``check_dataset`` downloads nothing."""
    import matplotlib

    config_dir.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (config_dir / name).exists():
            shutil.copy(font, config_dir / name)


# --------------------------------------------------------------------------- children


def tree_cpu_seconds() -> float:
    """User + system CPU seconds so far of this process and its live descendants (DataLoader workers)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in (me, *me.children(recursive=True)):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class Marks:
    """Time stamps (and CPU seconds of the process tree) at the first batch of each epoch and at the
    end of each epoch's batches."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.cpu_starts: list[float] = []
        self.cpu_ends: list[float] = []
        self.images = 0
        self._open = False

    def batch_start(self, *_args, **_kwargs) -> None:
        if not self._open:
            self.starts.append(time.time())
            self.cpu_starts.append(tree_cpu_seconds())
            self._open = True

    def epoch_end(self, *_args, **_kwargs) -> None:
        self.ends.append(time.time())
        self.cpu_ends.append(tree_cpu_seconds())
        self._open = False

    def summary(self) -> dict:
        return {
            "train_s": self.ends[-1] - self.starts[0],
            "epoch_s": [round(e - s, 2) for s, e in zip(self.starts, self.ends)],
            "epoch_cpu_s": [round(e - s, 2) for s, e in zip(self.cpu_starts, self.cpu_ends)],
            "images_seen": self.images,
        }


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` (YOLOv5 pads its column names and values with spaces)."""
    with open(path, newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        raise RuntimeError(f"{path}: no rows")
    return rows


def epoch_losses(rows: list[dict[str, str]]) -> list[float]:
    """Mean training loss of each epoch: the sum of its ``train/*_loss`` columns (box + objectness +
    class for YOLOv5's head, box + class + DFL for the anchor-free one), as the trainers log them."""
    keys = [k for k in rows[0] if k.startswith("train/") and k.endswith("_loss")]
    if not keys:
        raise RuntimeError(f"no train/*_loss columns in results.csv: {list(rows[0])}")
    return [sum(float(r[k]) for k in keys) for r in rows]


def shapes_yaml(workdir: Path) -> Path:
    """The anchor-free side's dataset: the shapes set the parent wrote (YOLO format, ``data.yaml``)."""
    return workdir / "shapes" / "data.yaml"


def official_yaml(name: str) -> str:
    """Path of a model YAML shipped in the ``yolov5`` package (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the yolov5 package is not installed: pip install -e .[bench]")
    return str(Path(next(iter(spec.submodule_search_locations))) / "models" / name)


def child_yolotr(args: argparse.Namespace, workdir: Path) -> dict:
    import torch

    from yolotr.cli import set_overrides
    from yolotr.engine.trainer import Trainer

    torch.set_num_threads(args.threads)
    marks = Marks()

    class TimedTrainer(Trainer):
        def _end_epoch(self, epoch, mean_loss, t0):  # the epoch's batches are done; validation follows
            marks.epoch_end()
            marks.images += len(self.train_set)
            return super()._end_epoch(epoch, mean_loss, t0)

    if not hasattr(Trainer, "_end_epoch"):
        raise RuntimeError("yolotr's Trainer has no _end_epoch any more: update bench/train.py's timing hook")
    cfg = dict(
        model="yolov5n.yaml" if args.scratch else str(weights_path()),
        data=raccoon_data(),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        nbs=64,
        workers=args.workers,
        device="cpu",
        seed=args.seed,
        amp=False,
        optimizer="SGD",
        lr0=0.01,
        cos_lr=False,
        val=True,
        val_period=args.epochs,
        project=str(workdir),
        name=run_name("yolotr", args),
        exist_ok=True,
    )
    if args.family == "anchor-free":
        # the package's schedule: warmup round(3 x batches) iterations (no 100-iteration floor), no
        # mosaic switch-off (set to 0 on both sides), NMS IoU 0.7 in the validation after the last epoch
        cfg.update(
            model=AF_MODEL,
            data=str(shapes_yaml(workdir)),
            nbs=args.nbs,
            warmup_epochs=args.warmup_epochs,
            warmup_min_iters=0,
            close_mosaic=0,
            val_iou=AF_VAL_IOU,
        )
    cfg.update(set_overrides(args.set))
    trainer = TimedTrainer(cfg)
    trainer.add_callback("on_batch_start", marks.batch_start)
    result = trainer.train()
    rows = read_rows(Path(result["save_dir"]) / "results.csv")
    row = rows[-1]
    return {
        **marks.summary(),
        "threads": torch.get_num_threads(),
        "losses": epoch_losses(rows),
        "train_images": len(trainer.train_set),
        "map50": float(row["metrics/mAP50"]),
        "map50_95": float(row["metrics/mAP50-95"]),
        "save_dir": result["save_dir"],
    }


def child_official(args: argparse.Namespace, workdir: Path) -> dict:
    import numpy as np
    import torch

    if not hasattr(np, "trapz"):  # removed in numpy 2.4; YOLOv5 7.0's compute_ap integrates with it
        np.trapz = np.trapezoid
    sys.argv = sys.argv[:1]  # parse_opt reads the command line: give it only the defaults
    from yolov5 import train as v5train
    from yolov5.utils import downloads
    from yolov5.utils.callbacks import Callbacks

    torch.set_num_threads(args.threads)  # yolov5.utils.general sets OMP_NUM_THREADS to cpu_count - 1
    # a local .pt: no Hugging Face Hub lookup (it would need huggingface_hub and the network)
    v5train.attempt_download_from_hub = downloads.attempt_download_from_hub = lambda *a, **k: None
    marks = Marks()
    # noval: the pip package's train() reads `map50s` after every epoch but sets it only when it
    # validates, so noval=True crashes after epoch 1. Instead run with noval=False and answer the
    # epoch-end validations before the last with what noval leaves there (zeros): the same run.
    validate_run = v5train.validate.run

    def validate_last_epoch_only(*a, **k):
        if len(marks.ends) < args.epochs:
            nc = len(k["model"].names) if "model" in k else 1
            return (0.0,) * 7, np.zeros(nc), np.zeros(nc), None
        return validate_run(*a, **k)

    v5train.validate.run = validate_last_epoch_only

    def count(_model, _ni, imgs, *_rest):
        marks.images += int(imgs.shape[0])

    callbacks = Callbacks()
    callbacks.register_action("on_train_batch_start", callback=marks.batch_start)
    callbacks.register_action("on_train_batch_end", callback=count)
    callbacks.register_action("on_train_epoch_end", callback=marks.epoch_end)
    opt = v5train.parse_opt(True)
    for key, value in dict(
        weights="" if args.scratch else str(weights_path()),
        cfg=official_yaml("yolov5n.yaml") if args.scratch else "",
        data=str(workdir / "raccoon-yolo" / "data.yaml"),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch_size=args.batch,
        workers=args.workers,
        device="cpu",
        seed=args.seed,
        optimizer="SGD",
        cos_lr=False,
        noval=False,  # see validate_last_epoch_only
        noplots=True,
        project=str(workdir),
        name=run_name("official", args),
        exist_ok=True,
    ).items():
        setattr(opt, key, value)
    v5train.main(opt, callbacks=callbacks)
    rows = read_rows(Path(opt.save_dir) / "results.csv")
    row = rows[-1]
    # the final EMA weights as YAML + plain tensors, for yolotr's validator (its unpickler only takes
    # the GitHub repo's module paths, not the pip package's yolov5.models.*)
    final = torch.load(Path(opt.save_dir) / "weights" / "last.pt", map_location="cpu", weights_only=False)
    model = final.get("ema") or final["model"]
    plain = {"yaml": dict(model.yaml), "state_dict": {k: v.float() for k, v in model.state_dict().items()}}
    final_weights = workdir / f"{run_name('official', args)}-final.pt"
    torch.save(plain, final_weights)
    return {
        **marks.summary(),
        "threads": torch.get_num_threads(),
        "losses": epoch_losses(rows),
        "train_images": marks.images // max(len(marks.ends), 1),
        "map50": float(row["metrics/mAP_0.5"]),
        "map50_95": float(row["metrics/mAP_0.5:0.95"]),
        "save_dir": str(opt.save_dir),
        "final_weights": str(final_weights),
    }


def child_ultralytics(args: argparse.Namespace, workdir: Path) -> dict:
    """``yolov8n.yaml`` from scratch with the ``ultralytics`` package's own trainer."""
    import torch
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import SETTINGS, torch_utils

    SETTINGS.update(sync=False)  # no analytics events (YOLO_OFFLINE already keeps it from the network)
    torch_utils.NUM_THREADS = args.threads  # select_device sets torch's threads to it (cpu_count - 1 by default)
    marks = Marks()
    threads_seen: list[int] = []
    workers = args.workers

    class SameWorkersTrainer(DetectionTrainer):
        """The package's detection trainer, keeping ``workers`` (it sets 0 on a CPU) so both sides load alike."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.args.workers = workers

    def epoch_end(trainer) -> None:  # the epoch's batches are done; validation and saving follow
        marks.epoch_end()
        marks.images += len(trainer.train_loader.dataset)
        threads_seen.append(torch.get_num_threads())

    model = YOLO(AF_MODEL)
    model.add_callback("on_train_batch_start", marks.batch_start)
    model.add_callback("on_train_epoch_end", epoch_end)
    model.train(
        trainer=SameWorkersTrainer,
        data=str(shapes_yaml(workdir)),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        nbs=args.nbs,
        workers=args.workers,
        device="cpu",
        seed=args.seed,
        deterministic=True,
        optimizer="SGD",
        lr0=0.01,
        lrf=0.01,
        cos_lr=False,
        warmup_epochs=args.warmup_epochs,
        close_mosaic=0,
        amp=False,
        plots=False,
        val=False,  # the package still validates after the last epoch
        iou=AF_VAL_IOU,
        max_det=300,
        project=str(workdir),
        name=run_name("ultralytics", args),
        exist_ok=True,
    )
    save_dir = Path(model.trainer.save_dir)
    rows = read_rows(save_dir / "results.csv")
    row = rows[-1]
    return {
        **marks.summary(),
        "threads": min(threads_seen),
        "losses": epoch_losses(rows),
        "train_images": marks.images // max(len(marks.ends), 1),
        "map50": float(row["metrics/mAP50(B)"]),
        "map50_95": float(row["metrics/mAP50-95(B)"]),
        "save_dir": str(save_dir),
        "final_weights": str(save_dir / "weights" / "last.pt"),  # the final EMA weights, optimizer stripped
    }


def child_ultralytics_val(args: argparse.Namespace, workdir: Path) -> dict:
    """The package's own validator (multi-label NMS) on yolotr's final EMA weights, loaded by name into
    the package's ``DetectionModel`` (the keys are the same)."""
    import contextlib
    import io

    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel as UltralyticsModel
    from ultralytics.utils import SETTINGS, torch_utils

    SETTINGS.update(sync=False)
    torch_utils.NUM_THREADS = args.threads
    checkpoint = torch.load(args.weights, map_location="cpu", weights_only=True)
    names = list(checkpoint["names"])
    with contextlib.redirect_stdout(io.StringIO()):
        model = UltralyticsModel(AF_MODEL, nc=len(names), verbose=False)
    model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()}, strict=True)
    model.names = dict(enumerate(names))
    wrapper = YOLO(AF_MODEL)
    wrapper.model = model
    metrics = wrapper.val(
        data=str(shapes_yaml(workdir)),
        imgsz=args.imgsz,
        batch=args.batch,
        conf=0.001,
        iou=AF_VAL_IOU,
        max_det=300,
        device="cpu",
        workers=args.workers,
        plots=False,
        project=str(workdir),
        name=f"ultralytics-val-seed{args.seed}",
        exist_ok=True,
    )
    return {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map), "threads": torch.get_num_threads()}


def run_name(side: str, args: argparse.Namespace) -> str:
    return f"{side}-seed{args.seed}"


def yolotr_validate_ultralytics(path: str, args: argparse.Namespace, workdir: Path) -> tuple[float, float]:
    """mAP50 and mAP50-95 of the package's final EMA weights, imported and validated by yolotr."""
    import torch

    from yolotr import YOLO
    from yolotr.engine.validator import validate

    torch.set_num_threads(args.threads)
    model = YOLO(path, verbose=False).model.float().eval()
    result = validate(
        model,
        str(shapes_yaml(workdir)),
        "val",
        imgsz=args.imgsz,
        batch_size=args.batch,
        iou=AF_VAL_IOU,
        workers=args.workers,
        verbose=False,
    )
    return result.map50, result.map50_95


def yolotr_validate_official(path: str, args: argparse.Namespace) -> tuple[float, float]:
    """mAP50 and mAP50-95 of the official run's final EMA weights, by yolotr's validator."""
    import torch

    from yolotr.engine.validator import validate
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import load_exact

    torch.set_num_threads(args.threads)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = DetectionModel(saved["yaml"])
    load_exact(model, saved["state_dict"], path)
    model.names = ["raccoon"]
    model = model.float().eval()
    result = validate(
        model, raccoon_data(), "val", imgsz=args.imgsz, batch_size=args.batch, workers=args.workers, verbose=False
    )
    return result.map50, result.map50_95


def child(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    workdir = Path(args.workdir)
    (args.seed,) = args.seed  # the parent passes the one seed of this run
    run = {
        "yolotr": child_yolotr,
        "official": child_official,
        "ultralytics": child_ultralytics,
        "ultralytics-val": child_ultralytics_val,
    }[args.child]
    Path(args.result).write_text(json.dumps(run(args, workdir)))


# --------------------------------------------------------------------------- parent


def tree_pss(tree: list) -> int:
    """Sum of the proportional set sizes (bytes) of ``tree``'s processes (those that have exited count 0)."""
    import psutil

    total = 0
    for p in tree:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_side(side: str, seed: int, args: argparse.Namespace, workdir: Path, weights: str | None = None) -> dict:
    """Run one side with one seed in a subprocess; its result plus wall time and peak memory.

    ``side`` ``ultralytics-val`` validates yolotr's ``weights`` with the package instead of training."""
    import psutil

    result_file = workdir / f"{side}-seed{seed}.json"
    log_file = workdir / f"{side}-seed{seed}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        side,
        "--result",
        str(result_file),
        "--workdir",
        str(workdir),
        *("--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", str(args.batch)),
        *("--workers", str(args.workers), "--threads", str(args.threads), "--seed", str(seed)),
        *("--family", args.family, "--nbs", str(args.nbs), "--warmup-epochs", str(args.warmup_epochs)),
        *(("--scratch",) if args.scratch else ()),
        *(("--weights", weights) if weights else ()),
        *(arg for item in args.set for arg in ("--set", item)),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["PYTHONUNBUFFERED"] = "1"
    if side == "official":
        env.update(
            YOLOV5_CONFIG_DIR=str(workdir / "yolov5-config"),
            ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS="1",
            YOLO_OFFLINE="1",
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
            WANDB_MODE="disabled",
        )
    if side in ("ultralytics", "ultralytics-val"):
        env.update(YOLO_CONFIG_DIR=str(workdir / "ultralytics-config"), YOLO_OFFLINE="1", WANDB_MODE="disabled")
    LOGGER.info("%s seed %d: running (log %s); load average %.2f", side, seed, log_file, os.getloadavg()[0])
    t0 = time.time()
    peak_tree = 0
    peak_tree_procs, peak_pss, polls = 0, 0, 0
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        parent = psutil.Process(proc.pid)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                tree = [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak_tree = max(peak_tree, total)
            if total >= peak_tree:
                peak_tree_procs = len(tree)
            polls += 1
            if polls % 5 == 1:  # PSS reads every mapping of every process: once a second
                peak_pss = max(peak_pss, tree_pss(tree))
            time.sleep(0.2)
    wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4, not by Popen
    if proc.returncode != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        LOGGER.error("%s failed (exit %s); last lines of %s:\n%s", side, proc.returncode, log_file, "\n".join(tail))
        sys.exit(1)
    result = json.loads(result_file.read_text())
    result.update(wall_s=wall, rss_main_mib=usage.ru_maxrss / 1024, rss_tree_mib=peak_tree / 2**20)
    result.update(pss_tree_mib=peak_pss / 2**20, tree_procs=peak_tree_procs)
    if side == "ultralytics-val":
        return result
    result["cpu_s"] = usage.ru_utime + usage.ru_stime  # the child and its reaped workers, whole run
    if result["threads"] != args.threads:
        LOGGER.warning("%s trained with %d torch threads, not %d", side, result["threads"], args.threads)
    LOGGER.info(
        "%s seed %d: %.0f s wall, %.0f s training (epochs %s s), mAP50 %.3f, load average %.2f; run in %s",
        side,
        seed,
        wall,
        result["train_s"],
        result["epoch_s"],
        result["map50"],
        os.getloadavg()[0],
        result["save_dir"],
    )
    return result


def check_hyp_mirror() -> None:
    """Warn where yolotr's defaults differ from the official hyp.scratch-low.yaml."""
    import importlib.util

    import yaml

    from yolotr.engine.config import default_config

    spec = importlib.util.find_spec("yolov5")  # located, not imported: its import is slow and noisy
    if spec is None or not spec.submodule_search_locations:
        return
    hyp_file = Path(next(iter(spec.submodule_search_locations))) / "data" / "hyps" / "hyp.scratch-low.yaml"
    hyp = yaml.safe_load(hyp_file.read_text())
    ours = default_config()
    unused = {"iou_t"}  # in the hyp file, read by nothing in YOLOv5 7.0's training
    differ = {k: (ours[k], v) for k, v in hyp.items() if k in ours and ours[k] != v}
    missing = sorted(k for k, v in hyp.items() if k not in ours and k not in unused and v)
    if differ or missing:
        LOGGER.warning("yolotr defaults (ours, official) differ: %s; not in yolotr: %s", differ, missing)


def check_af_mirror() -> None:
    """Warn where yolotr's defaults differ from the ``ultralytics`` package's ``cfg/default.yaml``
    on the keys the anchor-free bench leaves at their defaults (the rest it sets on both sides)."""
    import importlib.util

    import yaml

    from yolotr.engine.config import default_config

    spec = importlib.util.find_spec("ultralytics")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the ultralytics package is not installed: pip install --no-deps ultralytics==8.4.190")
    theirs = yaml.safe_load((Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml").read_text())
    ours = default_config()
    pairs = {k: k for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective")}
    pairs.update({k: k for k in ("flipud", "fliplr", "mosaic", "momentum", "weight_decay", "warmup_momentum")})
    pairs.update(warmup_bias_lr="warmup_bias_lr", nbs="nbs", lrf="lrf", conf=None, box="af_box", cls="af_cls")
    pairs.update(dfl="dfl", mixup=None, copy_paste=None, cutmix=None, max_det="max_det")
    differ = {}
    for key, our_key in pairs.items():
        if our_key is None:  # augmentations yolotr does not have: they must be off in the package
            if theirs.get(key):
                differ[key] = (None, theirs[key])
        elif ours[our_key] != theirs[key]:
            differ[key] = (ours[our_key], theirs[key])
    if differ:
        LOGGER.warning("yolotr defaults (ours, ultralytics) differ: %s", differ)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def print_table(args: argparse.Namespace, results: dict[str, list[dict]], task: str, markdown: bool) -> None:
    """One row per measure: each side's mean over the seeds, the ratio of the means, then the seeds."""
    rows = [
        ("wall time (s)", "wall_s", ".0f"),
        ("CPU time (s)", "cpu_s", ".0f"),
        ("train time (s)", "train_s", ".1f"),
        ("images/s", "images_per_s", ".2f"),
        ("images/s median epoch", "images_per_s_median", ".2f"),
        ("images/CPU-s median ep.", "images_per_cpu_s_median", ".2f"),
        ("peak RSS main (MiB)", "rss_main_mib", ".0f"),
        ("peak RSS tree (MiB)", "rss_tree_mib", ".0f"),
        ("processes at peak tree", "tree_procs", ".0f"),
        ("peak PSS tree (MiB)", "pss_tree_mib", ".0f"),
        ("mAP50 own val", "map50", ".3f"),
        ("mAP50-95 own val", "map50_95", ".3f"),
        ("mAP50 yolotr val", "map50_y", ".3f"),
        ("mAP50-95 yolotr val", "map50_95_y", ".3f"),
        ("mAP50 package val", "map50_u", ".3f"),
        ("mAP50-95 package val", "map50_95_u", ".3f"),
        ("train loss epoch 1", "loss_first", ".4f"),
        ("train loss last epoch", "loss_last", ".4f"),
        ("epochs loss fell", "loss_falls", ".0f"),
    ]
    for runs in results.values():
        for result in runs:
            losses = result["losses"]
            result.update(loss_first=losses[0], loss_last=losses[-1])
            result["loss_falls"] = sum(b < a for a, b in zip(losses, losses[1:]))
    print(f"{task}; {machine_line()}")
    sides = [s for s in SIDES if s in results]
    ref = sides[-1] if len(sides) == 2 else None
    seeds = [r["seed"] for r in results[sides[0]]]
    head = ["", *sides] + ([f"yolotr/{ref}"] if ref else [])
    if len(seeds) > 1:
        head[1 : 1 + len(sides)] = [f"{s} mean" for s in sides]
        head += [f"{s} s{seed}" for s in sides for seed in seeds]
    widths = [22] + [max(12, len(h) + 2) for h in head[1:]]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|---|" + "---:|" * (len(head) - 1))
    else:
        print("".join(f"{h:<{widths[0]}}" if i == 0 else f"{h:>{widths[i]}}" for i, h in enumerate(head)))
    for label, key, fmt in rows:
        if any(key not in r for s in sides for r in results[s]):  # e.g. "package val": anchor-free only
            continue
        means = [mean([r[key] for r in results[s]]) for s in sides]
        cells = [format(m, fmt) for m in means]
        if ref:
            cells.append(f"{(means[0] / means[1] if means[1] else math.nan):.2f}")
        if len(seeds) > 1:
            cells += [format(r[key], fmt) for s in sides for r in results[s]]
        if markdown:
            print("| " + " | ".join([label, *cells]) + " |")
        else:
            print(f"{label:<{widths[0]}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths[1:])))
    if args.family == "anchor-free" and ref:

        def side_mean(side: str, key: str) -> float:
            return mean([r[key] for r in results[side]])

        checks = [  # (bar, key, True when higher is better)
            ("mean mAP50-95 (own val) >= the package's", "map50_95", True),
            ("mean mAP50-95 (yolotr val on both) >= the package's", "map50_95_y", True),
            ("mean mAP50-95 (package val on both) >= the package's", "map50_95_u", True),
            ("images/s (median epoch) >= 1.0x", "images_per_s_median", True),
            ("images/CPU-s (median epoch) >= 1.0x", "images_per_cpu_s_median", True),
            ("peak RSS main <= 1.0x", "rss_main_mib", False),
            ("peak RSS tree <= 1.0x", "rss_tree_mib", False),
        ]
        for text, key, higher in checks:
            if any(key not in r for s in sides for r in results[s]):
                continue
            a, b = side_mean("yolotr", key), side_mean(ref, key)
            ok = a >= b if higher else a <= b
            print(f"bar: {text}: {a:.3f} vs {b:.3f} -> {'met' if ok else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=tuple(FAMILY_SIDES), default="yolov5", help="which comparison")
    parser.add_argument("--epochs", type=int, help="default 10")
    parser.add_argument("--imgsz", type=int, help="default 320 (yolov5), 128 (anchor-free)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers on both sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument(
        "--seed", type=int, nargs="+", help="training seeds, each a run of both sides; default 0 (yolov5), 0 1 2"
    )
    parser.add_argument("--train-images", type=int, default=256, help="anchor-free: shapes train images")
    parser.add_argument("--val-images", type=int, default=64, help="anchor-free: shapes val images")
    parser.add_argument("--nbs", type=int, default=16, help="anchor-free: nominal batch on both sides")
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="anchor-free: warmup epochs on both sides")
    parser.add_argument("--scratch", action="store_true", help="yolov5: train yolov5n.yaml from random weights")
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="yolotr side: a training setting over the shared ones (YAML value), e.g. lean_activations=false",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--workdir", help="keep runs and child logs here (default: a temporary folder)")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for key, value in FAMILY_DEFAULTS[args.family].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.child:
        child(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    family_sides = FAMILY_SIDES[args.family]
    if args.only and args.only not in family_sides:
        parser.error(f"--only {args.only}: the {args.family} comparison has sides {family_sides}")
    sides = [args.only] if args.only else list(family_sides)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.family == "yolov5":
            root, weights = raccoon_root(), weights_path()
            n_train, n_val = len(split_stems(root, "train")), len(split_stems(root, "val"))
            LOGGER.info("%s: %d train / %d val images; weights %s", root, n_train, n_val, weights)
            check_hyp_mirror()
            if "official" in sides:
                voc_to_yolo(root, workdir / "raccoon-yolo", ["raccoon"])
                place_font(workdir / "yolov5-config")
            task = "train yolov5n.yaml from scratch" if args.scratch else "fine-tune yolov5n.pt"
            task += " on raccoon"
        else:
            from yolotr.data.synthetic import make_shapes_dataset

            check_af_mirror()
            data = make_shapes_dataset(workdir / "shapes", args.train_images, args.val_images, args.imgsz, seed=0)
            n_train, n_val = args.train_images, args.val_images
            LOGGER.info("%s: %d train / %d val images", data, n_train, n_val)
            if n_train % args.batch:
                LOGGER.warning("%d train images do not fill whole batches of %d", n_train, args.batch)
            task = f"train {AF_MODEL} from scratch on shapes"
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for i, seed in enumerate(args.seed):
            for side in sides if i % 2 == 0 else sides[::-1]:  # alternate who goes first
                result = run_side(side, seed, args, workdir)
                result["seed"] = seed
                result["images_per_s"] = args.epochs * n_train / result["train_s"]
                result["images_per_s_median"] = n_train / statistics.median(result["epoch_s"])
                result["images_per_cpu_s_median"] = n_train / statistics.median(result["epoch_cpu_s"])
                if result["train_images"] != n_train:
                    LOGGER.warning("%s trained on %d images per epoch, not %d", side, result["train_images"], n_train)
                if side == "yolotr":
                    result.update(map50_y=result["map50"], map50_95_y=result["map50_95"])
                    if args.family == "anchor-free" and not args.only:
                        LOGGER.info(
                            "yolotr seed %d: validating its final EMA weights with the package's validator", seed
                        )
                        last = str(Path(result["save_dir"]) / "weights" / "last.pt")
                        theirs = run_side("ultralytics-val", seed, args, workdir, weights=last)
                        result.update(map50_u=theirs["map50"], map50_95_u=theirs["map50_95"])
                elif side == "ultralytics":
                    result.update(map50_u=result["map50"], map50_95_u=result["map50_95"])
                else:
                    LOGGER.info("%s seed %d: validating its final EMA weights with yolotr's validator", side, seed)
                    if side == "official":
                        map50, map50_95 = yolotr_validate_official(result["final_weights"], args)
                    else:
                        map50, map50_95 = yolotr_validate_ultralytics(result["final_weights"], args, workdir)
                    result.update(map50_y=map50, map50_95_y=map50_95)
                results[side].append(result)
        for side in sides:  # in seed order
            results[side].sort(key=lambda r: args.seed.index(r["seed"]))
        (workdir / "results.json").write_text(json.dumps(results, indent=1))
    task += (
        f" ({n_train} train / {n_val} val images), imgsz {args.imgsz}, batch {args.batch}, {args.epochs} epochs, "
        f"SGD lr0 0.01, seeds {' '.join(map(str, args.seed))}, CPU, {args.threads} threads, {args.workers} workers"
    )
    print_table(args, results, task, args.markdown)


if __name__ == "__main__":
    main()
