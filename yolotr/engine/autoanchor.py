"""AutoAnchor: check that a head's anchors fit the training labels, and fit new ones when they do not.

Derived from YOLOv5's ``utils/autoanchor.py``: the same metric (a label is *recallable* by an anchor
when both width and height ratios between them are within ``anchor_t``, the rule the loss assigns
targets by), the same threshold (a best possible recall of 0.98 or less triggers a refit), k-means on
whitened label sizes followed by a genetic evolution of the anchors, and replacement only when the
new anchors recall more labels. Differences:

- every random draw comes from one ``numpy.random.Generator`` seeded by the run's ``seed`` (the
  torch and Python generators are left untouched, so the rest of training is unchanged);
- anchors that are placeholders (``anchors: 3`` in the model YAML, or any side <= 0) are always
  replaced, and the fitted anchors are also written into the model's YAML dict, so the checkpoint
  describes the anchors it was trained with;
- k-means uses ``scipy.cluster.vq.kmeans`` when scipy is installed, else a small numpy k-means++;
- the labels used to fit are capped at :data:`MAX_FIT_LABELS` (a seeded sample) to bound the time.

Anchors are handled in input pixels here; ``Detect.anchors`` keeps them in grid units (pixels
divided by the head's stride), and the smallest fitted anchors go to the smallest stride.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

LOGGER = logging.getLogger("yolotr")

BPR_GOOD = 0.98  # best possible recall above which the current anchors are kept (YOLOv5: bpr > 0.98)
MIN_FIT_SIZE = 2.0  # labels smaller than this many pixels on both sides are left out of the fit
MAX_FIT_LABELS = 50_000
GENERATIONS = 1000


@dataclass
class AnchorCheck:
    """What :func:`check_anchors` found and did.

    Attributes:
        anchors_per_target: mean number of anchors within ``anchor_t`` of a label (before).
        bpr: best possible recall of the anchors the head had (0 for placeholders).
        new_bpr: best possible recall of the fitted anchors, or None when none were fitted.
        new_anchors_per_target: the same for the fitted anchors, or None.
        replaced: whether the head's anchors were replaced.
        placeholder: whether the head had placeholder anchors.
        labels: number of labels the check used.
    """

    anchors_per_target: float
    bpr: float
    new_bpr: float | None = None
    new_anchors_per_target: float | None = None
    replaced: bool = False
    placeholder: bool = False
    labels: int = 0

    def message(self) -> str:
        """One log line, e.g. ``AutoAnchor: 4.12 anchors/target, best possible recall 0.9912 - ...``."""
        if self.placeholder and self.new_bpr is None:
            return "AutoAnchor: placeholder anchors and no labels to compute anchors from; they stay"
        if self.placeholder:
            return (
                f"AutoAnchor: placeholder anchors; computed from {self.labels} labels: "
                f"{self.new_anchors_per_target:.2f} anchors/target, best possible recall {self.new_bpr:.4f}"
            )
        if not self.labels:
            return "AutoAnchor: no labels to check the anchors against; they stay as they are"
        head = f"AutoAnchor: {self.anchors_per_target:.2f} anchors/target, best possible recall {self.bpr:.4f}"
        if self.new_bpr is None:
            return f"{head} - current anchors are a good fit"
        if self.replaced:
            return f"{head} - recomputed: BPR {self.bpr:.4f} -> {self.new_bpr:.4f}"
        return f"{head} - recomputed anchors are no better (BPR {self.new_bpr:.4f}); keeping the current ones"


def label_sizes(records: Sequence, imgsz: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Label widths and heights ``(N, 2)`` float64 in pixels of the ``imgsz`` letterboxed image.

    Args:
        records: :class:`~yolotr.data.sources.ImageRecord` s (``width``, ``height``, ``boxes`` xyxy pixels).
        imgsz: training image size; each image is scaled so its longer side is ``imgsz``.
        rng: when given, each image's sizes are also scaled by a uniform factor in ``[0.9, 1.1]``
            (YOLOv5's stand-in for scale augmentation).
    """
    sizes = []
    for record in records:
        boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        gain = imgsz / max(record.width, record.height)
        if rng is not None:
            gain *= rng.uniform(0.9, 1.1)
        sizes.append((boxes[:, 2:4] - boxes[:, 0:2]) * gain)
    return np.concatenate(sizes, 0) if sizes else np.zeros((0, 2))


