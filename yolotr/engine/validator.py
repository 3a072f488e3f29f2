"""Validation: model + rectangular batches -> NMS -> boxes on the original images -> COCO metrics.

Derived from YOLOv5's ``val.py`` (rectangular batches padded by half a stride, confidence 0.001,
NMS IoU 0.6, the same printed table and ``fitness``), with three differences: the metrics are the
COCO evaluation itself (:mod:`yolotr.metrics.detection`); ground truth is the dataset's records
in original-image pixels, not the letterboxed labels scaled back; and boxes go back to the
original image with separate horizontal and vertical gains (the dataset rounds each side of the
resized image on its own). NMS is multi-label, as in YOLOv5's ``val.py`` and the ``ultralytics`` validator: every class
above the confidence threshold is a candidate of its own (prediction keeps one class per box).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from yolotr.data.dataset import DetectionDataset, Shapes, build_dataloader, stop_workers
from yolotr.data.imgsz import check_imgsz, default_imgsz, largest_stride
from yolotr.data.result_ids import ResultIds
from yolotr.data.single_class import single_class
from yolotr.data.sources import DatasetConfig, ImageRecord, load_dataset_config, load_records
from yolotr.engine.config import check_count, check_flag, check_fraction
from yolotr.engine.fast_backend import output_layout
from yolotr.engine.head_mode import LETTERBOX, STRETCH, default_iou, end2end_mode, input_fit
from yolotr.errors import ConfigError
from yolotr.metrics.box_view import BoxMetrics, results_dict
from yolotr.metrics.detection import (
    ClassMetrics,
    ConfusionMatrix,
    DetectionEvaluator,
    DetectionMetrics,
    selection_fitness,
)
from yolotr.ops.boxes import DETECTIONS, ROWS, as_rows, clip_boxes, kept_detections, non_max_suppression, xywh2xyxy
from yolotr.ops.loss import LOSS_NAMES

LOGGER = logging.getLogger("yolotr")

LossFn = Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
HEADER = f"{'Class':>22}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"


def fitness_rule(model: nn.Module) -> str:
    """The model's own rule (``DetectionModel.fitness_rule``); for an exported model, by its output: the
    package's layouts (``columns``, end-to-end ``detections``) ``ultralytics``, YOLOv5's ``rows`` ``yolov5``."""
    rule = getattr(model, "fitness_rule", None)
    if isinstance(rule, str):
        return rule
    return "yolov5" if output_layout(model) == ROWS else "ultralytics"


@dataclass
class ValidationResult:
    """What one validation pass measured.

    Attributes:
        map50_95, map50: COCO mAP at IoU 0.50:0.95 and at 0.50 (mean over classes with ground truth).
        precision, recall: mean over classes at the confidence that maximizes the mean F1 (IoU 0.50),
            ``metrics.confidence``.
        per_class: one :class:`~yolotr.metrics.detection.ClassMetrics` per class.
        speed: milliseconds per image: ``preprocess``, ``inference``, ``postprocess`` (NMS and the mapping
            of boxes back to the original images), the keys of the ``ultralytics`` package.
        loss: float64 mean loss items per batch when a ``loss_fn`` was given, named by ``loss_names``
            (``(box, obj, cls)`` for YOLOv5 heads, ``(box, cls, dfl)`` for anchor-free ones).
        metrics: the full :class:`~yolotr.metrics.detection.DetectionMetrics` (curves, confusion matrix).
        plots: image files written (PR curve, confusion matrix), empty without ``save_dir``.
        dataloader: the loader that was used (built by :func:`validate` when none was given): pass it
            back as ``dataloader=`` next time to skip loading the records again.
        save_dir: the folder the plots (and ``save_json``'s file) went to; None without one.
    """

    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: list[ClassMetrics]
    speed: dict[str, float]
    metrics: DetectionMetrics
    loss: np.ndarray | None = None
    loss_names: tuple[str, ...] = LOSS_NAMES
    plots: list[Path] = field(default_factory=list)
    dataloader: DataLoader | None = field(default=None, repr=False)
    coco_json: Path | None = None
    coco_map: tuple[float, float] | None = None
    fitness_rule: str = "yolov5"
    save_dir: Path | None = None

    @property
    def confusion_matrix(self) -> ConfusionMatrix:
        """The package's ``confusion_matrix``: ``.matrix`` ``(nc + 1, nc + 1)`` int64, predicted class by true class,
        background last (:class:`~yolotr.metrics.detection.ConfusionMatrix`)."""
        return self.metrics.confusion

    @property
    def fitness(self) -> float:
        """The score ``best.pt`` is chosen by, that of the model's reference (``fitness_rule``): YOLOv5's
        ``0.1 * mAP50 + 0.9 * mAP50-95`` for its and YOLOv4's anchor-based heads, the ``ultralytics``
        package's mAP50-95 for the others (YOLOv8 ... YOLO26, YOLOv10, RT-DETR)."""
        return selection_fitness(self.map50, self.map50_95, self.fitness_rule)

    @cached_property
    def box(self) -> BoxMetrics:
        """The numbers under the ``ultralytics`` package's names: ``box.map``, ``box.map50``, ``box.map75``,
        ``box.maps``, ``box.mp``, ``box.mr``, per-class ``box.p``, ``box.ap`` ... (:class:`BoxMetrics`)."""
        return BoxMetrics(self.metrics, self.fitness_rule)

    @property
    def results_dict(self) -> dict[str, float]:
        """The package's ``results_dict``: ``metrics/mAP50-95(B)`` ... and ``fitness``."""
        return results_dict(self.box)

    @property
    def maps(self) -> np.ndarray:
        """``(nc,)`` mAP50-95 per class (a class without ground truth reads the mean), as the package's."""
        return self.box.maps

    def to_dict(self) -> dict[str, float]:
        """Columns for ``results.csv``: ``metrics/precision``, ``metrics/recall``, ``metrics/mAP50``,
        ``metrics/mAP50-95`` and, with a loss, ``val/<name>_loss`` for each of ``loss_names``."""
        out = {
            "metrics/precision": self.precision,
            "metrics/recall": self.recall,
            "metrics/mAP50": self.map50,
            "metrics/mAP50-95": self.map50_95,
        }
        if self.loss is not None:
            out.update({f"val/{k}_loss": float(v) for k, v in zip(self.loss_names, self.loss)})
        return out

    def table(self, per_class: bool = True) -> str:
        """YOLOv5's validation table: a header, an ``all`` row and (optionally) one row per class
        that has ground truth."""
        m = self.metrics
        rows = [HEADER, _row("all", m.images, m.instances, self.precision, self.recall, self.map50, self.map50_95)]
        if per_class:
            for c in self.per_class:
                if c.instances:
                    rows.append(_row(c.name, c.images, c.instances, c.precision, c.recall, c.ap50, c.ap50_95))
        return "\n".join(rows)

    def speed_line(self) -> str:
        s = self.speed
        return (
            f"Speed: {s['preprocess']:.1f}ms pre-process, {s['inference']:.1f}ms inference, "
            f"{s['postprocess']:.1f}ms NMS per image"
        )


def _row(name: str, images: int, instances: int, p: float, r: float, ap50: float, ap: float) -> str:
    return f"{name:>22}{images:>11d}{instances:>11d}{p:>11.3g}{r:>11.3g}{ap50:>11.3g}{ap:>11.3g}"


def build_val_dataloader(
    records: list[ImageRecord],
    imgsz: int = 640,
    batch_size: int = 16,
    stride: int = 32,
    workers: int = 2,
    fit: str = LETTERBOX,
    pin_memory: bool | None = None,
) -> DataLoader:
    """The validation loader: no augmentation, no shuffling; with ``fit`` ``letterbox`` (the YOLOs, YOLOv5's and
    the package's validators) rectangular batches (records sorted by aspect ratio, each batch letterboxed to the
    smallest stride multiple that fits it, plus half a stride), with ``stretch`` (RT-DETR, the package's
    RTDETRValidator) every image resized to the ``imgsz`` square (:func:`~yolotr.engine.head_mode.input_fit`).
    Build it once and reuse it every epoch. ``pin_memory``: for a model on CUDA (None: whenever CUDA is
    available; pinning starts CUDA, so a CPU run on a GPU machine passes False)."""
    if fit not in (LETTERBOX, STRETCH):
        raise ConfigError(f"input fit: expected {LETTERBOX} or {STRETCH}, got {fit!r}")
    stretch = fit == STRETCH
    dataset = DetectionDataset(
        records, imgsz, augment=False, rect=not stretch, batch_size=batch_size, stride=stride, pad=0.5, stretch=stretch
    )
    return build_dataloader(dataset, batch_size, workers=workers, shuffle=False, pin_memory=pin_memory)


def to_original(boxes: torch.Tensor, shapes: Shapes) -> torch.Tensor:
    """Map ``(n, 4)`` xyxy boxes from the letterboxed input back to the original image, in place.

    ``shapes = ((h0, w0), ((gain_h, gain_w), (pad_w, pad_h)))`` as the dataset gives it; the result
    is clipped to ``(h0, w0)``.
    """
    (h0, w0), ((gain_h, gain_w), (pad_w, pad_h)) = shapes
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad_w) / gain_w
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad_h) / gain_h
    return clip_boxes(boxes, (h0, w0))


