"""COCO metrics: equal to pycocotools on the same boxes, hand-made cases, confusion matrix counts."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from yolotr.metrics.detection import CONF_GRID, ConfusionMatrix, DetectionEvaluator


def _random_case(seed: int, n_images: int = 25, nc: int = 4):
    """Ground truth and noisy detections (jittered matches, misses, duplicates, false positives,
    wrong classes) per image; class ``nc - 1`` never occurs in the ground truth."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for k in range(n_images):
        m = 0 if k == 0 else int(rng.integers(1, 7))
        xy = rng.uniform(0, 500, (m, 2))
        wh = rng.uniform(8, 200, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        classes = rng.integers(0, nc - 1, m)
        rows = []
        for box, cls in zip(boxes, classes):
            if k == 1 or rng.random() < 0.15:
                continue
            for _ in range(1 + int(rng.random() < 0.2)):
                jitter = rng.normal(0, 0.08, 4) * np.r_[box[2:] - box[:2], box[2:] - box[:2]]
                c = cls if rng.random() > 0.1 else rng.integers(0, nc)
                rows.append([*(box + jitter), rng.uniform(0.05, 1.0), c])
        for _ in range(int(rng.integers(0, 4))):
            xy = rng.uniform(0, 500, 2)
            rows.append([*xy, *(xy + rng.uniform(8, 150, 2)), rng.uniform(0.0, 0.7), rng.integers(0, nc)])
        det = np.array(rows, np.float64).reshape(-1, 6)
        det[:, 2:4] = np.maximum(det[:, 2:4], det[:, :2] + 1)
        gts.append((boxes, classes))
        dets.append(det)
    return gts, dets


def _pycocotools(gts, dets, nc: int, max_det: int = 100):
    """The reference: pycocotools on COCO dicts written here independently of our conversion."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": 100 + k, "height": 720, "width": 720} for k in range(len(gts))]
    anns, res = [], []
    for k, ((boxes, classes), det) in enumerate(zip(gts, dets)):
        for (x1, y1, x2, y2), c in zip(boxes, classes):
            anns.append({
                "id": len(anns) + 1, "image_id": 100 + k, "category_id": 10 + int(c),
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
            })  # fmt: skip
        for x1, y1, x2, y2, s, c in det:
            res.append(
                {"image_id": 100 + k, "category_id": 10 + int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 10 + c} for c in range(nc)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(res), "bbox")
        evaluator.params.maxDets = [1, min(10, max_det), max_det]  # evaluate() sorts them
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    p = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) area all, last maxDets
    per_class_ap = np.array(
        [p[:, :, k][p[:, :, k] > -1].mean() if (p[:, :, k] > -1).any() else np.nan for k in range(nc)]
    )
    if max_det == 100:  # summarize() reads AP at maxDets=100 only
        assert evaluator.stats[0] == pytest.approx(p[p > -1].mean(), abs=1e-12)
        assert evaluator.stats[1] == pytest.approx(p[0][p[0] > -1].mean(), abs=1e-12)
    return p[p > -1].mean(), p[0][p[0] > -1].mean(), per_class_ap, p


def _ours(gts, dets, nc: int, max_det: int = 100):
    evaluator = DetectionEvaluator([f"c{i}" for i in range(nc)], max_det=max_det)
    for (boxes, classes), det in zip(gts, dets):
        evaluator.update(det, boxes, classes, (720, 720))
    return evaluator.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_map_as_pycocotools(seed):
    pytest.importorskip("pycocotools", reason="pycocotools (test-only dependency) is not installed")
    nc = 4
    gts, dets = _random_case(seed, nc=nc)
    ref_map, ref_map50, ref_per_class, _ = _pycocotools(gts, dets, nc)
    ours = _ours(gts, dets, nc)
    assert 0.05 < ref_map < 0.95  # a case where matching matters
    assert ours.map50_95 == pytest.approx(ref_map, abs=1e-4)
    assert ours.map50 == pytest.approx(ref_map50, abs=1e-4)
    np.testing.assert_allclose([c.ap50_95 for c in ours.per_class], ref_per_class, atol=1e-4)
    assert np.isnan(ours.per_class[nc - 1].ap50_95) and ours.per_class[nc - 1].instances == 0


def test_the_package_names_read_the_same_numbers_and_ap75_is_cocos():
    """``metrics.box.map`` and friends (the ``ultralytics`` package's names) were AttributeErrors; mAP75 was not
    computed. AP at IoU 0.75 is pycocotools' (threshold index 5), per class and mean."""
    pytest.importorskip("pycocotools", reason="pycocotools (test-only dependency) is not installed")
    from yolotr.metrics.box_view import BoxMetrics, results_dict

    nc = 4
    gts, dets = _random_case(1, nc=nc)
    *_, p = _pycocotools(gts, dets, nc)
    ours = _ours(gts, dets, nc)
    box = BoxMetrics(ours)
    ap75 = np.array([p[5, :, k][p[5, :, k] > -1].mean() for k in range(nc - 1)])  # class nc - 1 has no box
    assert box.map75 == pytest.approx(p[5][p[5] > -1].mean(), abs=1e-4) and 0.02 < box.map75 < box.map50
    np.testing.assert_allclose(box.ap75, ap75, atol=1e-4)
    assert box.ap_class_index.tolist() == [0, 1, 2]
    assert (box.map, box.map50, box.mp, box.mr) == (ours.map50_95, ours.map50, ours.precision, ours.recall)
    np.testing.assert_allclose(box.ap, [c.ap50_95 for c in ours.per_class[:3]])
    assert box.maps.tolist() == [*box.ap.tolist(), box.map]  # the class without ground truth reads the mean
    assert box.mean_results() == [box.mp, box.mr, box.map50, box.map]
    assert results_dict(box)["metrics/mAP50-95(B)"] == box.map
    assert results_dict(box)["fitness"] == box.map  # the package's fitness (8.4): mAP50-95 alone
    assert BoxMetrics(ours, "yolov5").fitness() == pytest.approx(0.1 * box.map50 + 0.9 * box.map)  # YOLOv5's


def test_max_det_is_cocos_max_dets():
    pytest.importorskip("pycocotools", reason="pycocotools (test-only dependency) is not installed")
    gts, dets = _random_case(3, nc=3)
    ref_map, ref_map50, *_ = _pycocotools(gts, dets, 3, max_det=2)
    ours = _ours(gts, dets, 3, max_det=2)
    assert ours.map50_95 == pytest.approx(ref_map, abs=1e-4)
    assert ours.map50 == pytest.approx(ref_map50, abs=1e-4)


def test_perfect_predictions_score_one():
    gts, _ = _random_case(4, nc=3)
    dets = [np.c_[boxes, np.full(len(boxes), 0.9), classes] for boxes, classes in gts]
    m = _ours(gts, dets, 3)
    assert m.map50_95 == pytest.approx(1.0) and m.map50 == pytest.approx(1.0)
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(1.0)
    assert m.fitness == pytest.approx(1.0)
    cm = m.confusion.matrix
    assert cm[:3, :3].trace() == m.instances and cm[3].sum() == 0 and cm[:, 3].sum() == 0


def test_no_predictions_score_zero():
    gts, _ = _random_case(5, nc=3)
    m = _ours(gts, [np.zeros((0, 6))] * len(gts), 3)
    assert (m.map50_95, m.map50, m.precision, m.recall) == (0.0, 0.0, 0.0, 0.0)
    assert m.confusion.matrix[3, :3].sum() == m.instances


def test_no_ground_truth_at_all():
    evaluator = DetectionEvaluator(["a", "b"])
    evaluator.update(np.array([[0, 0, 10, 10, 0.9, 1]]), np.zeros((0, 4)), np.zeros(0, int))
    m = evaluator.compute()
    assert (m.map50_95, m.map50, m.precision, m.recall, m.instances) == (0.0, 0.0, 0.0, 0.0, 0)
    assert m.confusion.matrix[1, 2] == 1


def test_precision_recall_at_best_f1():
    # one class, two objects; scores 0.9 (hit), 0.8 (miss), 0.3 (hit): keeping all three gives the
    # best F1 (P 2/3, R 1, F1 0.8) against P 1/2 R 1/2 and P 1 R 1/2 for the higher thresholds
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    det = np.array([[0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.8, 0], [20, 20, 30, 30, 0.3, 0]])
    evaluator = DetectionEvaluator(["a"])
    evaluator.update(det, gt, [0, 0])
    m = evaluator.compute()
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(1.0)
    assert 0.29 < m.confidence <= 0.3
    assert m.per_class[0].precision == pytest.approx(2 / 3)
    # COCO AP50 of this ranking: precision 1 up to recall 0.5, 2/3 from 0.5 to 1 (101 points)
    assert m.map50 == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=1e-9)
    assert m.pr_precision.shape == (1, 101) and m.f1_curve.shape == (1, 1000)


def test_a_duplicate_is_a_false_positive_even_when_it_overlaps_more():
    # one object; the first detection (0.9) overlaps it with IoU 0.64 and takes it, the second (0.8)
    # overlaps it with IoU 0.81 but finds it taken: one true positive, one false positive, at every
    # IoU threshold the first is judged by (at 0.75 COCO matches the second instead: true positives
    # must come from the 0.50 matching only, or there would be two for one object, recall 2)
    gt = np.array([[0, 0, 10, 10]], np.float64)
    det = np.array([[0, 0, 10, 6.4, 0.9, 0], [0, 0, 10, 8.1, 0.8, 0]])
    evaluator = DetectionEvaluator(["a"])
    evaluator.update(det, gt, [0])
    m = evaluator.compute()
    assert m.recall == pytest.approx(1.0) and m.precision == pytest.approx(1.0)
    assert 0.8 < m.confidence <= 0.9
    kept_both = m.f1_curve[0, CONF_GRID < 0.8]
    assert kept_both == pytest.approx(np.full(len(kept_both), 2 / 3))  # P 1/2, R 1


def test_a_tie_in_iou_goes_to_the_later_box_as_in_cocos_matching():
    """The first detection overlaps both objects with IoU 0.6 exactly; COCO (pycocotools, faster-coco-eval)
    gives it the later one, so the second detection, which overlaps only that one, is a false positive:
    P 1, R 0.5 at confidence 0.9 (taking the first box made it P 1, R 1 at 0.8)."""
    gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float64)
    det = np.array([[2.5, 0, 12.5, 10, 0.9, 0], [6, 0, 16, 10, 0.8, 0]])
    evaluator = DetectionEvaluator(["a"])
    evaluator.update(det, gt, [0, 0])
    m = evaluator.compute()
    assert (m.precision, m.recall) == (pytest.approx(1.0), pytest.approx(0.5))
    assert 0.8 < m.confidence <= 0.9
    assert m.map50 == pytest.approx(51 / 101, abs=1e-9)  # COCO's AP50 of the same matches


