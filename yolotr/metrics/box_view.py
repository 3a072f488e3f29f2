"""The ``ultralytics`` package's names for validation numbers: ``metrics.box.map``, ``metrics.results_dict``.

A view over :class:`~yolotr.metrics.detection.DetectionMetrics`, computed by yolotr's COCO evaluation, so
the numbers are yolotr's: AP from faster-coco-eval (101-point COCO interpolation), precision and recall
at the confidence of the best mean F1 (IoU 0.50). Only the names follow the package's ``Metric`` and
``DetMetrics``, so that scripts written for it read them unchanged. Per-class arrays cover the classes with
ground truth (``ap_class_index``), as the package's do.
"""

from __future__ import annotations

import numpy as np

from yolotr.metrics.detection import DetectionMetrics, selection_fitness


class BoxMetrics:
    """``metrics.box``: mAP and per-class numbers under the package's attribute names.

    Attributes:
        map, map50, map75: mAP at IoU 0.50:0.95, 0.50 and 0.75 (mean over classes with ground truth).
        mp, mr: mean precision and recall at the best-F1 confidence.
        ap_class_index: ``(k,)`` int64 class ids with ground truth, the order of the per-class arrays.
        p, r, f1, ap50, ap75, ap: ``(k,)`` float64 per such class (``ap``: AP at 0.50:0.95).
        maps: ``(nc,)`` float64 AP at 0.50:0.95 of every class; a class without ground truth reads ``map``,
            as in the package.
        fitness_rule: ``ultralytics`` or ``yolov5``, the weights of :meth:`fitness`.
    """

    def __init__(self, metrics: DetectionMetrics, fitness_rule: str = "ultralytics"):
        self.fitness_rule = fitness_rule
        rows = [c for c in metrics.per_class if c.instances]
        self.ap_class_index = np.array([i for i, c in enumerate(metrics.per_class) if c.instances], np.int64)
        self.map, self.map50, self.map75 = metrics.map50_95, metrics.map50, metrics.map75
        self.mp, self.mr = metrics.precision, metrics.recall
        self.p = np.array([c.precision for c in rows], np.float64)
        self.r = np.array([c.recall for c in rows], np.float64)
        self.f1 = 2 * self.p * self.r / np.maximum(self.p + self.r, 1e-16)
        self.ap50 = np.array([c.ap50 for c in rows], np.float64)
        self.ap75 = np.array([c.ap75 for c in rows], np.float64)
        self.ap = np.array([c.ap50_95 for c in rows], np.float64)
        self.maps = np.full(len(metrics.per_class), self.map, np.float64)
        self.maps[self.ap_class_index] = self.ap

    def mean_results(self) -> list[float]:
        """``[mp, mr, map50, map]``."""
        return [self.mp, self.mr, self.map50, self.map]

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        """``(p, r, ap50, ap)`` of the ``i``-th class of :attr:`ap_class_index`."""
        return float(self.p[i]), float(self.r[i]), float(self.ap50[i]), float(self.ap[i])

    def fitness(self) -> float:
        """What ``best.pt`` is chosen by: ``map`` alone, as in the package, for its model families;
        ``0.1 * map50 + 0.9 * map`` for YOLOv5's and YOLOv4's anchor-based heads, as in YOLOv5
        (``fitness_rule``, :data:`~yolotr.metrics.detection.FITNESS_RULES`)."""
        return selection_fitness(self.map50, self.map, self.fitness_rule)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k):.4f}" for k in ("map", "map50", "map75", "mp", "mr"))
        return f"BoxMetrics({shown})"


def results_dict(box: BoxMetrics) -> dict[str, float]:
    """The package's ``results_dict``: its column names (``(B)`` for boxes) and ``fitness``."""
    return {
        "metrics/precision(B)": box.mp,
        "metrics/recall(B)": box.mr,
        "metrics/mAP50(B)": box.map50,
        "metrics/mAP50-95(B)": box.map,
        "fitness": box.fitness(),
    }
