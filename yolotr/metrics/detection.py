"""COCO detection metrics (faster-coco-eval), precision/recall at the best F1, PR curves, confusion matrix.

How this differs from YOLOv5's ``utils/metrics.py``: average precision is not our own integration
but the COCO evaluation itself (101-point interpolated AP, greedy matching by score, IoU
thresholds 0.50:0.05:0.95), computed by faster-coco-eval on ground truth and detections built in
memory, so mAP here is the number pycocotools gives for the same boxes. Precision and recall are
YOLOv5's definition (one confidence threshold for all classes, the one that maximizes the mean F1
over the classes with ground truth) but count true positives from COCO's own matches at IoU 0.50
and choose the threshold on a grid of 1000 confidences without smoothing the F1 curve.

All boxes are ``xyxy`` in original-image pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from yolotr.ops.boxes import box_iou

LOGGER = logging.getLogger("yolotr")

CONF_GRID = np.linspace(0.0, 1.0, 1000)


def _numpy(x, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Tensor/array/list -> numpy array of ``dtype`` reshaped to ``shape`` (empty inputs included)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(shape)


@dataclass
class ClassMetrics:
    """One row of the per-class table.

    ``precision`` and ``recall`` are at the dataset-wide best-F1 confidence; ``ap50``, ``ap75`` and ``ap50_95``
    are COCO APs. A class without ground truth has ``instances == 0`` and NaN metrics.
    """

    name: str
    images: int
    instances: int
    precision: float
    recall: float
    ap50: float
    ap50_95: float
    ap75: float = float("nan")


@dataclass
class DetectionMetrics:
    """Everything :meth:`DetectionEvaluator.compute` measures.

    Attributes:
        map50_95: COCO AP at IoU 0.50:0.95, mean over the classes with ground truth (0 when none has).
        map50: COCO AP at IoU 0.50, same classes.
        map75: COCO AP at IoU 0.75, same classes.
        precision, recall: means over the classes with ground truth at ``confidence``.
        confidence: the score threshold that maximizes the mean F1 (IoU 0.50); the highest such
            threshold of :data:`CONF_GRID` when several reach the maximum.
        per_class: one :class:`ClassMetrics` per class index (``nc`` rows).
        images, instances: images evaluated and ground-truth boxes in them.
        pr_recall: ``(101,)`` float64 recall points of the COCO PR curve.
        pr_precision: ``(nc, 101)`` float64 interpolated precision at IoU 0.50 (NaN: no ground truth).
        f1_curve: ``(nc, 1000)`` float64 F1 per class over :data:`CONF_GRID` (NaN: no ground truth).
        confusion: the confusion matrix, see :class:`ConfusionMatrix`.
    """

    map50_95: float
    map50: float
    precision: float
    recall: float
    confidence: float
    per_class: list[ClassMetrics]
    images: int
    instances: int
    pr_recall: np.ndarray
    pr_precision: np.ndarray
    f1_curve: np.ndarray
    confusion: ConfusionMatrix
    map75: float = 0.0

    @property
    def fitness(self) -> float:
        """YOLOv5's model-selection score: ``0.1 * mAP50 + 0.9 * mAP50-95``."""
        return selection_fitness(self.map50, self.map50_95, "yolov5")


FITNESS_RULES = {"yolov5": (0.1, 0.9), "ultralytics": (0.0, 1.0)}
"""Weights of ``(mAP50, mAP50-95)`` in the score ``best.pt`` is chosen by: YOLOv5's ``fitness`` (its
``[0, 0, 0.1, 0.9]`` over P, R, mAP50, mAP50-95), and the ``ultralytics`` package's (8.4: mAP50-95 alone)."""


def selection_fitness(map50: float, map50_95: float, rule: str) -> float:
    """The model-selection score of a validation under ``rule`` (a key of :data:`FITNESS_RULES`)."""
    w50, w50_95 = FITNESS_RULES[rule]
    return w50 * map50 + w50_95 * map50_95


