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
- train time: from the start of the first batch (the DataLoader has delivered it) to the end of the
  last epoch's last batch, read inside the child through the trainers' hooks (official callbacks
  ``on_train_batch_start``/``on_train_epoch_end``; yolotr ``on_batch_start`` and ``_end_epoch``);
  per-epoch checkpointing is inside, setup, AutoAnchor and validation are not;
- images/s = epochs x train images / train time (the same definition on both sides), and the same
  from the median epoch (first to last batch of one epoch), which shrugs off a few disturbed epochs;
- peak RSS main: the kernel's high-water mark of the child, from ``os.wait4`` (``ru_maxrss``: the
  largest of the child and its reaped DataLoader workers, not their sum);
- peak RSS tree: the largest sum of RSS over the child and all its descendants (DataLoader workers),
  polled with ``psutil`` every 0.2 s (a page shared after ``fork`` counts in every process mapping it);
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

from shared_data import raccoon_data, raccoon_root, shared_root

LOGGER = logging.getLogger("bench.train")
SIDES = ("yolotr", "official")
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


class Marks:
    """Time stamps of the first batch of each epoch and of the end of each epoch's batches."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.images = 0
        self._open = False

    def batch_start(self, *_args, **_kwargs) -> None:
        if not self._open:
            self.starts.append(time.time())
            self._open = True

    def epoch_end(self, *_args, **_kwargs) -> None:
        self.ends.append(time.time())
        self._open = False

    def summary(self) -> dict:
        return {
            "train_s": self.ends[-1] - self.starts[0],
            "epoch_s": [round(e - s, 2) for s, e in zip(self.starts, self.ends)],
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
    """Mean training loss of each epoch: box + objectness + class, as both trainers log them."""
    return [sum(float(r[f"train/{k}_loss"]) for k in ("box", "obj", "cls")) for r in rows]


def official_yaml(name: str) -> str:
    """Path of a model YAML shipped in the ``yolov5`` package (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the yolov5 package is not installed: pip install -e .[bench]")
    return str(Path(next(iter(spec.submodule_search_locations))) / "models" / name)


def child_yolotr(args: argparse.Namespace, workdir: Path) -> dict:
    import torch

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
    trainer = TimedTrainer(
        dict(
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
            name="yolotr",
            exist_ok=True,
        )
    )
    trainer.add_callback("on_batch_start", marks.batch_start)
    result = trainer.train()
    rows = read_rows(Path(result["save_dir"]) / "results.csv")
    row = rows[-1]
    return {
        **marks.summary(),
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
        name="official",
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
    torch.save(plain, workdir / "official-final.pt")
    return {
        **marks.summary(),
        "losses": epoch_losses(rows),
        "train_images": marks.images // max(len(marks.ends), 1),
        "map50": float(row["metrics/mAP_0.5"]),
        "map50_95": float(row["metrics/mAP_0.5:0.95"]),
        "save_dir": str(opt.save_dir),
        "final_weights": str(workdir / "official-final.pt"),
    }


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
    result = (child_yolotr if args.child == "yolotr" else child_official)(args, workdir)
    Path(args.result).write_text(json.dumps(result))


# --------------------------------------------------------------------------- parent


def run_side(side: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one side in a subprocess; its result plus wall time and peak memory."""
    import psutil

    result_file = workdir / f"{side}.json"
    log_file = workdir / f"{side}.log"
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
        *("--workers", str(args.workers), "--threads", str(args.threads), "--seed", str(args.seed)),
        *(("--scratch",) if args.scratch else ()),
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
    LOGGER.info("%s: running (log %s); load average %.2f", side, log_file, os.getloadavg()[0])
    t0 = time.time()
    peak_tree = 0
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
            time.sleep(0.2)
    wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4, not by Popen
    if proc.returncode != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        LOGGER.error("%s failed (exit %s); last lines of %s:\n%s", side, proc.returncode, log_file, "\n".join(tail))
        sys.exit(1)
    result = json.loads(result_file.read_text())
    result.update(wall_s=wall, rss_main_mib=usage.ru_maxrss / 1024, rss_tree_mib=peak_tree / 2**20)
    LOGGER.info(
        "%s: %.0f s wall, %.0f s training (epochs %s s), mAP50 %.3f, load average %.2f; run in %s",
        side,
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


def print_table(args: argparse.Namespace, results: dict[str, dict], n_train: int, n_val: int) -> None:
    rows = [
        ("wall time (s)", "wall_s", ".0f"),
        ("train time (s)", "train_s", ".1f"),
        ("images/s", "images_per_s", ".2f"),
        ("images/s median epoch", "images_per_s_median", ".2f"),
        ("peak RSS main (MiB)", "rss_main_mib", ".0f"),
        ("peak RSS tree (MiB)", "rss_tree_mib", ".0f"),
        ("mAP50 own val", "map50", ".3f"),
        ("mAP50-95 own val", "map50_95", ".3f"),
        ("mAP50 yolotr val", "map50_y", ".3f"),
        ("mAP50-95 yolotr val", "map50_95_y", ".3f"),
        ("train loss epoch 1", "loss_first", ".4f"),
        ("train loss last epoch", "loss_last", ".4f"),
        ("epochs loss fell", "loss_falls", ".0f"),
    ]
    for result in results.values():
        losses = result["losses"]
        result.update(loss_first=losses[0], loss_last=losses[-1])
        result["loss_falls"] = sum(b < a for a, b in zip(losses, losses[1:]))
    task = "train yolov5n.yaml from scratch" if args.scratch else "fine-tune yolov5n.pt"
    print(
        f"{task} on raccoon ({n_train} train / {n_val} val images), imgsz {args.imgsz}, "
        f"batch {args.batch}, {args.epochs} epochs, SGD lr0 0.01, seed {args.seed}, CPU, {args.threads} threads, "
        f"{args.workers} workers"
    )
    sides = [s for s in SIDES if s in results]
    both = len(sides) == 2
    print(f"{'':<22}" + "".join(f"{s:>12}" for s in sides) + (f"{'yolotr/official':>17}" if both else ""))
    for label, key, fmt in rows:
        line = f"{label:<22}" + "".join(f"{results[s][key]:>12{fmt}}" for s in sides)
        if both:
            a, b = results["yolotr"][key], results["official"][key]
            line += f"{(a / b if b else math.nan):>17.2f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers on both sides")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--seed", type=int, default=0, help="training seed on both sides")
    parser.add_argument("--scratch", action="store_true", help="train yolov5n.yaml from random weights instead")
    parser.add_argument("--only", choices=SIDES, help="run one side only")
    parser.add_argument("--workdir", help="keep runs and child logs here (default: a temporary folder)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root, weights = raccoon_root(), weights_path()
    n_train, n_val = len(split_stems(root, "train")), len(split_stems(root, "val"))
    LOGGER.info("%s: %d train / %d val images; weights %s", root, n_train, n_val, weights)
    sides = [args.only] if args.only else list(SIDES)
    check_hyp_mirror()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "official" in sides:
            voc_to_yolo(root, workdir / "raccoon-yolo", ["raccoon"])
            place_font(workdir / "yolov5-config")
        results = {}
        for side in sides:
            results[side] = run_side(side, args, workdir)
            results[side]["images_per_s"] = args.epochs * n_train / results[side]["train_s"]
            results[side]["images_per_s_median"] = n_train / statistics.median(results[side]["epoch_s"])
            if results[side]["train_images"] != n_train:
                seen = results[side]["train_images"]
                LOGGER.warning("%s trained on %d images per epoch, not %d", side, seen, n_train)
        if "yolotr" in results:
            results["yolotr"].update(map50_y=results["yolotr"]["map50"], map50_95_y=results["yolotr"]["map50_95"])
        if "official" in results:
            LOGGER.info("official: validating its final EMA weights with yolotr's validator")
            map50, map50_95 = yolotr_validate_official(results["official"]["final_weights"], args)
            results["official"].update(map50_y=map50, map50_95_y=map50_95)
    print_table(args, results, n_train, n_val)


if __name__ == "__main__":
    main()
