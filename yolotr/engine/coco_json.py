"""``val --save-json``: the validation's detections as a COCO results file, scored against the dataset's JSON.

YOLOv5's ``val.py --save-json`` writes the detections with COCO's ids and scores them with pycocotools
against COCO's annotation file. Here the ids follow :mod:`yolotr.data.result_ids` (the dataset's own
for a COCO-format dataset), and a COCO-format split with one instances JSON is scored against that
file by faster-coco-eval, on the images and categories that were validated: the same mAP50-95 and
mAP50 as yolotr's own evaluation, when the JSON has no crowd annotations (the validator drops them,
COCO ignores detections on them) and none of its boxes had to be clipped to its image.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from yolotr.data.coco import read_json
from yolotr.data.result_ids import ResultIds
from yolotr.metrics.detection import score_results

LOGGER = logging.getLogger("yolotr")

JSON_NAME = "predictions_coco.json"


def write_and_score(
    results: list[dict],
    ids: ResultIds,
    save_dir: Path,
    image_paths: list[str] | None,
    nc: int,
    max_det: int = 300,
    single_cls: bool = False,
) -> tuple[Path, tuple[float, float] | None]:
    """Write ``results`` to ``save_dir/predictions_coco.json``; score it when ``ids`` name one annotation JSON.

    Args:
        results: COCO result dicts (:meth:`ResultIds.entries`).
        ids: the rule the results were named by.
        save_dir: the folder (made when missing).
        image_paths: the validated images: only these are scored (None: every image of the JSON).
        nc: classes of the model: only their categories are scored.
        max_det: COCO's ``maxDets`` (the validator's NMS ``max_det``).
        single_cls: the results are of a single-class validation (every class read as one): scored against every
            annotation whatever its category (COCO's ``useCats = 0``), as the validator scores them; their one
            class has no category of a multi-category JSON.

    Returns:
        The file, and ``(mAP50-95, mAP50)`` by faster-coco-eval, or None when there is nothing to score
        against (a YOLO- or VOC-format dataset, or a split of several JSONs; an info line says so).

    Raises:
        DataError: the annotation JSON cannot be read.
    """
    save_dir.mkdir(parents=True, exist_ok=True)
    file = save_dir / JSON_NAME
    file.write_text(json.dumps(results))
    if ids.annotations is None:
        why = "a split of several JSONs" if ids.rule == "dataset" else "not a COCO-format dataset"
        LOGGER.info("COCO results saved to %s (%s ids); not scored: %s", file, ids.rule, why)
        return file, None
    image_ids = [ids.image_id(p) for p in image_paths] if image_paths is not None else None
    annotations = read_json(ids.annotations)
    known = {c.get("id") for c in annotations.get("categories") or []}
    category_ids = sorted({ids.category_id(c) for c in range(nc)} & known)  # a class without a category: not scored
    scores = score_results(annotations, results, image_ids, category_ids, max_det, agnostic=single_cls)
    LOGGER.info(
        "COCO results saved to %s; faster-coco-eval against %s%s: mAP50-95 %.3f, mAP50 %.3f",
        file, ids.annotations, " (single_cls: every category as one)" if single_cls else "", *scores,
    )  # fmt: skip
    return file, scores
