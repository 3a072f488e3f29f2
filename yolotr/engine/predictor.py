"""Prediction: sources -> letterboxed (RT-DETR: stretched) batches -> model -> NMS -> boxes on the original images."""

from __future__ import annotations

import json
import logging
import numbers
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from yolotr.data.images import Frame, iter_frames
from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.data.result_ids import ResultIds, result_ids
from yolotr.data.transforms import fit_image
from yolotr.engine.config import check_count, check_fraction
from yolotr.engine.fast_backend import (
    Backend,
    prepare_backend,
    preprocess,  # noqa: F401 - re-exported: explain.py imports it from here
    single_thread,
)
from yolotr.engine.head_mode import STRETCH, default_iou, input_fit
from yolotr.engine.results import Boxes, Results
from yolotr.errors import ConfigError
from yolotr.ops.boxes import (
    DETECTIONS,
    as_rows,
    has_objectness,
    kept_detections,
    non_max_suppression,
    scale_boxes,
)

LOGGER = logging.getLogger("yolotr")


def candidates(decoded: torch.Tensor, conf: float, nc: int, on_host: bool | None = None) -> list[torch.Tensor]:
    """Per image, the rows of the decoded output that can pass NMS's confidence threshold.

    ``decoded`` is ``(B, N, 5 + nc)`` (objectness column) or ``(B, N, 4 + nc)`` (anchor-free). A row
    survives when its objectness (anchor-free: its best class score) is above ``conf``: the first
    test of :func:`non_max_suppression`, done here on the whole output at once so that NMS only
    sees the few candidates. ``on_host`` (None: on a CPU ``decoded``) runs the test in NumPy: on a few
    thousand rows PyTorch's thread pool costs more than the work (and much more when other processes
    hold the cores); otherwise in torch on ``decoded``'s device. Returns ``(n_i, C)`` tensors on
    ``decoded``'s device.
    """
    objectness = has_objectness(decoded.shape[-1], nc)
    if decoded.device.type == "cpu" if on_host is None else on_host:
        array = decoded.float().cpu().numpy()
        scores = array[..., 4] if objectness else array[..., 4:].max(-1)  # (B, N)
        return [torch.from_numpy(a[s > conf]).to(decoded.device) for a, s in zip(array, scores)]
    scores = decoded[..., 4] if objectness else decoded[..., 4:].amax(-1)  # (B, N)
    return [x[s > conf] for x, s in zip(decoded, scores)]


def _note_baked_nms(model: nn.Module, conf: float, iou: float, max_det: int, agnostic: bool) -> None:
    """An info line when settings ask for what NMS fixed inside an exported file (``model.nms``) cannot give."""
    baked = getattr(model, "nms", None)
    if not baked:
        if getattr(model, "end2end", False) and hasattr(model, "path"):  # an NMS-free head's exported file
            rows = _file_rows(model)
            if agnostic or (rows is not None and max_det > rows):
                LOGGER.info(
                    "%s holds an end-to-end head's top %s detections, chosen at export: more detections or "
                    "class-agnostic selection do not apply (export a larger --max-det, or predict from the .pt)",
                    model.path, rows if rows is not None else "k",
                )  # fmt: skip
        return
    if conf < baked["conf"] or iou != baked["iou"] or max_det > baked["max_det"] or agnostic:
        LOGGER.info(
            "%s has NMS inside (conf %g, iou %g, max_det %d, per class): a lower conf, another iou, more "
            "detections or agnostic NMS do not apply", getattr(model, "path", "the model"),
            baked["conf"], baked["iou"], baked["max_det"],
        )  # fmt: skip


def _file_rows(model: nn.Module) -> int | None:
    """The fixed row count of an ONNX file's ``(B, k, 6)`` output (None when unknown, dynamic or not ONNX)."""
    session = getattr(model, "session", None)
    shape = session.get_outputs()[0].shape if session is not None else []
    return shape[1] if len(shape) == 3 and isinstance(shape[1], int) else None


def _class_ids(classes, nc: int) -> list[int] | None:
    """``classes`` as a list of class ids (one id may be given bare); ids the model does not have warn."""
    if classes is None:
        return None
    ids = [classes] if isinstance(classes, numbers.Integral) else list(classes)
    if any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in ids):
        raise ConfigError(f"classes must be class ids (whole numbers), got {classes!r}")
    missing = [int(c) for c in ids if not 0 <= c < nc]
    if missing:
        LOGGER.warning("classes %s: the model has classes 0-%d only; those ids never match", missing, nc - 1)
    return [int(c) for c in ids]


