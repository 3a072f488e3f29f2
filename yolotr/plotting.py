"""Drawing and plotting: boxes on images (OpenCV), curves (matplotlib, imported lazily)."""

from __future__ import annotations

import cv2
import numpy as np

PALETTE = [
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
]  # fmt: skip


def class_color(index: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class index."""
    return PALETTE[int(index) % len(PALETTE)]


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None, classes: np.ndarray, names: list[str]
) -> np.ndarray:
    """Draw labelled boxes on a copy of an RGB ``(H, W, 3)`` uint8 image.

    Args:
        boxes: ``(N, 4)`` xyxy pixels. scores: ``(N,)`` or None (ground truth). classes: ``(N,)`` ints.
    """
    canvas = np.ascontiguousarray(image.copy())
    h, w = canvas.shape[:2]
    thickness = max(round((h + w) / 2 * 0.003), 1)
    font_scale = max(thickness / 3, 0.4)
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        label = name if scores is None else f"{name} {float(scores[i]):.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(thickness - 1, 1))
        top = y1 - th - 4 >= 0
        y_text = y1 - 2 if top else y1 + th + 2
        cv2.rectangle(canvas, (x1, y1 - th - 4 if top else y1), (x1 + tw + 2, y1 if top else y1 + th + 4), color, -1)
        cv2.putText(
            canvas, label, (x1 + 1, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
            max(thickness - 1, 1), cv2.LINE_AA,
        )  # fmt: skip
    return canvas
