"""Image and box transforms: letterbox (shared by training, validation and prediction)."""

from __future__ import annotations

import cv2
import numpy as np


def letterbox(
    image: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to ``new_shape`` (YOLOv5's rule, bit for bit).

    Args:
        image: ``(H, W, 3)`` uint8 image.
        new_shape: target ``(height, width)`` or one side for a square.
        color: pad value per channel.
        auto: pad only up to the next multiple of ``stride`` (a "rectangular" letterbox) instead of
            the full ``new_shape`` square.
        scaleup: allow enlarging images smaller than ``new_shape``.
        stride: the model stride the padded size must be a multiple of when ``auto``.

    Returns:
        The padded ``(H', W', 3)`` uint8 image, the scale ratio ``(rw, rh)`` and the padding
        ``(dw, dh)`` added on each side (left/top), in pixels.
    """
    shape = image.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return image, (r, r), (float(dw), float(dh))