class Predictor:
    """Runs a detection model over images and videos.

    Args:
        model: a ``DetectionModel`` (or any module whose eval output's first item is ``(B, N, 5 + nc)``,
            or another layout it declares: :func:`~yolotr.engine.fast_backend.output_layout`; a model
            whose output is ``detections``, e.g. an ONNX file exported with NMS, skips NMS here).
            A model with a fixed input size (an ONNX file exported without dynamic height and
            width: ``model.input_hw = (h, w)``) is always fed at that size, letterboxed to exactly
            ``(h, w)``; ``imgsz`` and ``rect`` then do not apply (an info line says so when
            ``imgsz`` asked for another size).
        names: class names (a list, or a dict by id as ``YOLO.names`` gives).
        imgsz: letterbox size (square side or ``(h, w)``).
        rect: letterbox to the smallest stride multiple around the resized image (YOLOv5's
            ``auto=True``) instead of the full square. A model whose head asks for stretched input
            (:func:`~yolotr.engine.head_mode.input_fit`: RT-DETR, as the package predicts it) is fed every
            image resized to ``imgsz`` without keeping its aspect ratio, and ``rect`` does not apply.
        conf, iou, max_det, classes, agnostic: NMS settings; ``iou`` None: the head's default
            (:func:`~yolotr.engine.head_mode.default_iou`: 0.45 for YOLOv5 / YOLOv4 as YOLOv5's detect.py,
            0.7 for the anchor-free and NMS-free heads as the ``ultralytics`` package).
        batch: images per forward pass (consecutive images of equal letterboxed size are batched).
        backend: how the model runs (:mod:`yolotr.engine.fast_backend`): ``torch`` (a fused copy,
            ``channels_last``), ``onnx`` (exported once, cached, onnxruntime), ``auto`` (``onnx``
            for a float32 model on the CPU, else ``torch``), or an already prepared ``Backend``
            (what :class:`yolotr.YOLO` passes, so that set-up happens once per model).
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        imgsz: int | tuple[int, int] = 640,
        rect: bool = True,
        conf: float = 0.25,
        iou: float | None = None,
        max_det: int = 300,
        classes: list[int] | None = None,
        agnostic: bool = False,
        batch: int = 1,
        stride: int | None = None,
        backend: str | Backend = "torch",
    ):
        self.model = model
        self.backend = backend if isinstance(backend, Backend) else prepare_backend(model, backend)
        self.names = list(names.values()) if isinstance(names, dict) else list(names)  # YOLO.names is a dict
        self.stride = stride or largest_stride(model)
        self.rect = rect
        self.stretched = input_fit(model) == STRETCH
        fixed = getattr(model, "input_hw", None)
        if fixed is not None:
            asked = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
            if tuple(asked) != tuple(fixed):
                LOGGER.info(
                    "%s has a fixed %dx%d input: predicting at %dx%d, not imgsz %s",
                    getattr(model, "path", "the model"), *fixed, *fixed,
                    imgsz if isinstance(imgsz, int) else "x".join(map(str, imgsz)),
                )  # fmt: skip
            self.imgsz, self.rect = tuple(fixed), False
        else:
            self.imgsz = check_imgsz(imgsz, self.stride)
        iou = default_iou(model, "predict") if iou is None else iou
        self.conf, self.iou = check_fraction("conf", conf), check_fraction("iou", iou)
        self.max_det, self.batch = check_count("max_det", max_det), check_count("batch", batch)
        self.classes, self.agnostic = _class_ids(classes, len(self.names)), bool(agnostic)
        _note_baked_nms(model, self.conf, self.iou, self.max_det, self.agnostic)

    @torch.inference_mode()
    def predict_images(self, images: list[np.ndarray]) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Detections ``(n, 6)`` per original RGB image, and the ``(h, w)`` the model saw (letterboxed)."""
        t0 = time.perf_counter()
        boxed = [fit_image(im, self.imgsz, self.stretched, self.rect, self.stride)[0] for im in images]
        x = self.backend.to_input(boxed)
        t1 = time.perf_counter()
        decoded = as_rows(self.backend(x), self.backend.layout)  # the model declares its layout
        t2 = time.perf_counter()
        detections = []
        end2end = self.backend.layout == DETECTIONS  # NMS inside the model (or an NMS-free head)
        with single_thread(decoded.device.type == "cpu"):
            rows_per_image = list(decoded) if end2end else candidates(decoded, self.conf, len(self.names))
            for rows, im in zip(rows_per_image, images):
                if end2end:
                    det = kept_detections(rows, self.conf, self.classes, self.max_det)
                else:
                    (det,) = non_max_suppression(
                        rows[None], self.conf, self.iou, self.classes, self.agnostic, self.max_det, nc=len(self.names)
                    )  # fmt: skip
                det[:, :4] = scale_boxes(boxed[0].shape[:2], det[:, :4], im.shape[:2], stretched=self.stretched)
                detections.append(det.cpu())
        ms = 1000 / len(images)
        t3 = time.perf_counter()
        self.speed = {"preprocess": (t1 - t0) * ms, "inference": (t2 - t1) * ms, "postprocess": (t3 - t2) * ms}
        return detections, boxed[0].shape[:2]

    def stream(self, source, progress: bool = False) -> Iterator[tuple[Frame, Results]]:
        """Yield ``(frame, results)`` one image or video frame at a time.

        ``source``: a file, folder, glob, ``.txt`` list, video, in-memory image (NumPy BGR as OpenCV reads
        it, or PIL) or a list of these (:func:`yolotr.data.images.iter_frames`).
        """
        pending: list[Frame] = []
        frames = iter_frames(source)
        for frame in tqdm(frames, desc="predict", unit="img", disable=not progress):
            if pending and frame.image.shape != pending[0].image.shape:
                yield from self._flush(pending)
                pending = []
            pending.append(frame)
            if len(pending) >= self.batch:
                yield from self._flush(pending)
                pending = []
        if pending:
            yield from self._flush(pending)

    def _flush(self, frames: list[Frame]) -> Iterator[tuple[Frame, Results]]:
        detections, input_shape = self.predict_images([f.image for f in frames])
        for frame, det in zip(frames, detections):
            boxes = Boxes(det, tuple(frame.image.shape[:2]))
            result = Results(frame.image, frame.path, boxes, self.names, tuple(input_shape), frame.frame)
            result.speed = dict(self.speed)  # per image, from predict_images
            yield frame, result

    def __call__(self, source) -> list[Results]:
        return [r for _, r in self.stream(source)]


