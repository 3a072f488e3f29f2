"""Transformer configs under bf16 autocast on the raccoon photos: finite loss at every step, no skipped step.

The bars of the Transformer-blocks and training issues: each config trains (SGD lr 0.01, imgsz 256,
batch 8, bf16 autocast on CPU) for 3 epochs = 60 steps with the engine (warmup, clipping, NaN guard).
Prints, per config, steps, skipped steps, first and last epoch loss and mAP50.

    python bench/stability.py                     # the n configs
    python bench/stability.py --configs yolov5s-swinv2 --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import torch
from shared_data import raccoon_data

from yolotr.engine.trainer import Trainer

CONFIGS = ["yolov5n-c3tr", "yolov5n-transformerc3", "yolov5n-swinv2", "yolov5n-hwd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows = []
    with tempfile.TemporaryDirectory() as project:
        for name in args.configs:
            t0 = time.time()
            trainer = Trainer(
                dict(
                    model=f"{name}.yaml",
                    data=raccoon_data(),
                    epochs=args.epochs,
                    imgsz=args.imgsz,
                    batch=args.batch,
                    nbs=args.batch,
                    optimizer="SGD",
                    lr0=0.01,
                    amp=True,
                    workers=2,
                    project=project,
                    name=name,
                    val_period=args.epochs,
                )
            )
            result = trainer.train()
            with open(Path(result["save_dir"]) / "results.csv") as f:
                losses = [sum(float(r[f"train/{k}_loss"]) for k in ("box", "obj", "cls")) for r in csv.DictReader(f)]
            finite = all(torch.isfinite(p).all() for p in trainer.model.parameters())
            rows.append(
                (
                    name,
                    trainer.nb * args.epochs,
                    len(result["nan_reports"]),
                    losses[0],
                    losses[-1],
                    result.get("metrics/mAP50", float("nan")),
                    finite,
                    time.time() - t0,
                )
            )
    print(f"bf16 autocast, SGD lr 0.01, imgsz {args.imgsz}, batch {args.batch}, {args.epochs} epochs, raccoon")
    print(f"{'config':<24}{'steps':>6}{'skipped':>9}{'loss ep1':>10}{'loss last':>11}{'mAP50':>8}{'finite':>8}{'s':>7}")
    for name, steps, skipped, first, last, map50, finite, seconds in rows:
        print(
            f"{name:<24}{steps:>6}{skipped:>9}{first:>10.4f}{last:>11.4f}{map50:>8.3f}{str(finite):>8}{seconds:>7.0f}"
        )


if __name__ == "__main__":
    main()
