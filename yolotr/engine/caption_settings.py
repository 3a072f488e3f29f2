"""The settings of ``yolotr caption train`` and their defaults, apart from the trainer so that the command line
builds its parser without importing torch."""

from __future__ import annotations

DEFAULTS: dict = {
    "data": "shapes",  # "shapes" or a caption dataset YAML
    "n_train": 4000,  # shapes only: training images
    "n_val": 200,  # shapes only: validation images
    "seed": 0,  # shapes stream, shuffling and initialisation
    "imgsz": 64,  # images are resized to imgsz x imgsz (64 suits the shapes; photos want more, e.g. 224)
    "encoder": "backbone",  # "backbone" (detection YAML layer) or "patch" (ViT patch embedding)
    "backbone": "yolov5n.yaml",  # detection model YAML whose layers 0..layer encode the image
    "layer": 4,  # backbone layer whose output is the visual memory (yolov5n: 4 = P3/8, 6 = P4/16, 9 = P5/32)
    "freeze": False,  # keep the backbone fixed
    "weights": None,  # detection checkpoint to initialise the backbone from
    "patch": 16,  # patch encoder: patch size
    "vit_depth": 2,  # patch encoder: self-attention layers
    "dim": 128,  # model width
    "layers": 2,  # decoder layers
    "heads": 4,  # attention heads
    "max_len": 24,  # longest token sequence (<start> and <end> included)
    "positions": "sine",  # decoder positions: sine or learned
    "dropout": 0.1,
    "grad_checkpointing": False,
    "min_count": 1,  # vocabulary: minimum word count
    "epochs": 30,
    "batch": 32,
    "lr": 2e-3,  # peak AdamW learning rate
    "weight_decay": 0.05,
    "warmup": 0.05,  # warmup, as a fraction of the run
    "label_smoothing": 0.1,
    "clip": 1.0,  # gradient-norm clipping (0: off)
    "amp": None,  # None: on for CUDA, off on CPU; True on CPU uses bfloat16
    "device": None,  # None: cuda if available, else cpu
    "time_limit": 0.0,  # minutes of training (0: no limit; 0.5 = 30 s); when set it ends the run instead of
    # epochs, and the schedule follows the clock
    "val_beam": 1,  # beam width for validation metrics
    "workers": 0,
    "project": "runs/caption",
    "name": "exp",
    "exist_ok": False,
    "plots": True,  # draw results.png (the curves of results.csv) at the end of the run; false: none
    "resume": None,  # a last.pt to continue
}