class PredictionWriter:
    """Writes predictions into ``save_dir`` as they come (:meth:`add`), then the JSON files (:meth:`close`).

    ``save_images``: drawn images (videos as ``.mp4``) and ``predictions.json`` (per image: class,
    name, confidence, box). ``save_txt``: YOLO txt per image in ``labels/`` (``class cx cy w h``, plus
    the confidence with ``save_conf``, as YOLOv5 and Ultralytics write them). ``save_json``:
    ``predictions_coco.json``, COCO results (``bbox`` = x, y, w, h in pixels) whose ``image_id`` and
    ``category_id`` follow ``ids`` (:mod:`yolotr.data.result_ids`; default: by the results' class
    names, COCO's 91-class ids for the 80 COCO names, else the class index and the file stem, or
    ``stem_frame`` for videos, frames numbered from 1 in file names and ids as the package numbers them, while
    ``Results.frame`` counts from 0). ``save_crop``: each detection's region in ``crops/<class name>/<stem>.jpg``
    (:meth:`Results.save_crop`). With ``save_dir=None`` nothing is written, only counted.
    """

    def __init__(
        self,
        save_dir: Path | None,
        save_txt: bool = False,
        save_json: bool = False,
        save_images: bool = True,
        save_conf: bool = False,
        ids: ResultIds | None = None,
        save_crop: bool = False,
    ):
        self.save_dir, self.save_txt, self.save_json, self.save_images = save_dir, save_txt, save_json, save_images
        self.save_conf, self.ids, self.save_crop = save_conf, ids, save_crop
        self.records: list[dict] = []
        self.coco: list[dict] = []
        self.n_images = self.n_detections = 0
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.stems: dict[str, str] = {}  # source path -> the stem its outputs take, unique in this run
        self.taken: set[str] = set()  # the stems given so far

    def _stem(self, path: str) -> str:
        """The output stem of ``path``: its own, or ``<stem>_2``, ``_3``, ... when a file of another folder (or
        suffix) already took it: ``a/x.jpg``, ``b/x.jpg`` and ``a/x.png`` would overwrite each other's outputs."""
        if path not in self.stems:
            stem, n = Path(path).stem, 2
            unique = stem
            while unique in self.taken:
                unique, n = f"{stem}_{n}", n + 1
            if unique != stem:
                LOGGER.info("%s: its outputs are named %s (another source file is named %s)", path, unique, stem)
            self.stems[path] = unique
            self.taken.add(unique)
        return self.stems[path]

    def add(self, frame: Frame, result: Results) -> None:
        self.n_images += 1
        self.n_detections += len(result)
        base = self._stem(frame.path)
        stem = base if frame.frame is None else f"{base}_{frame.frame + 1}"  # frames numbered from 1, as the package
        self.records.append({"image": frame.path, "frame": frame.frame, "detections": result.summary()})
        if self.save_json:
            self.ids = self.ids or result_ids(list(result.names))
            self.coco += self.ids.entries(frame.path, frame.frame, result.boxes.data, base)
        if self.save_dir is None:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        if self.save_images and frame.frame is None:
            result.save(self.save_dir / f"{base}{Path(frame.path).suffix}")
        elif self.save_images:
            if frame.path not in self.videos:
                h, w = frame.image.shape[:2]
                out = str(self.save_dir / f"{base}.mp4")
                self.videos[frame.path] = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), frame.fps, (w, h))
            self.videos[frame.path].write(cv2.cvtColor(result.plot(), cv2.COLOR_RGB2BGR))
        if self.save_txt:
            result.save_txt(self.save_dir / "labels" / f"{stem}.txt", self.save_conf)
        if self.save_crop:
            result.save_crop(self.save_dir / "crops", stem)

    def close(self) -> dict:
        """Release the video writers, write the JSON files; ``{"images": n, "detections": n, "json": path | None}``."""
        for writer in self.videos.values():
            writer.release()
        self.videos.clear()
        json_path = None
        if self.save_dir is not None and self.save_images:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            json_path = self.save_dir / "predictions.json"
            json_path.write_text(json.dumps(self.records, indent=1))
        if self.save_dir is not None and self.save_json:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            (self.save_dir / "predictions_coco.json").write_text(json.dumps(self.coco))
        return {"images": self.n_images, "detections": self.n_detections, "json": json_path}


