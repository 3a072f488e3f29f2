"""The ``YOLO`` facade: one object to build or load a model and run the engine on it."""

from __future__ import annotations

import logging
from pathlib import Path

from yolotr.models.loading import load_model

LOGGER = logging.getLogger("yolotr")


class YOLO:
    """A detector and what you can do with it.

    ``YOLO("yolov5s.yaml")`` builds a shipped config (or any YAML path); ``YOLO("best.pt")`` loads our
    checkpoint; ``YOLO("yolov5n.pt")`` imports an official YOLOv5 checkpoint without its code.

    Args:
        source: model YAML or checkpoint.
        nc: number of classes when building from a YAML.
    """

    def __init__(self, source: str | Path = "yolov5n.yaml", nc: int | None = None):
        self.source = str(source)
        self.model = load_model(source, nc=nc)

    @property
    def names(self) -> list[str]:
        return list(self.model.names)

    def predict(
        self,
        source,
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        classes: list[int] | None = None,
        rect: bool = True,
        batch: int = 1,
    ):
        """Detections on images, folders, globs or videos: a list of ``Results`` (one per image/frame)."""
        from yolotr.engine.predictor import Predictor

        self.model.eval()
        predictor = Predictor(
            self.model, self.names, imgsz, rect=rect, conf=conf, iou=iou, max_det=max_det, classes=classes, batch=batch
        )
        return predictor(source)

    def train(self, **overrides) -> dict:
        """Train this model (keys of ``cfg/default.yaml`` as keyword arguments); returns the last metrics.

        The trained weights (best fitness) are loaded back into ``self.model`` afterwards.
        """
        from yolotr.data.sources import load_dataset_config
        from yolotr.engine.trainer import Trainer

        nc = len(load_dataset_config(overrides.get("data", "shapes")).names)
        model = self.model if self.model.nc == nc else None
        if model is None:
            overrides.setdefault("model", self.source)
        result = Trainer(overrides, model=model).train()
        best = Path(result["save_dir"]) / "weights" / "best.pt"
        if best.is_file():
            self.model = load_model(best)
        return result

    def val(self, data, imgsz: int = 640, batch_size: int = 16, conf: float = 0.001, iou: float = 0.6, **kwargs):
        """COCO metrics of this model on ``data``'s validation split (a ``ValidationResult``)."""
        from yolotr.engine.validator import validate

        return validate(self.model, data, imgsz=imgsz, batch_size=batch_size, conf=conf, iou=iou, **kwargs)

    def export(self, format: str = "onnx", path: str | Path | None = None, imgsz: int = 640, **kwargs):
        """Export (fused, eval) and verify against PyTorch; returns an ``ExportResult`` with the path."""
        from yolotr.engine.exporter import export_model

        return export_model(self.model, format, path, imgsz=imgsz, **kwargs)

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict:
        """Layer table, parameters and GFLOPs at ``imgsz``."""
        return self.model.info(imgsz, verbose)

    def fuse(self) -> YOLO:
        """Fold BatchNorm into convolutions for faster inference."""
        self.model.fuse()
        return self

    def __repr__(self) -> str:
        return f"YOLO({self.source!r}, nc={self.model.nc})"
