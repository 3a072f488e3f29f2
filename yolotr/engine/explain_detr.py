"""Where an RT-DETR detection looked: the deformable decoder's sampling points for one box.

Every query of RT-DETR's decoder reads the image through multi-scale deformable attention
(:class:`~yolotr.nn.deform_attn.MSDeformAttn`): per head and per feature level it samples ``n_points``
bilinear values at learned offsets around its reference box and averages them with softmax weights. Unlike a
dense attention map there is nothing to recompute: the points *are* what the query saw.

:func:`sampling_points` runs one image in eval mode, hooks the cross-attention of the decoder layer that
produces the eval boxes (``eval_idx``, the last by default), and for the detection of rank ``box`` (0: the
highest score, as in the eval output) recomputes the module's own ``sampling`` from the captured query and
reference: locations ``(n_heads, L * P, 2)`` in ``[0, 1]`` of the padded input frame and weights (each
head's ``L * P`` weights sum to 1). :func:`explain_decoder` maps them to the original image and draws them
over it: one colour per level, marker area proportional to the weight, the detection's box and the box the
layer sampled around (its reference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yolotr.errors import ConfigError

LOGGER = logging.getLogger("yolotr")


@dataclass
class SamplingPoints:
    """One detection's sampling points in the letterboxed input's pixels.

    ``points`` ``(n_heads, L * P, 2)`` float32 ``(x, y)``; ``weights`` ``(n_heads, L * P)`` (softmax over the
    ``L * P`` axis of each head); ``levels`` ``(L * P,)`` the level of each point; ``reference`` and ``box``
    ``(4,)`` ``x1, y1, x2, y2`` (the box the layer sampled around, the detection's box); ``score``, ``cls``,
    ``query`` the detection's score, class and decoder query index.
    """

    points: np.ndarray
    weights: np.ndarray
    levels: np.ndarray
    reference: np.ndarray
    box: np.ndarray
    score: float
    cls: int
    query: int


def _cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat((b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2), -1)


def sampling_points(model: torch.nn.Module, x: torch.Tensor, box: int = 0) -> SamplingPoints:
    """The decoder's sampling points for the detection of rank ``box`` on the first image of ``x``
    ``(B, 3, H, W)`` (see the module). Raises ConfigError when the model has no deformable decoder or fewer
    detections than ``box + 1``."""
    head = model.model[-1]
    decoder = getattr(head, "decoder", None)
    if decoder is None or not hasattr(decoder, "layers"):
        raise ConfigError(f"{type(head).__name__} has no deformable decoder: sampling points need an RT-DETR head")
    attn = decoder.layers[decoder.eval_idx].cross_attn
    seen: dict = {}

    def hook(module, args, kwargs):
        seen["query"], seen["reference"], _, seen["shapes"] = args[:4]

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            detections, raw = model(x)
            locations, weights = attn.sampling(seen["query"], seen["reference"], seen["shapes"])
    finally:
        handle.remove()
        model.train(was_training)
    boxes, logits = raw[0][-1][0], raw[1][-1][0]  # (Q, 4) cxcywh normalized, (Q, nc)
    nc = logits.shape[-1]
    top, flat = logits.sigmoid().flatten().topk(min(box + 1, logits.numel()))
    if box >= len(top):
        raise ConfigError(f"--box {box}: this model gives {len(top)} detections (ranks 0..{len(top) - 1})")
    query, cls = divmod(int(flat[box]), nc)
    h, w = x.shape[2:]
    frame = torch.tensor([w, h], dtype=torch.float32)
    points = locations[0, query].float().cpu() * frame  # (n_heads, L * P, 2)
    n_points = attn.n_points
    return SamplingPoints(
        points=points.numpy(),
        weights=weights[0, query].float().cpu().numpy(),
        levels=np.repeat(np.arange(attn.n_levels), n_points),
        reference=(_cxcywh_to_xyxy(seen["reference"][0, query].float().cpu()) * frame.repeat(2)).numpy(),
        box=(_cxcywh_to_xyxy(boxes[query].float().cpu()) * frame.repeat(2)).numpy(),
        score=float(top[box]),
        cls=cls,
        query=query,
    )


def to_original(xy: np.ndarray, pad: tuple[float, float], gain) -> np.ndarray:
    """Input pixels ``(..., 2)`` -> original image pixels: ``pad`` ``(dw, dh)`` of a letterbox, resize ``gain``
    a number or ``(gain_x, gain_y)`` (a stretched image's, :func:`~yolotr.data.transforms.stretch`)."""
    return (xy - np.asarray(pad, np.float32)) / gain


def plot_points(image: np.ndarray, found: SamplingPoints, pad, gain, path: Path, title: str) -> np.ndarray:
    """Draw ``found`` over the RGB ``image`` and write the PNG; returns the points as rows ``x, y, level, head,
    weight`` ``(n_heads * L * P, 5)`` float32 in original-image pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    heads, per_head = found.weights.shape
    xy = to_original(found.points.reshape(-1, 2), pad, gain)
    rows = np.column_stack(
        (xy, np.tile(found.levels, heads), np.repeat(np.arange(heads), per_head), found.weights.reshape(-1))
    ).astype(np.float32)
    h, w = image.shape[:2]
    fig = Figure(figsize=(6.0 * w / max(h, w) + 1.0, 6.0 * h / max(h, w) + 0.5), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image)
    colours = ("tab:red", "tab:orange", "tab:green", "tab:cyan", "tab:purple")
    for level in range(int(found.levels.max()) + 1):
        keep = rows[:, 2] == level
        ax.scatter(rows[keep, 0], rows[keep, 1], s=400.0 * rows[keep, 4], c=colours[level % len(colours)],
                   alpha=0.7, edgecolors="white", linewidths=0.5, label=f"level {level}")  # fmt: skip
    for corners, style in ((found.reference, "--"), (found.box, "-")):
        (x1, y1), (x2, y2) = to_original(corners.reshape(2, 2), pad, gain)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="yellow", ls=style, lw=1.5))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return rows


def explain_decoder(model, image: np.ndarray, x: torch.Tensor, pad, gain, box: int, path: Path):
    """:func:`sampling_points` of detection ``box`` drawn over ``image`` (RGB, original size) into ``path``;
    returns ``(rows, path)``, rows as :func:`plot_points` gives them."""
    found = sampling_points(model, x, box)
    head = model.model[-1]
    names = getattr(model, "names", None) or {}
    name = names[found.cls] if isinstance(names, list | tuple) and found.cls < len(names) else names.get(found.cls, "")
    name = "" if str(name) == str(found.cls) else f" ({name})"
    title = (
        f"layer {len(model.model) - 1} {type(head).__name__}: decoder layer {head.decoder.eval_idx} sampling points\n"
        f"detection {box} (query {found.query}): class {found.cls}{name}, score {found.score:.3f}; "
        "marker area = weight, dashed = reference box"
    )
    rows = plot_points(image, found, pad, gain, Path(path), title)
    LOGGER.info("decoder sampling points of detection %d (query %d, class %d, score %.3f) -> %s",
                box, found.query, found.cls, found.score, path)  # fmt: skip
    return rows, Path(path)
