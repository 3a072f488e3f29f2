"""Reading a training or validation image: ``read_image`` (OpenCV's ``imread``, as YOLOv5 reads images), with
JPEGs much larger than the training size decoded at 1/2, 1/4 or 1/8 scale by libjpeg
(``cv2.IMREAD_REDUCED_COLOR_*``) and TIFFs read through ``imdecode``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image(path: str, size: int | None = None, reduce: bool = True) -> np.ndarray | None:
    """Read a ``(H, W, 3)`` uint8 BGR image (EXIF-rotated, greyscale/alpha/16-bit made 8-bit BGR).

    With ``size``, a JPEG at least twice as large on its long side is decoded at a reduced scale
    that still leaves it at least ``size``, by a factor that divides both its sides: libjpeg's reduced
    decode of a side that is not a multiple gives ``ceil(side / factor)`` pixels covering more than the
    image, which shifted the content against the labels by up to a reduced pixel. Returns None when
    OpenCV cannot read the file.
    """
    flags = cv2.IMREAD_COLOR
    if reduce and size and Path(path).suffix.lower() in (".jpg", ".jpeg"):
        sides = _jpeg_sides(path)
        for factor in (8, 4, 2):
            if sides and max(sides) >= factor * size and not (sides[0] % factor or sides[1] % factor):
                flags = _REDUCED[factor]
                break
    try:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            return _read_tiff(path, flags)
        return cv2.imread(path, flags)
    except cv2.error:
        return None


def _read_tiff(path: str, flags: int) -> np.ndarray | None:
    """A TIFF through ``imdecode``: OpenCV 5.1's ``imread`` fails on one whose EXIF orientation swaps its sides
    (5-8: "original_ptr == real_mat.data", logged as an error); ``imdecode`` of the same bytes turns it upright."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, flags)


def _jpeg_sides(path: str) -> tuple[int, int] | None:
    """``(h, w)`` as stored, from the JPEG's SOF marker (without decoding); None when not found."""
    try:
        with open(path, "rb") as f:
            data = f.read(65536)
    except OSError:
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h = int.from_bytes(data[i + 5 : i + 7], "big")
            w = int.from_bytes(data[i + 7 : i + 9], "big")
            return h, w
        i += 2 + length
    return None