class ConfusionMatrix:
    """YOLOv5-style confusion matrix with a background row and column.

    ``matrix[p, t]`` counts detections of class ``p`` matched to a ground-truth box of class ``t``
    (IoU above ``iou``, any class, each box used once, highest IoU first). Row ``nc`` (background
    predicted) counts ground-truth boxes no detection matched; column ``nc`` (background true)
    counts detections that matched nothing. Only detections with score above ``conf`` take part (strictly,
    as YOLOv5's and the package's). The matching is YOLOv5's; the package's (8.4) takes detections by
    descending score instead, each its best free box, so on crowded images the two matrices can differ.

    Args:
        nc: number of classes.
        conf: minimum detection score.
        iou: minimum IoU of a match (strictly greater, as YOLOv5).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45):
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), np.int64)

    def update(self, detections, gt_boxes, gt_classes) -> None:
        """Add one image.

        Args:
            detections: ``(n, 6)`` float ``x1, y1, x2, y2, score, class``.
            gt_boxes: ``(m, 4)`` float xyxy. gt_classes: ``(m,)`` int.
        """
        det = torch.as_tensor(_numpy(detections, np.float32, (-1, 6)))
        det = det[det[:, 4] > self.conf]
        gt = torch.as_tensor(_numpy(gt_boxes, np.float32, (-1, 4)))
        gt_cls = _numpy(gt_classes, np.int64, (-1,))
        det_cls = det[:, 5].long().numpy()
        det_used = np.zeros(len(det), bool)
        gt_used = np.zeros(len(gt), bool)
        if len(det) and len(gt):
            iou = box_iou(gt, det[:, :4])
            g, d = torch.nonzero(iou > self.iou, as_tuple=True)
            order = torch.argsort(iou[g, d], descending=True, stable=True)
            for gi, di in zip(g[order].tolist(), d[order].tolist()):
                if not gt_used[gi] and not det_used[di]:
                    gt_used[gi] = det_used[di] = True
                    self.matrix[det_cls[di], gt_cls[gi]] += 1
        np.add.at(self.matrix, (self.nc, gt_cls[~gt_used]), 1)
        np.add.at(self.matrix, (det_cls[~det_used], self.nc), 1)

    def normalized(self) -> np.ndarray:
        """``(nc + 1, nc + 1)`` float64: each column divided by its sum (columns with no count stay 0)."""
        total = self.matrix.sum(0, keepdims=True)
        return self.matrix / np.maximum(total, 1)


def _top_per_class(det: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring rows of each class of ``det`` ``(n, 6)``, by descending score."""
    det = det[np.argsort(-det[:, 4], kind="stable")]
    if len(det) <= k:
        return det
    classes = det[:, 5].astype(np.int64)
    rank = np.zeros(len(det), np.int64)
    for c in np.unique(classes):
        rank[classes == c] = np.arange(int((classes == c).sum()))
    return det[rank < k]