def test_an_evaluator_given_no_images_scores_zero():
    m = DetectionEvaluator(["a", "b"]).compute()
    assert (m.map50_95, m.map50, m.precision, m.recall, m.instances) == (0.0, 0.0, 0.0, 0.0, 0)


def test_confusion_matrix_counts():
    # classes: 0 = cat, 1 = dog; index 2 = background
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float64)
    gt_cls = np.array([0, 1, 0])
    det = np.array([
        [0, 0, 10, 10, 0.9, 0],      # cat on the cat: correct
        [20, 20, 30, 31, 0.8, 0],    # cat on the dog: confused
        [70, 70, 80, 80, 0.7, 1],    # dog on nothing: background false positive
        [40, 40, 50, 50, 0.1, 0],    # below conf 0.25: ignored, so the third cat is missed
        [0, 0, 10, 11, 0.6, 0],      # a duplicate of the first: the cat is already taken
    ])  # fmt: skip
    cm = ConfusionMatrix(2, conf=0.25, iou=0.45)
    cm.update(det, gt, gt_cls)
    expected = np.array([
        [1, 1, 1],  # predicted cat: true cat, true dog, background (the duplicate)
        [0, 0, 1],  # predicted dog: the false positive
        [1, 0, 0],  # predicted background: the missed cat
    ])  # fmt: skip
    np.testing.assert_array_equal(cm.matrix, expected)
    np.testing.assert_allclose(cm.normalized()[:, 0], [0.5, 0.0, 0.5])


