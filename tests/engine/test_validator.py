"""Validator: a tiny real model gives sane numbers; a model that outputs the letterboxed ground truth
scores mAP 1, which proves boxes travel back to the original images correctly."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import shared_path
from yolotr.data.sources import ImageRecord, load_records
from yolotr.data.synthetic import SHAPE_NAMES, generate_sample, make_shapes_dataset
from yolotr.engine.validator import ValidationResult, build_val_dataloader, to_original, validate
from yolotr.models.detection import DetectionModel
from yolotr.plotting import plot_results_csv

# (height, width) of the test images: landscape, portrait and square, so rectangular batches pad
# along both axes and the two gains of a resized image differ
SIZES = [(96, 160), (150, 90), (128, 128), (70, 200), (200, 120), (111, 111)]


@pytest.fixture(scope="module")
def odd_records(tmp_path_factory) -> list[ImageRecord]:
    """Shapes images stretched to :data:`SIZES`, with their boxes in original pixels."""
    root = tmp_path_factory.mktemp("odd")
    records = []
    for k, (h, w) in enumerate(SIZES):
        image, boxes, classes, _ = generate_sample(k, 128, seed=7)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        path = root / f"{k}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        records.append(ImageRecord(str(path), h, w, boxes * np.float32([w, h, w, h]) / 128, classes))
    return records


class GroundTruthModel(nn.Module):
    """A 'perfect' detector: for each forward call it returns the next batch's letterboxed targets as
    decoded output ``(B, N, 5 + nc)`` (cx, cy, w, h in input pixels, objectness 1, one-hot class).

    ``shift`` moves every box right by that many input pixels (a deliberately imperfect model).
    """

    def __init__(self, loader, nc: int, shift: float = 0.0):
        super().__init__()
        self.targets = [targets for _, targets, _, _ in loader]
        self.nc, self.shift, self.calls = nc, shift, 0
        self.stride = torch.tensor([8.0, 16.0, 32.0])
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor):
        targets = self.targets[self.calls % len(self.targets)]
        self.calls += 1
        b, _, h, w = x.shape
        counts = torch.bincount(targets[:, 0].long(), minlength=b)
        out = torch.zeros(b, max(int(counts.max()), 1), 5 + self.nc)
        slot = [0] * b
        for i, cls, cx, cy, bw, bh in targets.tolist():
            row = out[int(i), slot[int(i)]]
            slot[int(i)] += 1
            row[:4] = torch.tensor([cx * w + self.shift, cy * h, bw * w, bh * h])
            row[4] = 1.0
            row[5 + int(cls)] = 1.0
        return out, []


def _check_result(result: ValidationResult) -> None:
    for value in (result.map50_95, result.map50, result.precision, result.recall, result.fitness):
        assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert all(math.isfinite(v) and v >= 0 for v in result.speed.values())


@pytest.mark.parametrize("batch_size", [1, 4])
def test_ground_truth_model_scores_one(odd_records, batch_size, tmp_path):
    loader = build_val_dataloader(odd_records, imgsz=128, batch_size=batch_size, stride=32, workers=0)
    shapes = {tuple(images.shape[2:]) for images, _, _, _ in loader}
    assert len(shapes) > 1 and any(h != w for h, w in shapes)  # rectangular, padded batches
    model = GroundTruthModel(loader, nc=len(SHAPE_NAMES))
    result = validate(model, dataloader=loader, names=list(SHAPE_NAMES), save_dir=tmp_path, verbose=False)
    _check_result(result)
    assert result.map50 == pytest.approx(1.0, abs=1e-6)
    assert result.map50_95 == pytest.approx(1.0, abs=1e-4)
    assert result.precision == pytest.approx(1.0) and result.recall == pytest.approx(1.0)
    assert result.metrics.images == len(odd_records)
    assert result.metrics.instances == sum(len(r.classes) for r in odd_records)
    assert [p.name for p in result.plots] == ["PR_curve.png", "confusion_matrix.png"]
    assert all(p.stat().st_size > 0 for p in result.plots)


def test_shifted_boxes_score_lower(odd_records):
    loader = build_val_dataloader(odd_records, imgsz=128, batch_size=2, stride=32, workers=0)
    result = validate(GroundTruthModel(loader, nc=3, shift=4.0), dataloader=loader, names=list(SHAPE_NAMES))
    assert result.map50 > 0.5 and result.map50_95 < 0.9


def test_ground_truth_model_on_raccoon_photos():
    root = shared_path("data", "raccoon")
    data = {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["raccoon"], "format": "voc"}
    records, _ = load_records(data, "val", cache=False)
    loader = build_val_dataloader(records, imgsz=128, batch_size=8, stride=32, workers=0)
    result = validate(GroundTruthModel(loader, nc=1), dataloader=loader, names=["raccoon"], verbose=False)
    assert result.map50 == pytest.approx(1.0, abs=1e-6)
    assert result.map50_95 == pytest.approx(1.0, abs=1e-4)


def test_to_original_inverts_the_letterbox():
    # a 300x200 (w x h) image resized by 0.64 to 192x128 and padded by (0, 32) into 192x192
    shapes = ((200, 300), ((128 / 200, 192 / 300), (0.0, 32.0)))
    boxes = torch.tensor([[0.0, 32.0, 192.0, 160.0], [96.0, 96.0, 192.0, 200.0]])
    out = to_original(boxes, shapes)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 300.0, 200.0], [150.0, 100.0, 300.0, 200.0]]))


def test_tiny_model_runs_with_loss(odd_records, tmp_path):
    import yaml

    from yolotr.models.detection import DetectionModel
    from yolotr.ops.loss import DetectionLoss

    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=len(SHAPE_NAMES))
    model.train()
    hyp = yaml.safe_load((Path(__file__).parents[2] / "yolotr" / "cfg" / "default.yaml").read_text())
    loss_fn = DetectionLoss(model.model[-1], hyp, imgsz=64)
    loader = build_val_dataloader(odd_records[:4], imgsz=64, batch_size=2, stride=32, workers=0)
    result = validate(model, dataloader=loader, names=list(SHAPE_NAMES), loss_fn=loss_fn, verbose=False)
    _check_result(result)
    assert model.training  # mode restored
    assert result.loss is not None and result.loss.shape == (3,) and np.isfinite(result.loss).all()
    row = result.to_dict()
    assert set(row) == {
        "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95",
        "val/box_loss", "val/obj_loss", "val/cls_loss",
    }  # fmt: skip
    table = result.table().splitlines()
    assert table[0].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert table[1].split()[:3] == ["all", "4", str(sum(len(r.classes) for r in odd_records[:4]))]


def test_best_pt_is_chosen_by_the_fitness_of_the_models_reference():
    """The docs said fitness was 0.1 mAP50 + 0.9 mAP50-95 "here and in the package"; the package (8.4) weighs
    mAP50-95 alone. YOLOv5's and YOLOv4's heads keep YOLOv5's weights, the package's families take its."""
    from yolotr.engine.validator import fitness_rule
    from yolotr.models.detection import DetectionModel

    rules = {name: fitness_rule(DetectionModel(name, nc=2)) for name in ("yolov5n.yaml", "yolov4-s.yaml")}
    rules.update({name: fitness_rule(DetectionModel(name, nc=2)) for name in ("yolov8n.yaml", "yolo26n.yaml")})
    assert rules == {"yolov5n.yaml": "yolov5", "yolov4-s.yaml": "yolov5", "yolov8n.yaml": "ultralytics",
                     "yolo26n.yaml": "ultralytics"}  # fmt: skip
    result = ValidationResult(0.2, 0.6, 0.5, 0.5, [], {}, None, fitness_rule="ultralytics")
    assert result.fitness == 0.2
    assert ValidationResult(0.2, 0.6, 0.5, 0.5, [], {}, None).fitness == pytest.approx(0.24)


def test_class_count_mismatch_is_a_config_error(odd_records):
    from yolotr.errors import ConfigError

    loader = build_val_dataloader(odd_records[:1], imgsz=64, batch_size=1, stride=32, workers=0)
    model = GroundTruthModel(loader, nc=3)
    with pytest.raises(ConfigError, match="3 classes but the dataset names 2"):
        validate(model, dataloader=loader, names=["a", "b"], verbose=False)


@pytest.mark.parametrize(
    ("model_names", "warned"),
    [
        (["b", "a", "c"], "in another order"),
        (["a", "x", "c"], "class 1 is 'x'"),
        (["a", "b", "c"], None),
        (["0", "1", "2"], None),
    ],  # fmt: skip
)
def test_class_names_other_than_the_datasets_are_warned_of(odd_records, caplog, model_names, warned):
    loader = build_val_dataloader(odd_records[:1], imgsz=64, batch_size=1, stride=32, workers=0)
    model = GroundTruthModel(loader, nc=3)
    model.names = model_names
    with caplog.at_level("WARNING", logger="yolotr"):
        validate(model, dataloader=loader, names=["a", "b", "c"], verbose=False)
    messages = [r.getMessage() for r in caplog.records if "class names" in r.getMessage()]
    assert (warned is None and not messages) or (len(messages) == 1 and warned in messages[0])


def test_plot_results_csv(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text("epoch,train/box_loss,metrics/mAP50,lr0\n0,0.1,0.2,0.01\n1,0.08,0.3,0.009\n2,0.07,,0.008\n")
    out = plot_results_csv(csv)
    assert out == tmp_path / "results.png" and out.stat().st_size > 0
    csv.write_text("epoch,train/box_loss,metrics/mAP50,lr0\n0,0.1,nan,0.01\n1,0.08,,0.009\n")  # not validated yet
    with Image.open(plot_results_csv(csv)) as image:
        assert image.size == (int(3.2 * 2 * 150), int(2.8 * 150))  # two panels: the empty column has none


def test_validate_builds_the_loader_from_a_dataset_yaml(tmp_path, monkeypatch):
    from yolotr.data.synthetic import make_shapes_dataset

    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))
    data = make_shapes_dataset(tmp_path / "shapes", n_train=1, n_val=5, imgsz=64, seed=2)
    model = nn.Module()
    model.anchor = nn.Parameter(torch.zeros(1))
    model.forward = lambda x: (torch.zeros(x.shape[0], 1, 5 + len(SHAPE_NAMES)), [])
    result = validate(model, data, imgsz=64, batch_size=2, workers=0, verbose=False)
    assert result.metrics.images == 5 and result.map50 == 0.0 and result.recall == 0.0
    assert len(result.dataloader.dataset) == 5
    again = validate(model, data, dataloader=result.dataloader, verbose=False)
    assert again.dataloader is result.dataloader and again.metrics.images == 5


def test_results_csv_has_val_losses_and_keeps_an_older_header(tmp_path):
    """``val/<item>_loss`` columns after the metrics (NaN without validation); a ``results.csv`` begun without them
    (a run resumed across versions) keeps its header and gets its columns filled."""
    import csv as csv_module
    import math

    from yolotr.engine.results_csv import append_results_row

    names, amp = ["box", "cls"], {"amp/overflow_steps": 0, "amp/loss_scale": 1.0}
    metrics = {"metrics/mAP50": 0.5, "val/box_loss": 1.25, "val/cls_loss": 0.75}
    append_results_row(tmp_path, 0, names, [2.0, 1.0], {}, [0.01], 3.0, amp)
    append_results_row(tmp_path, 1, names, [1.5, 0.5], metrics, [0.01], 6.0, amp)
    rows = list(csv_module.DictReader(open(tmp_path / "results.csv")))
    header = list(rows[0])
    assert header.index("val/box_loss") == header.index("metrics/mAP50-95") + 1 and header[-3:-2] == ["time"]
    assert math.isnan(float(rows[0]["val/cls_loss"])) and float(rows[1]["val/cls_loss"]) == 0.75
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.csv").write_text("epoch,train/box_loss,train/cls_loss,metrics/mAP50,lr,time\n1,2,1,0.1,0.01,3\n")
    append_results_row(old, 1, names, [1.5, 0.5], metrics, [0.02], 6.0, amp)
    rows = list(csv_module.DictReader(open(old / "results.csv")))
    assert rows[1] == {"epoch": "2", "train/box_loss": "1.5", "train/cls_loss": "0.5", "metrics/mAP50": "0.5",
                       "lr": "0.02", "time": "6.0"}  # fmt: skip


def test_validate_leaves_no_worker_behind_and_its_loader_serves_again(tmp_path):
    """The loader ``validate`` makes (and returns for reuse) has its workers stopped when it returns: they held a
    copy of the data each, and a later garbage collection, wherever it fell, waited 5 s for each one."""
    data = make_shapes_dataset(tmp_path / "shapes", n_train=4, n_val=4, imgsz=64, seed=0)
    model = DetectionModel("yolov5n.yaml", nc=len(SHAPE_NAMES))
    before = set(multiprocessing.active_children())
    first = validate(model, data=str(data), imgsz=64, batch_size=2, workers=2, verbose=False)
    assert first.dataloader.num_workers == 2 and set(multiprocessing.active_children()) == before
    again = validate(model, dataloader=first.dataloader, names=list(SHAPE_NAMES), verbose=False)
    assert again.map50_95 == first.map50_95 and again.metrics.images == first.metrics.images == 4