class DetectionEvaluator:
    """Collects ground truth and detections image by image, then runs the COCO evaluation.

    Args:
        names: class names; class ``i`` is COCO category ``i + 1``.
        max_det: detections per image and class COCO keeps (its ``maxDets``); the validator passes
            its NMS ``max_det`` so nothing it kept is dropped. pycocotools' default is 100. The others are
            dropped in :meth:`update`, so that precision, recall and the confusion matrix count the
            detections the mAP counts.
        cm_conf, cm_iou: confusion matrix thresholds.
    """

    def __init__(self, names: list[str], max_det: int = 100, cm_conf: float = 0.25, cm_iou: float = 0.45):
        self.names = list(names)
        self.nc = len(self.names)
        self.max_det = int(max_det)
        self.confusion = ConfusionMatrix(self.nc, cm_conf, cm_iou)
        self._gt: list[tuple[np.ndarray, np.ndarray, tuple[int, int] | None]] = []
        self._dt: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._gt)

    def update(self, detections, gt_boxes, gt_classes, image_shape: tuple[int, int] | None = None) -> None:
        """Add one image.

        Args:
            detections: ``(n, 6)`` float ``x1, y1, x2, y2, score, class`` (tensor or array).
            gt_boxes: ``(m, 4)`` float xyxy. gt_classes: ``(m,)`` int in ``[0, nc)``.
            image_shape: ``(height, width)``; only written into the COCO image entry.
        """
        det = _numpy(detections, np.float64, (-1, 6))
        boxes = _numpy(gt_boxes, np.float64, (-1, 4))
        classes = _numpy(gt_classes, np.int64, (-1,))
        if len(classes) != len(boxes):
            raise ValueError(f"{len(boxes)} ground-truth boxes but {len(classes)} classes")
        for what, cls in (("ground-truth", classes), ("detection", det[:, 5].astype(np.int64))):
            if len(cls) and (cls.min() < 0 or cls.max() >= self.nc):
                raise ValueError(f"{what} class {int(cls.max())} outside [0, {self.nc}) of the {self.nc} names")
        det = _top_per_class(det, self.max_det)
        self._gt.append((boxes, classes, image_shape))
        self._dt.append(det)
        self.confusion.update(det, boxes, classes)

    def coco_dicts(self) -> tuple[dict, list[dict]]:
        """The collected data in COCO form: ``(ground-truth dataset dict, detection result list)``.

        Image ``k`` (in update order) has id ``k + 1``; class ``c`` is category ``c + 1``; boxes
        are ``[x, y, w, h]`` pixels; a ground-truth ``area`` is its box area.
        """
        images, annotations, results = [], [], []
        for k, ((boxes, classes, shape), det) in enumerate(zip(self._gt, self._dt)):
            image = {"id": k + 1}
            if shape is not None:
                image.update(height=int(shape[0]), width=int(shape[1]))
            images.append(image)
            wh = boxes[:, 2:] - boxes[:, :2]
            for box, size, cls in zip(boxes.tolist(), wh.tolist(), classes.tolist()):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": k + 1, "category_id": cls + 1,
                    "bbox": [box[0], box[1], size[0], size[1]], "area": size[0] * size[1], "iscrowd": 0,
                })  # fmt: skip
            for x1, y1, x2, y2, score, cls in det.tolist():
                results.append(
                    {"image_id": k + 1, "category_id": int(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
                )
        categories = [{"id": c + 1, "name": name} for c, name in enumerate(self.names)]
        return {"images": images, "annotations": annotations, "categories": categories}, results

    def compute(self) -> DetectionMetrics:
        """Run the COCO evaluation over everything added so far."""
        from faster_coco_eval import COCO, COCOeval_faster

        gt_dict, results = self.coco_dicts()
        instances = np.bincount(
            np.concatenate([c for _, c, _ in self._gt]) if self._gt else np.zeros(0, np.int64), minlength=self.nc
        )
        images = np.zeros(self.nc, np.int64)
        for _, c, _ in self._gt:
            images[np.unique(c)] += 1
        R = 101
        precision = np.full((10, R, self.nc), -1.0)
        if gt_dict["annotations"]:
            coco_gt = COCO(gt_dict, print_function=_silent)
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_silent)
            evaluator.params.maxDets = [self.max_det]
            evaluator.evaluate()
            evaluator.accumulate()
            # precision: (T iou thresholds, R recall points, K categories, A areas, M maxDets); area 'all'
            precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
        matches = [_match_iou50(det, boxes, classes) for (boxes, classes, _), det in zip(self._gt, self._dt)]
        tp = np.concatenate(matches) if matches else np.zeros(0, bool)
        has_gt = instances > 0
        ap50_95, ap50 = _mean_valid(precision.reshape(-1, self.nc)), _mean_valid(precision[0])
        ap75 = _mean_valid(precision[5])  # thresholds 0.50, 0.55, ..., 0.95
        for ap in (ap50_95, ap50, ap75):
            ap[~has_gt] = np.nan
        scores = np.array([r["score"] for r in results], np.float64)
        det_cls = np.array([r["category_id"] - 1 for r in results], np.int64)
        p_curve, r_curve = _pr_over_confidence(scores, det_cls, tp, instances)
        f1 = 2 * p_curve * r_curve / np.maximum(p_curve + r_curve, 1e-16)
        if has_gt.any():
            mean_f1 = f1[has_gt].mean(0)
            best = int(np.flatnonzero(mean_f1 == mean_f1.max())[-1])
            p_best, r_best = p_curve[:, best], r_curve[:, best]
            mp, mr = float(p_best[has_gt].mean()), float(r_best[has_gt].mean())
            map50_95, map50, map75 = (float(ap[has_gt].mean()) for ap in (ap50_95, ap50, ap75))
        else:
            best, p_best, r_best, mp, mr = 0, p_curve[:, 0], r_curve[:, 0], 0.0, 0.0
            map50_95 = map50 = map75 = 0.0
        f1[~has_gt] = np.nan
        per_class = [
            ClassMetrics(
                name,
                int(images[c]),
                int(instances[c]),
                float(p_best[c]) if has_gt[c] else float("nan"),
                float(r_best[c]) if has_gt[c] else float("nan"),
                float(ap50[c]),
                float(ap50_95[c]),
                float(ap75[c]),
            )  # fmt: skip
            for c, name in enumerate(self.names)
        ]
        pr = precision[0].T.copy()
        pr[~has_gt] = np.nan
        return DetectionMetrics(
            map50_95=map50_95,
            map50=map50,
            precision=mp,
            recall=mr,
            confidence=float(CONF_GRID[best]),
            per_class=per_class,
            images=len(self._gt),
            instances=int(instances.sum()),
            pr_recall=np.linspace(0.0, 1.0, R),
            pr_precision=pr,
            f1_curve=f1,
            confusion=self.confusion,
            map75=map75,
        )


def score_results(
    annotations: dict,
    results: list[dict],
    image_ids: list | None = None,
    category_ids: list[int] | None = None,
    max_det: int = 100,
    agnostic: bool = False,
) -> tuple[float, float]:
    """COCO mAP50-95 and mAP50 of a results list against an instances dataset, by faster-coco-eval.

    What pycocotools' summary calls AP and AP50 (area ``all``), with ``maxDets = [1, 10, max_det]``.

    Args:
        annotations: an instances JSON's object (``images``, ``annotations``, ``categories``); an
            annotation without ``area`` gets its box's, without ``iscrowd`` 0 (a copy is changed).
        results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection.
        image_ids, category_ids: evaluate these only (default: all of ``annotations``).
        max_det: detections per image COCO keeps.
        agnostic: match detections to every annotation whatever their categories (COCO's ``useCats = 0``), as a
            single-class model is scored; ``category_ids`` is then unused and the results' ids need name no category.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt = dict(annotations)
    gt["annotations"] = [
        {**a, "area": a.get("area", a["bbox"][2] * a["bbox"][3]), "iscrowd": a.get("iscrowd", 0)}
        for a in annotations.get("annotations") or []
    ]
    if not gt["annotations"] or not results:
        return 0.0, 0.0
    gt, results, image_ids = _integer_ids(gt, results, image_ids, "images", "image_id")
    gt, results, category_ids = _integer_ids(gt, results, category_ids, "categories", "category_id")
    if agnostic and gt.get("categories"):  # faster-coco-eval drops a result of an unknown category even so
        results = [{**r, "category_id": gt["categories"][0]["id"]} for r in results]
    coco_gt = COCO(gt, print_function=_silent)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "bbox", print_function=_silent)
    if image_ids is not None:
        evaluator.params.imgIds = list(image_ids)
    if agnostic:
        evaluator.params.useCats = 0
    elif category_ids is not None:
        evaluator.params.catIds = list(category_ids)
    evaluator.params.maxDets = [1, 10, int(max_det)]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    # COCO's -1 ("no value": no ground truth among the images and categories evaluated) reads 0, as in
    # yolotr's own evaluation
    return max(float(evaluator.stats[0]), 0.0), max(float(evaluator.stats[1]), 0.0)


def _integer_ids(gt: dict, results: list[dict], subset: list | None, table: str, key: str):
    """``gt``, ``results`` and ``subset`` with the ids of ``gt[table]`` (and ``key`` of annotations and results)
    numbered 0, 1, ... when any is not an integer: faster-coco-eval reads ids as integers, the COCO format
    (and pycocotools) allows strings. A result whose id ``gt`` lacks gets an id of its own."""
    ids = [entry.get("id") for entry in gt.get(table) or []]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return gt, results, subset
    number = {i: n for n, i in enumerate(dict.fromkeys(ids))}
    for r in results:
        number.setdefault(r[key], len(number))
    gt = {**gt, table: [{**e, "id": number[e.get("id")]} for e in gt.get(table) or []]}
    gt["annotations"] = [{**a, key: number.get(a[key], -1)} for a in gt["annotations"]]
    results = [{**r, key: number[r[key]]} for r in results]
    return gt, results, None if subset is None else [number[i] for i in subset if i in number]


def _silent(*args, **kwargs) -> None:
    """faster-coco-eval's progress messages go nowhere."""


def _mean_valid(precision: np.ndarray) -> np.ndarray:
    """``(..., nc)`` COCO precision entries -> ``(nc,)`` mean of the entries ``> -1`` (NaN when none is)."""
    valid = precision > -1
    count = valid.sum(0)
    total = np.where(valid, precision, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _match_iou50(det: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray) -> np.ndarray:
    """COCO's matching at IoU 0.50 for one image: detections best score first each take the
    unmatched ground-truth box of their class they overlap most, if that IoU is at least 0.50.

    Args:
        det: ``(n, 6)`` float64 ``x1, y1, x2, y2, score, class``. gt_boxes: ``(m, 4)`` float64 xyxy.
        gt_classes: ``(m,)`` int64.

    Returns:
        ``(n,)`` bool, in ``det``'s order: the detection is a true positive. Each ground-truth box is
        matched at most once, so true positives never outnumber the ground truth.
    """
    tp = np.zeros(len(det), bool)
    if not len(det) or not len(gt_boxes):
        return tp
    iou = box_iou(torch.from_numpy(det[:, :4]), torch.from_numpy(gt_boxes)).numpy()
    iou[det[:, 5].astype(np.int64)[:, None] != gt_classes[None, :]] = -1.0
    taken = np.zeros(len(gt_boxes), bool)
    order = np.argsort(-det[:, 4], kind="stable")
    for i in order[iou[order].max(1) >= 0.5]:  # the others can match nothing
        candidates = np.where(taken, -1.0, iou[i])
        j = len(candidates) - 1 - int(candidates[::-1].argmax())  # a tie goes to the last box, as in COCO's
        if candidates[j] >= 0.5:
            tp[i] = taken[j] = True
    return tp


def _pr_over_confidence(
    scores: np.ndarray, classes: np.ndarray, tp: np.ndarray, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of each class when keeping detections with score ``>=`` each grid confidence.

    Args:
        scores: ``(n,)`` float64. classes: ``(n,)`` int64. tp: ``(n,)`` bool (matched at IoU 0.50).
        instances: ``(nc,)`` ground-truth count per class.

    Returns:
        ``(nc, 1000)`` float64 precision (0 where nothing is kept) and recall (0 without ground truth).
    """
    nc = len(instances)
    precision = np.zeros((nc, len(CONF_GRID)))
    recall = np.zeros((nc, len(CONF_GRID)))
    for c in range(nc):
        mine = classes == c
        s = -scores[mine]
        order = np.argsort(s, kind="stable")
        cum_tp = np.concatenate([[0], np.cumsum(tp[mine][order])])
        kept = np.searchsorted(s[order], -CONF_GRID, side="right")
        hits = cum_tp[kept]
        precision[c] = hits / np.maximum(kept, 1)
        recall[c] = hits / instances[c] if instances[c] else 0.0
    return precision, recall
