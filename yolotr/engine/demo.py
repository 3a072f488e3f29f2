"""``yolotr demo``: the built-in shapes dataset, a small Transformer YOLO trained for a few CPU
minutes, validation with COCO mAP, and predictions drawn on held-out images. No download."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from yolotr.data.sources import load_dataset_config, load_records
from yolotr.engine.predictor import Predictor, run_prediction
from yolotr.engine.trainer import Trainer
from yolotr.engine.validator import validate
from yolotr.models.loading import load_model

LOGGER = logging.getLogger("yolotr")

DEMO_SETTINGS = dict(
    model="yolov5n-transformerc3.yaml",
    data="shapes",
    imgsz=192,
    batch=16,
    nbs=16,
    epochs=60,
    time_limit=3.0,
    optimizer="AdamW",
    lr0=0.004,
    lrf=0.05,
    momentum=0.9,
    warmup_epochs=1.0,
    warmup_min_iters=20,
    mosaic=0.5,
    scale=0.3,
    val_period=4,
    cls=1.5,
    ema_tau=200,
    workers=2,
    project="runs/demo",
    name="exp",
)


def run_demo(**overrides) -> dict:
    """Train, validate and predict; returns ``{"map50", "map50_95", "seconds", "save_dir"}``."""
    t0 = time.time()
    settings = {**DEMO_SETTINGS, **{k: v for k, v in overrides.items() if v is not None}}
    trainer = Trainer(settings)
    trainer.train()
    save_dir = trainer.save_dir
    weights = save_dir / "weights" / "last.pt"
    model = load_model(weights)
    data = load_dataset_config(settings["data"])
    result = validate(
        model,
        data,
        split="val",
        imgsz=settings["imgsz"],
        batch_size=settings["batch"],
        workers=settings["workers"],
        save_dir=save_dir,
        verbose=False,
    )
    held_out, _ = load_records(data, "val", log=False)  # validate() above logged its summary
    predictor = Predictor(model, model.names, settings["imgsz"], conf=0.3)
    run_prediction(predictor, [r.path for r in held_out[:8]], save_dir / "predictions")
    seconds = time.time() - t0
    return {
        "map50": result.map50,
        "map50_95": result.map50_95,
        "seconds": seconds,
        "save_dir": Path(save_dir),
        "table": result.table(per_class=True),
    }
