"""Input sizes: what a user asks for, made a size the model can take (multiples of its largest stride)."""

from __future__ import annotations

import logging
import math
import numbers

from yolotr.errors import ConfigError

LOGGER = logging.getLogger("yolotr")


def largest_stride(model, default: int = 32) -> int:
    """The largest stride of a model's ``stride`` tensor (32, or 64 for a P6 model); ``default`` without one."""
    stride = getattr(model, "stride", None)
    return int(max(stride)) if stride is not None else default


def _side(value, asked) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) or value <= 0:
        raise ConfigError(f"imgsz must be a positive whole number of pixels or a pair (h, w) of them, got {asked!r}")
    return int(value)


def check_imgsz(imgsz, stride: int) -> int | tuple[int, int]:
    """``imgsz`` (one side or ``(h, w)``) rounded up to multiples of ``stride``, as YOLOv5 and Ultralytics do.

    A model with strides up to ``stride`` only takes sides that are multiples of it (its feature maps
    are concatenated across scales). A size that is not one becomes the next multiple up, with a warning
    (``imgsz 100 is not a multiple of the model's largest stride 32: using 128``).

    Returns:
        An ``int`` for one side (or a pair of equal sides given as one), else ``(h, w)``.

    Raises:
        ConfigError: ``imgsz`` is not a positive whole number or a pair of them.
    """
    sides = list(imgsz) if isinstance(imgsz, list | tuple) else [imgsz]
    if not 1 <= len(sides) <= 2:
        raise ConfigError(f"imgsz must be one side or a pair (h, w), got {imgsz!r}")
    sides = [_side(v, imgsz) for v in sides]
    rounded = [max(stride, math.ceil(v / stride) * stride) for v in sides]
    if rounded != sides:
        shown = rounded[0] if len(rounded) == 1 else tuple(rounded)
        LOGGER.warning("imgsz %s is not a multiple of the model's largest stride %d: using %s", imgsz, stride, shown)
    return rounded[0] if len(rounded) == 1 else (rounded[0], rounded[1])


def default_imgsz(imgsz, model) -> int | tuple[int, int]:
    """``imgsz`` when given (``0`` too: :func:`check_imgsz` refuses it rather than anything replacing it), else
    the size ``model`` was trained or exported at (its ``imgsz``), else 640."""
    return imgsz if imgsz is not None else getattr(model, "imgsz", None) or 640
