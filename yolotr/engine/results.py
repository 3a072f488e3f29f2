"""Prediction results: boxes of one image, drawing and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from yolotr.plotting import draw_boxes


@dataclass
class Boxes:
    """Detections of one image: ``data`` is ``(N, 6)`` float32 x1, y1, x2, y2, score, class (pixels)."""

    data: torch.Tensor

    @property
    def xyxy(self) -> torch.Tensor:
        return self.data[:, :4]

    @property
    def conf(self) -> torch.Tensor:
        return self.data[:, 4]

    @property
    def cls(self) -> torch.Tensor:
        return self.data[:, 5]

    def __len__(self) -> int:
        return self.data.shape[0]


@dataclass
class Results:
    """One predicted image: the original RGB ``(H, W, 3)`` uint8 image, its path, boxes and names."""

    orig_img: np.ndarray
    path: str
    boxes: Boxes
    names: list[str]
    input_shape: tuple[int, int] = (0, 0)

    def plot(self) -> np.ndarray:
        """The image with labelled boxes, RGB ``(H, W, 3)`` uint8."""
        data = self.boxes.data.cpu().numpy()
        return draw_boxes(self.orig_img, data[:, :4], data[:, 4], data[:, 5].astype(int), self.names)

    def save(self, path: str | Path) -> Path:
        """Write the drawn image (format from the suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(self.plot(), cv2.COLOR_RGB2BGR))
        return path

    def to_json(self) -> list[dict]:
        """One dict per detection: class id and name, score, box ``[x1, y1, x2, y2]`` in pixels."""
        return [
            {
                "class": int(c),
                "name": self.names[int(c)] if int(c) < len(self.names) else str(int(c)),
                "confidence": round(float(s), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for *box, s, c in self.boxes.data.tolist()
        ]

    def __len__(self) -> int:
        return len(self.boxes)
