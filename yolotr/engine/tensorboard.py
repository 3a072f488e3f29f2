"""TensorBoard logging of training runs, when the ``tensorboard`` package is installed.

As YOLOv5 and Ultralytics do: a :class:`TensorBoardLogger` writes an events file into the run
directory (``tensorboard --logdir runs`` shows every run), with one point per epoch for each loss,
learning rate and validation metric, and a few prediction images per validation. Without
``tensorboard`` (``torch.utils.tensorboard`` needs it) every method does nothing. Only the process
that writes the run directory (rank 0) logs; the others get a disabled logger.

Logging never changes training: the prediction images come from a forward pass in eval mode under
``torch.inference_mode`` (no random numbers drawn, no parameter touched), and the model's mode is
restored afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

LOGGER = logging.getLogger("yolotr")
N_IMAGES = 4  # validation images drawn with their predictions at each validation


class TensorBoardLogger:
    """Scalars and images into ``log_dir`` (``None`` or a missing ``tensorboard``: a no-op logger).

    Args:
        log_dir: the run directory; the events file ``events.out.tfevents.*`` goes there.
    """

    def __init__(self, log_dir: str | Path | None):
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is not installed: nothing to log to
            return
        self.writer = SummaryWriter(str(log_dir))
        LOGGER.debug("TensorBoard: tensorboard --logdir %s", Path(log_dir).parent)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """One point per tag at ``step``; NaN values (a metric not computed this epoch) are left out."""
        if self.writer is None:
            return
        for tag, value in values.items():
            value = float(value)
            if value == value:  # not NaN
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: list[np.ndarray], step: int) -> None:
        """RGB ``(H, W, 3)`` uint8 images as ``tag/0``, ``tag/1``, ..."""
        if self.writer is None:
            return
        for i, image in enumerate(images):
            self.writer.add_image(f"{tag}/{i}", np.ascontiguousarray(image), step, dataformats="HWC")

    def flush(self) -> None:
        """Write what is pending (after each epoch, so a killed run keeps its curves)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ---------------------------------------------------------------------------------- detection

    def detection_epoch(self, trainer, epoch: int, mean_loss: torch.Tensor, metrics: dict) -> None:
        """An epoch of :class:`~yolotr.engine.trainer.Trainer`: at step ``epoch + 1``, the mean training
        losses (``train/box_loss``, ... as in ``results.csv``), ``lr/pg<i>`` per parameter group and, when it was
        validated, the validation metrics (``metrics/precision``, ``metrics/recall``, ``metrics/mAP50``,
        ``metrics/mAP50-95``), the validation losses with the training losses' names (``val/box_loss``, ...)
        and the first validation images with the EMA model's predictions (``val/predictions/0..3``).

        Args:
            mean_loss: ``(n_losses,)`` float, in the order of ``trainer.loss_fn.names``.
            metrics: the validation metrics of this epoch (empty when it was not validated):
                ``metrics/...`` and ``val/<item>_loss`` keys (others, such as ``fitness``, are not logged).
        """
        if self.writer is None:
            return
        step = epoch + 1
        values = {f"train/{n}_loss": v for n, v in zip(trainer.loss_fn.names, mean_loss.tolist())}
        values.update({f"lr/pg{i}": g["lr"] for i, g in enumerate(trainer.optimizer.param_groups)})
        values.update({k: v for k, v in metrics.items() if k.startswith(("metrics/", "val/"))})
        self.scalars(values, step)
        loader = getattr(trainer, "val_loader", None)
        if metrics and loader is not None:
            model = trainer.ema.ema if trainer.ema is not None else trainer.model
            paths = [r.path for r in loader.dataset.records[:N_IMAGES]]
            self.images("val/predictions", draw_predictions(model, paths, trainer.cfg["imgsz"], trainer.names), step)
        self.flush()

    # ---------------------------------------------------------------------------------- captioning

    def caption_epoch(self, epoch: int, train_loss: float, lr: float, metrics: dict, dataset, captions) -> None:
        """An epoch of :class:`~yolotr.engine.caption_trainer.CaptionTrainer`: ``train/loss``,
        ``val/loss``, ``lr``, ``metrics/BLEU-1..4`` and ``metrics/CIDEr-D`` at step ``epoch + 1``, and the
        first validation images with their generated captions (``val/captions/0..3``).

        Args:
            dataset: the validation ``CaptionDataset`` (item ``k`` starts with a ``(3, S, S)`` uint8 image).
            captions: the generated captions, in dataset order.
        """
        if self.writer is None:
            return
        values = {"train/loss": train_loss, "val/loss": metrics.get("loss", float("nan")), "lr": lr}
        values.update({f"metrics/{k}": v for k, v in metrics.items() if k != "loss"})
        self.scalars(values, epoch + 1)
        shown = range(min(N_IMAGES, len(captions)))
        drawn = [caption_image(dataset[k][0].permute(1, 2, 0).numpy(), captions[k]) for k in shown]
        self.images("val/captions", drawn, epoch + 1)
        self.flush()


@torch.inference_mode()
def draw_predictions(model: torch.nn.Module, paths: list[str], imgsz: int, names: list[str]) -> list[np.ndarray]:
    """Each image fitted to the ``imgsz`` square as the model wants it (letterboxed; RT-DETR stretched), one at
    a time through ``model`` in eval mode, NMS at conf 0.25 (an NMS-free head: its own detections above
    0.25), boxes drawn on the original: RGB ``(H, W, 3)`` uint8 per path."""
    from yolotr.data.images import read_image
    from yolotr.data.transforms import fit_image
    from yolotr.engine.fast_backend import output_layout
    from yolotr.engine.head_mode import STRETCH, input_fit
    from yolotr.ops.boxes import DETECTIONS, as_rows, kept_detections, non_max_suppression, scale_boxes
    from yolotr.plotting import draw_boxes

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    stretched, layout = input_fit(model) == STRETCH, output_layout(model)
    drawn = []
    try:
        for path in paths:
            image = read_image(path)
            boxed = fit_image(image, imgsz, stretched)[0]
            x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None]
            out = model(x.to(param.device, param.dtype) / 255)
            rows = as_rows(out[0] if isinstance(out, tuple | list) else out, layout).float()
            if layout == DETECTIONS:
                det = kept_detections(rows[0], 0.25, None, 300)
            else:
                det = non_max_suppression(rows, 0.25, 0.45, nc=len(names))[0]
            det[:, :4] = scale_boxes(tuple(x.shape[2:]), det[:, :4], image.shape[:2], stretched=stretched)
            det = det.cpu().numpy()
            drawn.append(draw_boxes(image, det[:, :4], det[:, 4], det[:, 5].astype(int), names))
    finally:
        model.train(was_training)
    return drawn


def caption_image(image: np.ndarray, text: str, width: int = 256) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 image scaled to ``width`` with ``text`` written in a white band below it."""
    h, w = image.shape[:2]
    height = max(round(h * width / w), 1)
    scaled = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    band = np.full((36, width, 3), 255, np.uint8)
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and cv2.getTextSize(f"{line} {word}", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > width - 6:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    for k, text_line in enumerate(lines[:2]):
        cv2.putText(band, text_line, (3, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([scaled, band], 0)
