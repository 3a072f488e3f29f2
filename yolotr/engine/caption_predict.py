"""Captioning a trained model's photos: captions by greedy or beam search, and a figure of where each word looked.

The model and vocabulary come from :func:`yolotr.engine.caption_trainer.load_captioner`.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from yolotr.data.captions import prepare_image, to_float
from yolotr.errors import ConfigError
from yolotr.models.captioning import CaptioningModel, ids_to_captions
from yolotr.models.vocab import Vocabulary


def check_caption_imgsz(model: CaptioningModel, imgsz: int) -> int:
    """``imgsz`` back when the encoder gives at least one feature position there (its stride or more).

    Raises:
        ConfigError: a smaller size, naming the stride (it failed in a convolution).
    """
    stride = int(model.encoder.stride)
    if imgsz < stride:
        raise ConfigError(f"imgsz {imgsz}: smaller than the encoder's stride {stride}; give at least {stride}")
    return imgsz


@torch.no_grad()
def caption_images(
    model: CaptioningModel,
    vocab: Vocabulary,
    images: list[np.ndarray],
    imgsz: int,
    beam: int = 1,
    length_penalty: float = 1.0,
    repetition_penalty: float = 1.0,
    attention: bool = False,
) -> tuple[list[str], torch.Tensor | None]:
    """Caption RGB ``(H, W, 3)`` uint8 images. Returns captions and, with ``attention``, the per-word
    cross-attention ``(B, L, h, w)`` float32 of the chosen captions."""
    check_caption_imgsz(model, imgsz)
    device = next(model.parameters()).device
    x = to_float(torch.stack([prepare_image(im, imgsz) for im in images]), device)
    ids = model.generate(x, beam, None, length_penalty, repetition_penalty)
    maps = model.attention_maps(x, ids)[0].cpu() if attention else None
    return ids_to_captions(ids, vocab), maps


def save_attention_figure(image: np.ndarray, caption: str, maps: torch.Tensor, out: str | Path) -> Path:
    """A grid: the image, then one panel per word (and ``<end>``) with its attention map ``(h, w)``
    upsampled over the image. ``maps`` is ``(L, h, w)`` with ``L >= words + 1``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    words = [*caption.split(), "<end>"][: maps.shape[0]]
    n = len(words) + 1
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    h, w = image.shape[:2]
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k == 0:
            ax.imshow(image)
            ax.set_title("input", fontsize=9)
        elif k < n:
            m = maps[k - 1].float().numpy()
            m = cv2.resize(m / max(float(m.max()), 1e-12), (w, h), interpolation=cv2.INTER_CUBIC)
            ax.imshow(image)
            ax.imshow(np.clip(m, 0, 1), cmap="jet", alpha=0.5)
            ax.set_title(words[k - 1], fontsize=10)
    fig.suptitle(caption, fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