def test_class_outside_names_is_an_error():
    evaluator = DetectionEvaluator(["a"])
    with pytest.raises(ValueError, match="class 3 outside"):
        evaluator.update(np.array([[0, 0, 1, 1, 0.5, 3]]), np.zeros((0, 4)), [])


def test_detections_past_max_det_count_nowhere():
    """COCO keeps ``max_det`` detections per image and class; precision and recall counted them all: two true
    boxes ranked 401st and 402nd gave mAP50 0 but recall 1."""
    gt_boxes = np.array([[10, 10, 50, 50], [60, 60, 100, 100]], np.float64)
    noise = np.array([[200 + i, 200, 220 + i, 220, 0.9 - i * 1e-4, 0] for i in range(400)], np.float64)
    hits = np.array([[10, 10, 50, 50, 0.01, 0], [60, 60, 100, 100, 0.009, 0]], np.float64)
    evaluator = DetectionEvaluator(["a"], max_det=300)
    evaluator.update(np.concatenate((noise, hits)), gt_boxes, np.zeros(2, np.int64))
    metrics = evaluator.compute()
    assert metrics.map50 == 0.0 and metrics.recall == 0.0
    wide = DetectionEvaluator(["a"], max_det=1000)
    wide.update(np.concatenate((noise, hits)), gt_boxes, np.zeros(2, np.int64))
    assert wide.compute().recall == 1.0 and wide.compute().map50 > 0


def test_the_confusion_matrix_takes_scores_above_its_threshold_only():
    """YOLOv5 and the package keep ``score > conf``; a detection of exactly 0.25 was counted."""
    matrix = ConfusionMatrix(1, conf=0.25)
    matrix.update(np.array([[0, 0, 10, 10, 0.25, 0]]), np.array([[0, 0, 10, 10]]), np.array([0]))
    assert matrix.matrix[0, 0] == 0 and matrix.matrix[1, 0] == 1  # the box is missed (background row)


def test_score_results_reads_zero_where_coco_has_no_value():
    from yolotr.metrics.detection import score_results

    annotations = {
        "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    results = [{"image_id": 2, "category_id": 2, "bbox": [1, 1, 20, 20], "score": 0.9}]
    assert score_results(annotations, results, image_ids=[2]) == (0.0, 0.0)  # COCO says -1: no ground truth
