"""``multi_scale: m``: each training batch resized to a random size around ``imgsz``, as the ``ultralytics`` package's
``multi_scale`` (and YOLOv5's ``--multi-scale``, which is ``m = 0.5``) resize it.

A step's size is drawn from ``[max(stride, int(imgsz * (1 - m))), int(imgsz * (1 + m) + stride))`` and rounded down to
a multiple of the model's largest stride; the batch ``(B, 3, H, W)`` is scaled so that its longer side gets that size
(each side rounded up to a multiple of the stride, so a square batch stays square) by bilinear interpolation
(``align_corners=False``), on the device, after the loader. The targets are normalised, so they stand as they are.
A batch of one image (an epoch's last) is never made smaller than two strides: at one stride the last feature map is
1 x 1 and BatchNorm has a single value per channel to train on (the package refuses such a run at its start).

Unlike the references, which draw from Python's global generator, the size is drawn from a generator seeded with
``(seed, step)``: a resumed run trains each step at the size the run would have had, every DDP process at the same
size, and the non-finite guard re-runs a step at its own size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from yolotr.errors import ConfigError

YOLOV5_MULTI_SCALE = 0.5  # YOLOv5's --multi-scale: sizes from imgsz * 0.5 to imgsz * 1.5


def check_multi_scale(value, source: str = "arguments", key: str = "multi_scale") -> float:
    """A number in ``[0, 1)`` (also written as a string), or ``true`` (YOLOv5's ``--multi-scale``: 0.5) / ``false`` (0),
    else a ``ConfigError``."""
    if isinstance(value, bool):
        return YOLOV5_MULTI_SCALE if value else 0.0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return YOLOV5_MULTI_SCALE if value.strip().lower() == "true" else 0.0
    try:
        number = float(value) if isinstance(value, str | int | float) else None
    except ValueError:
        number = None
    if number is None or not 0.0 <= number < 1.0:
        raise ConfigError(
            f"{source}: setting '{key}' must be a number in [0, 1) (sizes imgsz x [1 - m, 1 + m]) or true (YOLOv5's "
            f"--multi-scale, 0.5), got {value!r}"
        )
    return number


def step_size(seed: int, step: int, imgsz: int, fraction: float, stride: int) -> int:
    """The training size of ``step``: a multiple of ``stride`` in ``[max(stride, imgsz (1 - fraction)),
    imgsz (1 + fraction) + stride)``, rounded down, drawn from a generator seeded with ``(seed, step)``."""
    low = max(stride, int(imgsz * (1.0 - fraction)))
    high = int(imgsz * (1.0 + fraction) + stride)
    drawn = int(np.random.default_rng([seed, step]).integers(low, high))
    return max(drawn // stride * stride, stride)


def resize_batch(images: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``images`` ``(B, 3, H, W)`` float scaled so that the longer side is ``size``, each side rounded up to a multiple
    of ``stride``; bilinear, ``align_corners=False``, in the input's memory format. The batch itself when unchanged."""
    scale = size / max(images.shape[2:])
    if scale == 1:
        return images
    shape = [math.ceil(side * scale / stride) * stride for side in images.shape[2:]]
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=False)