class Validator:
    """Runs a detection model over a validation loader and measures it.

    Args:
        dataloader: yields :func:`~yolotr.data.dataset.collate` batches with ``shapes`` (see
            :func:`build_val_dataloader`). When its dataset has ``records``, ground truth comes from
            them (exact original pixels); otherwise from the batch targets mapped back through ``shapes``.
        names: class names (the model's classes).
        conf, iou, max_det: NMS settings; ``max_det`` is also COCO's ``maxDets``.
        amp: run the model under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU).
        loss_fn: optional ``loss_fn(raw_outputs, targets) -> (loss, (box, obj, cls))`` (e.g.
            :class:`~yolotr.ops.loss.DetectionLoss`) for validation losses.
        save_dir: where the PR curve and confusion matrix images go; None: no plots.
        progress: show a tqdm bar.
        single_cls: score a model of any class count on one class, as YOLOv5's ``val.py --single-cls``:
            class-agnostic NMS, then every detection's class 0 (the ground truth is class 0 already).
    """

    def __init__(
        self,
        dataloader: DataLoader,
        names: list[str],
        conf: float = 0.001,
        iou: float = 0.6,
        max_det: int = 300,
        amp: bool = False,
        loss_fn: LossFn | None = None,
        save_dir: str | Path | None = None,
        progress: bool = True,
        ids: ResultIds | None = None,
        single_cls: bool = False,
    ):
        self.dataloader, self.names, self.single_cls = dataloader, list(names), single_cls
        self.ids, self.coco_results = ids, []  # with ids: every detection as a COCO result (save_json)
        self.conf, self.iou, self.max_det, self.amp = conf, iou, max_det, amp
        self.loss_fn = loss_fn
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.progress = progress
        records = getattr(dataloader.dataset, "records", None)
        self.records = {r.path: r for r in records} if records is not None else None

    def __call__(self, model: nn.Module) -> ValidationResult:
        """Validate ``model`` (its train/eval mode is restored afterwards)."""
        model = getattr(model, "module", model)
        model_nc = getattr(model, "nc", None)
        if self.single_cls and len(self.names) != 1:
            raise ConfigError(f"single_cls: the dataset must be read as one class, got names {self.names}")
        if model_nc is not None and int(model_nc) != len(self.names) and not self.single_cls:
            raise ConfigError(
                f"the model has {model_nc} class{'es' * (model_nc != 1)} but the dataset names {len(self.names)}: "
                "validate with the dataset the model was trained on, fine-tune it with this dataset's classes first, "
                "or score every class as one with single_cls=True (--single-cls)"
            )
        self._warn_other_names(getattr(model, "names", None))
        training = model.training
        model.eval()
        try:
            return self._run(model)
        finally:
            model.train(training)

    def _warn_other_names(self, model_names) -> None:
        """Warn once when the model's class names (its checkpoint's) are not the dataset's: the same count in another
        order (or other classes) scores each class against another's boxes, and COCO results carry the wrong category
        ids. Not compared: numbered names (``0``, ``class0``: never saw names), single_cls (all names one class)."""
        if getattr(self, "_names_checked", False) or not model_names or self.single_cls:
            return
        self._names_checked = True
        model_names = [str(n) for n in (model_names.values() if isinstance(model_names, dict) else model_names)]
        numbered = all(n in (str(i), f"class{i}") for i, n in enumerate(model_names))
        if numbered or model_names == self.names or len(model_names) != len(self.names):
            return
        first = next(i for i, (a, b) in enumerate(zip(model_names, self.names)) if a != b)
        order = " in another order" if sorted(model_names) == sorted(self.names) else ""
        LOGGER.warning(
            "the model's class names are not the dataset's%s (class %d is %r in the model, %r in the dataset): "
            "scores are per class index, so check that the dataset is the one the model was trained on",
            order, first, model_names[first], self.names[first],
        )  # fmt: skip

    @torch.inference_mode()
    def _run(self, model: nn.Module) -> ValidationResult:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        evaluator = DetectionEvaluator(self.names, max_det=self.max_det)
        times = np.zeros(3)
        loss_names = tuple(getattr(self.loss_fn, "names", LOSS_NAMES))
        loss_sum, n_batches = torch.zeros(len(loss_names), device=device, dtype=torch.float64), 0
        layout = output_layout(model)  # the model declares what its decoded output is
        nc = int(getattr(model, "nc", None) or len(self.names))  # the output's classes (single_cls: any count)
        bar = tqdm(self.dataloader, desc=HEADER, disable=not self.progress, leave=False)
        for images, targets, paths, shapes in bar:
            t0 = _clock(device)
            x = images.to(device, non_blocking=True).to(dtype) / 255.0
            t1 = _clock(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=self.amp):
                out = model(x)
            decoded, raw = (out[0], out[1] if len(out) > 1 else None) if isinstance(out, tuple | list) else (out, None)
            if self.loss_fn is not None and raw is not None:
                maps = raw if isinstance(raw, dict) else list(raw)  # an end-to-end head's raw: both branches
                loss_sum += self.loss_fn(maps, targets)[1].double()  # targets on the host, as in training
                n_batches += 1
            t2 = _clock(device)
            if layout == DETECTIONS:  # NMS inside the model (or an NMS-free head)
                detections = [kept_detections(d, self.conf, None, self.max_det) for d in decoded]
            else:  # single_cls: class-agnostic, as YOLOv5's val.py
                detections = non_max_suppression(
                    as_rows(decoded, layout), self.conf, self.iou, agnostic=self.single_cls, max_det=self.max_det,
                    nc=nc, multi_label=True,
                )  # fmt: skip
            for i, det in enumerate(detections):
                if shapes[i] is None:
                    raise ValueError(f"{paths[i]}: no letterbox shapes (a mosaic?): validate without augmentation")
                det = det.clone()
                if self.single_cls:
                    det[:, 5] = 0
                det[:, :4] = to_original(det[:, :4], shapes[i])
                if self.ids is not None:
                    self.coco_results += self.ids.entries(paths[i], None, det)
                gt_boxes, gt_classes = self._ground_truth(i, paths[i], targets, shapes[i], tuple(x.shape[2:]))
                evaluator.update(det.cpu(), gt_boxes, gt_classes, shapes[i][0])
            times += (t1 - t0, t2 - t1, _clock(device) - t2)
        metrics = evaluator.compute()
        n = max(len(evaluator), 1)
        speed = dict(zip(("preprocess", "inference", "postprocess"), (times * 1e3 / n).tolist()))
        result = ValidationResult(
            map50_95=metrics.map50_95,
            map50=metrics.map50,
            precision=metrics.precision,
            recall=metrics.recall,
            per_class=metrics.per_class,
            speed=speed,
            metrics=metrics,
            loss=(loss_sum / n_batches).cpu().numpy() if n_batches else None,
            loss_names=loss_names,
            fitness_rule=fitness_rule(model),
            save_dir=self.save_dir,
        )
        if self.save_dir is not None:
            result.plots = self.plot(metrics)
        return result

    def _ground_truth(
        self, i: int, path: str, targets: torch.Tensor, shapes: Shapes, input_hw: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(m, 4)`` float xyxy original-pixel boxes and ``(m,)`` int classes of image ``i`` of a batch."""
        if self.records is not None and path in self.records:
            rec = self.records[path]
            return rec.boxes, rec.classes
        rows = targets[targets[:, 0] == i]
        h, w = input_hw
        boxes = xywh2xyxy(rows[:, 2:6].double() * torch.tensor([w, h, w, h], dtype=torch.float64))
        return to_original(boxes, shapes).numpy(), rows[:, 1].long().numpy()

    def plot(self, metrics: DetectionMetrics) -> list[Path]:
        """Write ``PR_curve.png`` and ``confusion_matrix.png`` into ``save_dir``; returns their paths."""
        from yolotr.plotting import plot_confusion_matrix, plot_pr_curve

        ap50 = np.array([c.ap50 for c in metrics.per_class])
        return [
            plot_pr_curve(metrics.pr_recall, metrics.pr_precision, self.names, self.save_dir / "PR_curve.png", ap50),
            plot_confusion_matrix(metrics.confusion.matrix, self.names, self.save_dir / "confusion_matrix.png"),
        ]


def _clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def validate(
    model: nn.Module,
    data: str | Path | dict | DatasetConfig | None = None,
    split: str = "val",
    imgsz: int | None = None,
    batch_size: int = 16,
    conf: float = 0.001,
    iou: float | None = None,
    max_det: int = 300,
    workers: int = 2,
    save_dir: str | Path | None = None,
    dataloader: DataLoader | None = None,
    names: list[str] | None = None,
    amp: bool = False,
    loss_fn: LossFn | None = None,
    verbose: bool = True,
    log_table: bool = True,
    save_json: bool = False,
    end2end: bool | None = None,
    single_cls: bool | None = None,
) -> ValidationResult:
    """Validate ``model`` on a dataset split and log YOLOv5's table.

    Args:
        model: a :class:`~yolotr.models.detection.DetectionModel` (or any module whose eval output is
            ``(decoded (B, N, 5 + nc), raw)`` with boxes ``cx, cy, w, h`` in input pixels).
        data: dataset YAML path, dict, :class:`DatasetConfig` or ``"shapes"``; not needed with ``dataloader``.
            ``None``: the data a loaded checkpoint was trained on (``model.train_data``), as the ``ultralytics``
            package's ``model.val()`` does.
        split: the split of ``data`` to validate on.
        imgsz, batch_size, workers: of the loader built from ``data`` (multiple of the model stride); ``imgsz``
            ``None``: the size a loaded checkpoint was trained at, else 640.
        dataloader: a ready loader (:func:`build_val_dataloader`); ``data`` then only supplies names.
        names: class names (default: ``data``'s, else the model's).
        save_dir: write the PR curve and confusion matrix there.
        conf, iou, max_det, amp, loss_fn: see :class:`Validator`; ``iou`` None: the head's default
            (:func:`~yolotr.engine.head_mode.default_iou`: 0.6 YOLOv5 / YOLOv4 as its val.py, 0.7 the package's).
        verbose: tqdm bar, per-class rows and the speed line (the ``all`` row is always logged).
        save_json: write the detections as COCO results, ``predictions_coco.json`` in ``save_dir`` (default
            a new ``runs/val/exp``, which then gets the plots too), named by the dataset's own image and
            category ids (:mod:`yolotr.data.result_ids`); on a COCO-format split of one JSON, also score the
            file against that JSON with faster-coco-eval (:mod:`yolotr.engine.coco_json`):
            ``result.coco_json``, ``result.coco_map``.
        end2end: for a YOLOv10 / YOLO26 head (:mod:`yolotr.engine.head_mode`): ``None`` its own NMS-free
            top-``max_det`` output, ``False`` the one-to-many branch with NMS (the ``ultralytics`` package's
            default), ``True`` NMS-free or an error; the head's mode is restored afterwards.
        single_cls: read ``data`` as one class (:func:`~yolotr.data.single_class.single_class`) and score every
            detection as that class (:class:`Validator`); ``None``: as the model was trained (``model.single_cls``).
    """
    iou = default_iou(model, "val") if iou is None else iou  # 0.6 YOLOv5 / YOLOv4, 0.7 the package's families
    conf, iou, max_det = check_fraction("conf", conf), check_fraction("iou", iou), check_count("max_det", max_det)
    if save_dir is not None:  # before any work: a file in the way is one clear error, not mkdir's traceback
        from yolotr.engine.runs import check_output_dir

        save_dir = check_output_dir(save_dir)
    if data is None and dataloader is None:
        data = _training_data(model)
    own = load_dataset_config(data) if data is not None else None  # the labels are checked against its names
    single_cls = check_flag("single_cls", getattr(model, "single_cls", False) if single_cls is None else single_cls)
    config = single_class(own)[0] if own is not None and single_cls else own
    built = None
    if dataloader is None:
        imgsz = default_imgsz(imgsz, model)
        records, _ = load_records(own, split)
        records = single_class(own, records)[1] if single_cls else records
        stride = largest_stride(model)
        imgsz = check_imgsz(imgsz, stride)
        param = next(model.parameters(), None)
        on_cuda = param is not None and param.device.type == "cuda"
        dataloader = build_val_dataloader(records, imgsz, batch_size, stride, workers, input_fit(model), on_cuda)
        built = dataloader
    if names is None:
        names = list(config.names) if config is not None else list(getattr(model, "names", []))
    ids = None
    if save_json:
        from yolotr.data.result_ids import result_ids
        from yolotr.engine.runs import next_run_dir

        ids = result_ids(names, config, [split])
        save_dir = save_dir if save_dir is not None else next_run_dir("runs/val", "exp")
    validator = Validator(dataloader, names, conf, iou, max_det, amp, loss_fn, save_dir, verbose, ids, single_cls)
    with end2end_mode(model, end2end, max_det=max_det):  # an end-to-end head's top-k is max_det, not its 300
        result = validator(model if loss_fn is not None else inference_copy(model))
    stop_workers(built)  # the workers of a loader made here: now, not when collected (reuse forks new ones)
    result.dataloader = dataloader
    if ids is not None:
        from yolotr.engine.coco_json import write_and_score

        images = list(validator.records) if validator.records is not None else None
        result.coco_json, result.coco_map = write_and_score(
            validator.coco_results, ids, Path(save_dir), images, len(names), max_det, single_cls
        )
    if log_table:  # the CLI prints it on stdout instead (yolotr val ... > out.txt holds the table)
        LOGGER.info("%s", result.table(per_class=verbose and len(names) > 1))
    if verbose:
        LOGGER.info("%s", result.speed_line())
    if result.plots:
        LOGGER.info("plots saved to %s", Path(result.plots[0]).parent)
    return result


def inference_copy(model: nn.Module) -> nn.Module:
    """What validation runs without a ``loss_fn``: a fused (BatchNorm folded), eval, ``channels_last`` deep
    copy of ``model`` (the predictor's :class:`~yolotr.engine.fast_backend.TorchBackend`, as YOLOv5's
    ``val.py`` and the ``ultralytics`` validator fuse); ``model`` itself is left as it is. The same
    ``(B, 3, H, W)`` float input gives the same decoded output up to float rounding. A module without
    parameters (an ONNX model) is returned as it is. With a ``loss_fn`` the raw training-form outputs are
    needed, so the trainer's validation keeps the model unfused."""
    from yolotr.engine.fast_backend import TorchBackend

    return TorchBackend(getattr(model, "module", model)).model


def _training_data(model: nn.Module):
    """The dataset a loaded checkpoint names as its training data (``validate(data=None)``), with an info line."""
    data = getattr(model, "train_data", None)
    if data is None:
        raise ConfigError(
            "validation needs a dataset (data=... / --data) or a dataloader: the model does not name the data it "
            "was trained on (only yolotr training checkpoints do)"
        )
    shown = data if isinstance(data, str | Path) else "a dict"
    if isinstance(data, str | Path) and Path(data).suffix.lower() in {".yaml", ".yml"} and not Path(data).is_file():
        raise ConfigError(f"the checkpoint's training data {shown} is not found from {Path.cwd()}: give the dataset")
    LOGGER.info("no dataset given: validating on the checkpoint's training data (%s)", shown)
    return data