def _best_ratios(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """``(N, K)``: for each label and anchor, the worse of the width and height ratios, in ``(0, 1]``."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(2)


def anchor_fit(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> tuple[float, float]:
    """``(anchors per target, best possible recall)`` of ``anchors`` ``(K, 2)`` for labels ``wh`` ``(N, 2)``.

    A label is matched by an anchor when ``max(w / a_w, a_w / w, h / a_h, a_h / h) < anchor_t`` (the
    loss's assignment rule); *anchors per target* is the mean number of matching anchors over all
    heads, *best possible recall* the fraction of labels with at least one.
    """
    if not len(wh):
        return 0.0, 0.0
    x = _best_ratios(np.asarray(anchors, np.float64), np.asarray(wh, np.float64))
    matched = x > 1.0 / anchor_t
    return float(matched.sum(1).mean()), float(matched.any(1).mean())


def _fitness(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> float:
    """YOLOv5's anchor fitness: mean best ratio over the labels, counting only recallable ones."""
    best = _best_ratios(anchors, wh).max(1)
    return float((best * (best > 1.0 / anchor_t)).mean())


def _kmeans_numpy(x: np.ndarray, n: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """k-means++ seeding and Lloyd iterations on ``x`` ``(N, D)``; ``(n, D)`` centres."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        d2 = ((x[:, None] - np.asarray(centres)[None]) ** 2).sum(2).min(1)
        total = d2.sum()
        centres.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
    centres = np.asarray(centres, np.float64)
    for _ in range(iters):
        assign = ((x[:, None] - centres[None]) ** 2).sum(2).argmin(1)
        moved = np.array([x[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(n)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def _kmeans(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means centres ``(<= n, D)``: scipy's when installed, else :func:`_kmeans_numpy`."""
    try:
        from scipy.cluster.vq import kmeans
    except ImportError:
        return _kmeans_numpy(x, n, rng)
    return kmeans(x, n, iter=30, seed=rng)[0]


def fit_anchors(
    wh: np.ndarray,
    n: int,
    anchor_t: float = 4.0,
    imgsz: int = 640,
    generations: int = GENERATIONS,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``n`` anchors ``(n, 2)`` float64 in pixels for labels ``wh`` ``(N, 2)``, sorted by area (ascending).

    k-means on the sizes whitened by their standard deviation, then ``generations`` rounds of
    mutation (each anchor side multiplied by ``1 + 0.1 * N(0, 1) * U(0, 1)`` with probability 0.9)
    that keep a mutant only when it raises the fitness. Labels under :data:`MIN_FIT_SIZE` pixels on
    both sides are left out.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    wh = np.asarray(wh, np.float64)
    wh = wh[(wh >= MIN_FIT_SIZE).any(1)]
    if len(wh) > MAX_FIT_LABELS:
        wh = wh[rng.choice(len(wh), MAX_FIT_LABELS, replace=False)]
    if len(wh) >= n and len(np.unique(wh, axis=0)) >= n:
        std = wh.std(0)
        std[std == 0] = 1.0
        k = _kmeans(wh / std, n, rng) * std
    else:
        k = np.zeros((0, 2))
    if len(k) != n:  # k-means collapsed (too few distinct labels): start from random sizes
        k = np.sort(rng.random(n * 2)).reshape(n, 2) * imgsz
    if len(wh):  # k-means' anchors start unclipped, as YOLOv5's; mutants are clipped to MIN_FIT_SIZE
        best = _fitness(k, wh, anchor_t)
        for _ in range(generations):
            v = np.ones(k.shape)
            while (v == 1).all():  # mutate until something changes
                v = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1).clip(0.3, 3.0)
            candidate = (k * v).clip(min=MIN_FIT_SIZE)
            f = _fitness(candidate, wh, anchor_t)
            if f > best:
                best, k = f, candidate
    return k[np.argsort(k.prod(1))]


def head_anchors_pixels(head: nn.Module) -> np.ndarray:
    """A head's anchors ``(nl, na, 2)`` in input pixels (``Detect.anchors`` is in grid units)."""
    return (head.anchors.detach().cpu().double() * head.stride.detach().cpu().double().view(-1, 1, 1)).numpy()


@torch.no_grad()
def set_head_anchors(head: nn.Module, anchors: np.ndarray) -> None:
    """Give ``head`` the anchors ``(nl * na, 2)`` pixels sorted by area: the smallest ``na`` go to the
    smallest stride, and so on, whatever order the heads come in; stored in grid units."""
    nl, na = head.anchors.shape[:2]
    by_area = torch.as_tensor(np.asarray(anchors), dtype=torch.float64).view(nl, na, 2)
    order = torch.argsort(head.stride.detach().cpu(), stable=True)
    pixels = torch.empty_like(by_area)
    pixels[order] = by_area
    grid = pixels / head.stride.detach().cpu().double().view(-1, 1, 1)
    head.anchors.copy_(grid.to(head.anchors))
    if hasattr(head, "reset_grids"):
        head.reset_grids()


def check_anchors(
    head: nn.Module,
    records: Sequence,
    imgsz: int,
    anchor_t: float = 4.0,
    seed: int = 0,
    force: bool = False,
    generations: int = GENERATIONS,
) -> AnchorCheck:
    """Measure how well ``head.anchors`` fit the labels of ``records``; refit when the best possible
    recall is :data:`BPR_GOOD` or less (always when ``force`` or when an anchor side is <= 0), and
    replace them only when the fitted anchors recall more (placeholders: always).

    Args:
        head: a ``Detect`` (or subclass) with ``anchors (nl, na, 2)`` in grid units and ``stride (nl,)``.
        records: training :class:`~yolotr.data.sources.ImageRecord` s.
        imgsz: training image size.
        anchor_t: the loss's anchor-multiple threshold (``cfg['anchor_t']``).
        seed: seeds the one numpy generator behind every random draw.
        force: treat the current anchors as placeholders.
        generations: evolution rounds after k-means.
    """
    rng = np.random.default_rng(seed)
    wh = label_sizes(records, imgsz, rng)
    current = head_anchors_pixels(head).reshape(-1, 2)
    placeholder = force or bool((current <= 0).any())
    aat, bpr = (0.0, 0.0) if placeholder else anchor_fit(current, wh, anchor_t)
    result = AnchorCheck(aat, bpr, placeholder=placeholder, labels=len(wh))
    if not len(wh):
        return result
    if not placeholder and bpr > BPR_GOOD:
        return result
    fitted = fit_anchors(wh, len(current), anchor_t, imgsz, generations, rng)
    result.new_anchors_per_target, result.new_bpr = anchor_fit(fitted, wh, anchor_t)
    if placeholder or result.new_bpr > bpr:
        set_head_anchors(head, fitted)
        result.replaced = True
    return result


def yaml_anchors(head: nn.Module) -> list[list[float]]:
    """The head's anchors as a model YAML writes them: per head ``[w0, h0, w1, h1, ...]`` pixels."""
    return [[round(float(v), 2) for v in row.reshape(-1)] for row in head_anchors_pixels(head)]


def run_autoanchor(model: nn.Module, records: Sequence, cfg: dict, main: bool = True, world: int = 1):
    """The trainer's AutoAnchor step: check (and maybe refit) the anchors of ``model``'s head.

    Skipped for heads without ``anchors`` (anchor-free). With ``cfg['autoanchor']`` false the
    anchors are kept (with a warning when they are placeholders). Under DDP (``world > 1``) the
    first process computes and every process receives its anchors by broadcast. When anchors are
    replaced the model's YAML dict gets them too.

    Returns:
        The :class:`AnchorCheck` on the first process, None elsewhere or when skipped.
    """
    head = model.model[-1]
    anchors = getattr(head, "anchors", None)
    if not (isinstance(anchors, torch.Tensor) and anchors.dim() == 3):
        return None
    placeholder = isinstance(model.yaml.get("anchors"), int)
    if not cfg.get("autoanchor", True):
        if placeholder and main:
            LOGGER.warning("AutoAnchor is off and the model has placeholder anchors: training will go badly")
        return None
    result = None
    before = head.anchors.detach().clone()
    if main:
        result = check_anchors(head, records, int(cfg["imgsz"]), float(cfg["anchor_t"]), int(cfg["seed"]), placeholder)
        log = LOGGER.warning if result.placeholder and not result.replaced else LOGGER.info
        log("%s", result.message())
        if result.replaced:
            LOGGER.info("AutoAnchor: new anchors (pixels, per stride): %s", yaml_anchors(head))
    if world > 1:
        dist.broadcast(head.anchors.data, 0)
        if hasattr(head, "reset_grids"):
            head.reset_grids()
    if not torch.equal(before, head.anchors):
        model.yaml["anchors"] = yaml_anchors(head)
    return result