def check_save_options(save_txt: bool, save_json: bool, save_conf: bool, data) -> None:
    """Refuse the settings that only qualify another one when that one is not given (they would do nothing)."""
    if save_conf and not save_txt:
        raise ConfigError("save_conf adds the score column to save_txt's label files: give save_txt too")
    if data is not None and not save_json:
        raise ConfigError("data gives save_json's COCO results the dataset's ids: give save_json too")


def run_prediction(
    predictor: Predictor,
    source,
    save_dir: Path | None,
    save_txt: bool = False,
    save_json: bool = False,
    save_images: bool = True,
    progress: bool = True,
    keep_results: bool = False,
    save_conf: bool = False,
    data=None,
    save_crop: bool = False,
) -> dict:
    """Predict over ``source``, streaming; with ``save_dir`` write what is asked for (:class:`PredictionWriter`).

    ``data`` (a dataset YAML, dict or config): the COCO results take its ids (a COCO-format dataset's
    own image and category ids, :func:`yolotr.data.result_ids.result_ids`).

    Returns ``{"images": n, "detections": n, "json": path | None}``, plus ``"results"`` (the list of
    :class:`Results`) with ``keep_results``. What was predicted before an error is still written.

    Raises:
        ConfigError: ``save_conf`` without ``save_txt``, or ``data`` without ``save_json`` (they would do nothing).
    """
    check_save_options(save_txt, save_json, save_conf, data)
    ids = result_ids(predictor.names, data) if save_json else None
    writer = PredictionWriter(save_dir, save_txt, save_json, save_images, save_conf, ids, save_crop)
    results = []
    try:
        for frame, result in predictor.stream(source, progress=progress):
            writer.add(frame, result)
            if keep_results:
                results.append(result)
    finally:
        summary = writer.close()
    return {**summary, "results": results} if keep_results else summary
