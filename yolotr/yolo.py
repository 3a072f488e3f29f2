"""The ``YOLO`` facade: one object to build or load a model and run the engine on it."""

from __future__ import annotations

import copy
import inspect
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path

from yolotr.data.imgsz import default_imgsz
from yolotr.errors import ConfigError, check_keywords
from yolotr.logs import verbosity
from yolotr.models.loading import is_yaml_source, load_model
from yolotr.yolo_habits import PackageHabits

LOGGER = logging.getLogger("yolotr")


class YOLO(PackageHabits):
    """A detector and what you can do with it.

    ``YOLO("yolov5s.yaml")`` builds a shipped config (or any YAML path); ``YOLO("best.pt")`` loads our
    checkpoint; ``YOLO("yolov5n.pt")`` imports an official YOLOv5 checkpoint without its code.

    Messages (an imported checkpoint, a weight-transfer report, a dataset summary, the layer table)
    go to the ``yolotr`` logger, which shows them on stderr unless the application configured logging
    itself (see :mod:`yolotr.logs`).

    Args:
        source: model YAML or checkpoint.
        nc: number of classes when building from a YAML.
        verbose: ``False`` hides the INFO messages of this object's calls (warnings still show);
            each method's own ``verbose`` overrides it.

    Raises:
        CheckpointError: ``source`` is a file that is not a readable checkpoint.
        ConfigError: ``source`` is a YAML that does not describe a model.
    """

    def __init__(self, source: str | Path | dict = "yolov5n.yaml", nc: int | None = None, verbose: bool = True):
        source = os.fspath(source) if isinstance(source, os.PathLike) else source  # an ExportResult too
        self.source = source if isinstance(source, dict) else str(source)
        self.verbose = verbose
        with verbosity(verbose):
            from yolotr.engine.torchscript_model import is_exported_file, load_exported

            if is_exported_file(source):
                self.model = load_exported(source)  # predicts only; run as it is (no fused copy, no export)
            else:
                self.model = load_model(source, nc=nc)
        self._untrained = not self.is_exported and is_yaml_source(source)  # train() builds it again, seeded
        # backend name -> (the model it was prepared from, its weights version, the Backend)
        self._prepared: dict[str, tuple[weakref.ref, tuple, object]] = {}
        self._callbacks: list[tuple[str, Callable]] = []  # (event, fn) for every train(): yolo_habits.add_callback
        self._loaded_weights: str | None = None  # the checkpoint load() copied in, for train() on another nc

    def _verbose(self, verbose: bool | None) -> bool:
        return self.verbose if verbose is None else verbose

    @property
    def is_exported(self) -> bool:
        """Whether this object runs an exported file (``YOLO("best.onnx")``, ``YOLO("best.torchscript")``): it
        can only predict."""
        from yolotr.engine.onnx_model import OnnxModel
        from yolotr.engine.torchscript_model import TorchScriptModel

        return isinstance(self.model, OnnxModel | TorchScriptModel)

    @property
    def is_onnx(self) -> bool:
        """Whether this object runs an exported ONNX file (``YOLO("best.onnx")``)."""
        from yolotr.engine.onnx_model import OnnxModel

        return isinstance(self.model, OnnxModel)

    def _need_pytorch(self, what: str) -> None:
        if self.is_exported:
            raise ConfigError(
                f"{self.source}: an exported model can only predict; {what} needs the PyTorch weights (.pt) "
                "it was exported from"
            )

    @property
    def names(self) -> dict[int, str]:
        """Class names by id, ``{0: "person", 1: "bicycle", ...}`` as in the ``ultralytics`` package
        (the model itself keeps them as a list, ``self.model.names``)."""
        return dict(enumerate(self.model.names))

    def __call__(self, source, **kwargs):
        """``model(source, ...)`` is ``model.predict(source, ...)``, as in the ``ultralytics`` package."""
        return self.predict(source, **kwargs)

    def predict(
        self,
        source,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float | None = None,
        max_det: int = 300,
        classes: list[int] | None = None,
        agnostic_nms: bool = False,
        rect: bool = True,
        batch: int = 1,
        backend: str = "auto",
        save: bool = False,
        save_txt: bool = False,
        save_json: bool = False,
        save_conf: bool = False,
        save_crop: bool = False,
        data=None,
        project: str | Path = "runs/predict",
        name: str = "exp",
        exist_ok: bool = False,
        device: str | None = None,
        half: bool = False,
        stream: bool = False,
        verbose: bool | None = None,
        end2end: bool | None = None,
        **unknown,
    ):
        """Detections on images, folders, globs, ``.txt`` lists or videos, in-memory images (NumPy arrays
        in OpenCV's BGR layout, PIL images) or lists of these: a list of ``Results`` (one per image/frame).

        ``imgsz`` (default: the size the checkpoint was trained at, else 640) is rounded up to a multiple
        of the model's largest stride (with a warning). In a source
        of several files, one that cannot be read is skipped with a warning. ``agnostic_nms``: one box per
        object whatever its class. ``save`` (drawn images, videos and ``predictions.json``), ``save_txt``
        (YOLO txt labels) and ``save_json`` (COCO results) write into ``project/name`` (``name2``, ... when
        it exists; with ``exist_ok``, into ``project/name`` itself, as the package) as ``yolotr predict`` does
        (:class:`~yolotr.engine.predictor.PredictionWriter`); the folder is logged. ``save_conf``: the txt
        labels get the confidence as a sixth column. ``save_crop``: each detection's region as
        ``crops/<class name>/<stem>.jpg``. ``data``: a dataset whose ids the COCO results take (a COCO-format
        dataset's own ``image_id`` and ``category_id``; see :mod:`yolotr.data.result_ids`; without it, the 80
        COCO names give COCO's 91-class ids).

        ``backend`` (see :mod:`yolotr.engine.fast_backend`): ``auto`` (onnxruntime for a float32 model
        on the CPU, PyTorch otherwise), ``torch`` (a fused ``channels_last`` copy) or ``onnx`` (the
        model exported once to ``$YOLOTR_CACHE/onnx``, keyed by a hash of the weights). The prepared
        backend is kept in this object and reused by later calls until the weights change (training,
        ``fuse()``, ``load_state_dict``, ``.to()``); the first ``onnx`` call for new weights exports
        them (seconds), later calls and later processes reuse the file.

        ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``N``) moves the model there first, as the ``ultralytics``
        package does. ``half``: float16 inference on CUDA (a half copy of the model, PyTorch backend); on
        the CPU it is ignored with a warning. ``stream=True`` returns a generator that yields one
        ``Results`` per image or frame as it is predicted (files are written as they come), so a long
        video or folder is never held in memory.

        ``end2end`` (:mod:`yolotr.engine.head_mode`), for a YOLOv10 / YOLO26 head: ``None`` (default) its own
        NMS-free output (the one-to-one branch's top ``max(max_det, 300)``, class-agnostic with
        ``agnostic_nms``), ``False`` the one-to-many branch with NMS (the ``ultralytics`` package's default),
        ``True`` insists on NMS-free output (an error for a head that needs NMS).
        """
        from yolotr.engine.config import check_count
        from yolotr.engine.predictor import Predictor, check_save_options, run_prediction
        from yolotr.engine.runs import next_run_dir

        check_keywords("predict", unknown, inspect.signature(YOLO.predict).parameters)
        check_save_options(save_txt, save_json, save_conf, data)
        with verbosity(self._verbose(verbose)):
            if device is not None and not self.is_exported:
                self.to(device)
            elif device is not None and str(device).lower() not in ("cpu", "auto"):
                LOGGER.warning("%s: an ONNX file runs on the CPU (onnxruntime); device=%s ignored", self.source, device)
            imgsz = default_imgsz(imgsz, self.model)
            max_det = check_count("max_det", max_det)
            predictor = Predictor(
                self.model, self.model.names, imgsz, rect=rect, conf=conf, iou=iou, max_det=max_det,
                classes=classes, agnostic=agnostic_nms, batch=batch,
                backend=self._backend(backend, half, (end2end, max(max_det, 300), agnostic_nms)),
            )  # fmt: skip
            save_dir = next_run_dir(project, name, exist_ok) if (save or save_txt or save_json or save_crop) else None
            if stream:
                return self._stream(
                    predictor,
                    source,
                    save_dir,
                    save_txt,
                    save_json,
                    save,
                    self._verbose(verbose),
                    save_conf,
                    data,
                    save_crop,
                )
            if save_dir is None:
                return predictor(source)
            summary = run_prediction(
                predictor, source, save_dir, save_txt, save_json, save_images=save, progress=False, keep_results=True,
                save_conf=save_conf, data=data, save_crop=save_crop,
            )  # fmt: skip
            LOGGER.info("results saved to %s", save_dir)
            return summary["results"]

    def _stream(
        self,
        predictor,
        source,
        save_dir,
        save_txt,
        save_json,
        save_images,
        verbose,
        save_conf=False,
        data=None,
        save_crop=False,
    ):
        """A generator of ``Results``, writing files as they come (:class:`PredictionWriter`)."""
        from yolotr.data.result_ids import result_ids
        from yolotr.engine.predictor import PredictionWriter

        ids = result_ids(predictor.names, data) if save_json else None
        writer = PredictionWriter(save_dir, save_txt, save_json, save_images, save_conf, ids, save_crop)
        try:
            for frame, result in predictor.stream(source):
                writer.add(frame, result)
                yield result
        finally:
            writer.close()
            if save_dir is not None:
                with verbosity(verbose):
                    LOGGER.info("results saved to %s", save_dir)

    def _backend(self, backend: str, half: bool, mode: tuple = (None, None, None)):
        """The prepared backend, or with ``half`` one of a float16 copy of the model (CUDA only: ``auto`` and
        ``cuda-graph`` capture it, ``torch`` runs it eagerly, ``onnx`` is refused);
        ``mode``: ``(end2end, max_det, agnostic)`` of an end-to-end head (:func:`end2end_mode`)."""
        if not half:
            return self.prepared_backend(backend, *mode)
        from yolotr.engine.fast_backend import prepare_backend, weights_version

        param = next(self.model.parameters(), None)
        if param is None or param.device.type != "cuda":
            where = "an ONNX file" if param is None else f"the {param.device.type.upper()}"
            LOGGER.warning("half=True needs a CUDA device; predicting in float32 on %s", where)
            return self.prepared_backend(backend, *mode)
        from yolotr.engine.head_mode import end2end_mode, head_state

        with end2end_mode(self.model, *mode):
            key = ("half", backend, head_state(self.model))
        version = weights_version(self.model)
        cached = self._prepared.get(key)
        if cached is not None and cached[0]() is self.model and cached[1] == version:
            return cached[2]

        # a half copy, run as CUDA graphs per input shape (engine/cuda_graph.py), float32 output for NMS
        with end2end_mode(self.model, *mode):  # the half copy takes the head's output mode
            half_model = copy.deepcopy(self.model).half()
        prepared = prepare_backend(half_model, backend, copy_model=False)  # auto: CUDA graphs; torch: eager
        self._prepared[key] = (weakref.ref(self.model), version, prepared)
        return prepared

    def to(self, device) -> YOLO:
        """Move the model to ``device`` (``cpu``, ``cuda``, ``cuda:N`` or a GPU index ``N``)."""
        self._need_pytorch("moving to a device")
        from yolotr.engine.runs import select_device

        self.model.to(select_device(str(device)))
        return self

    def prepared_backend(
        self,
        backend: str = "auto",
        end2end: bool | None = None,
        max_det: int | None = None,
        agnostic: bool | None = None,
    ):
        """The inference backend of the current weights, prepared on first use and then reused.

        Set-up (the fused copy, the ONNX export and its onnxruntime sessions) happens once per set of
        weights and output mode of the head (``end2end``, ``max_det``, ``agnostic``: see
        :func:`~yolotr.engine.head_mode.set_end2end`; the model's own head is left as it was): a change of
        the model's weights (an optimizer step, ``load_state_dict``, ``.to()``, ``fuse()``, a new
        ``self.model``) makes the next call prepare again.
        """
        from yolotr.engine.fast_backend import prepare_backend, weights_version
        from yolotr.engine.head_mode import end2end_mode, head_state

        if self.is_exported and end2end is not None:
            LOGGER.warning("%s: an exported file's output is fixed; end2end=%s ignored", self.source, end2end)
            end2end = None
        with end2end_mode(self.model, end2end, max_det, agnostic):
            key = (backend, head_state(self.model))
            version = weights_version(self.model)
            cached = self._prepared.get(key)
            if cached is not None and cached[0]() is self.model and cached[1] == version:
                return cached[2]
            self._prepared = {
                name: entry
                for name, entry in self._prepared.items()
                if entry[0]() is self.model and entry[1] == version
            }
            prepared = prepare_backend(self.model, "torch" if self.is_exported else backend)  # a copy in this mode
            self._prepared[key] = (weakref.ref(self.model), version, prepared)
        return prepared

    def train(self, *, verbose: bool | None = None, **overrides) -> dict:
        """Train this model (keys of ``cfg/default.yaml`` as keyword arguments); returns the last metrics.

        The trained weights (best fitness) are loaded back into ``self.model`` afterwards.
        ``verbose=False`` hides the INFO messages (dataset summary, epoch lines); the progress bar stays.
        A model loaded from a yolotr checkpoint trains on the checkpoint's dataset and image size unless
        ``data`` / ``imgsz`` are given (the built-in ``shapes`` set otherwise), as the ``ultralytics`` package;
        ``resume=True`` continues the run of the checkpoint it was loaded from (``weights/last.pt``; a model not
        loaded from one: the latest run under ``project``), and ``resume="runs/train/exp"`` that run
        (:meth:`Trainer.resume`). ``cfg="hyp.yaml"`` reads settings from a YAML, under the keywords (the package's
        ``cfg``, ``yolotr train --cfg``).
        A model built from a YAML and not trained yet is built again from it once ``seed`` is set, as the
        ``ultralytics`` package's trainer does, so that ``seed`` and ``deterministic`` cover its initial weights
        (two runs in two processes train alike); a second ``train()`` continues from the trained weights.
        """
        self._need_pytorch("training")
        from yolotr.data.sources import load_dataset_config
        from yolotr.engine.config import load_cfg_file
        from yolotr.engine.trainer import Trainer

        resume = overrides.pop("resume", None)
        with verbosity(self._verbose(verbose)):
            if resume not in (None, False):
                run = self._resume_path(resume, overrides)
                result = self._run_with_callbacks(Trainer.resume(run, **overrides))
                return self._load_best(result)
            cfg_file = overrides.pop("cfg", None)
            file = {k: v for k, v in (load_cfg_file(cfg_file) if cfg_file else {}).items() if v is not None}
            for key in ("data", "imgsz"):  # not given (None too, as in val()): the checkpoint's, if it names one
                if overrides.get(key) is None and key not in file:
                    overrides.pop(key, None)
                    value = getattr(self.model, "train_data" if key == "data" else key, None)
                    if value is not None:
                        overrides[key] = value
                        LOGGER.info("%s: %s, the checkpoint's (give %s=... to train on another)", key, value, key)
            unset = overrides.get("single_cls") is None and file.get("single_cls") is None
            if unset and getattr(self.model, "single_cls", False):
                overrides["single_cls"] = True  # the checkpoint's, as the package keeps it
                LOGGER.info("single_cls: True, the checkpoint's (give single_cls=False to train every class)")
            given = {**file, **{k: v for k, v in overrides.items() if v is not None}}
            nc = 1 if given.get("single_cls") else len(load_dataset_config(given.get("data", "shapes")).names)
            # untrained: the trainer builds it again from its YAML after it seeds (seed covers the weights)
            model = self.model if self.model.nc == nc and not self._untrained else None
            if model is None and isinstance(self.source, dict):
                model = self.source
            if model is None and self._loaded_weights:  # load()'s weights, into the model built for this data
                overrides.setdefault("weights", self._loaded_weights)
            # args.yaml and the log name the model trained (reproducible: yolotr train --cfg args.yaml)
            overrides.setdefault("model", self.source if isinstance(self.source, str) else self._yaml_name())
            result = self._run_with_callbacks(Trainer(overrides, model=model, cfg_file=cfg_file))
        self._untrained = False
        return self._load_best(result)

    def _load_best(self, result: dict) -> dict:
        """Load a finished run's ``best.pt`` into ``self.model``; ``result`` back."""
        best = Path(result["save_dir"]) / "weights" / "best.pt"
        if best.is_file():
            self.model = load_model(best)
        return result

    def _resume_path(self, resume, overrides: dict) -> str | Path:
        """``train(resume=...)``'s run: a run folder or ``last.pt`` path, or for ``True`` the checkpoint this
        model was loaded from, and for a model not loaded from one the latest run under ``project`` (popped from
        ``overrides``: a resume keeps its own), as the package's ``resume=True``."""
        if resume is True:
            if isinstance(self.source, str) and self.source.endswith(".pt"):
                return self.source
            from yolotr.engine.resume_state import latest_checkpoint

            return latest_checkpoint(overrides.pop("project", None))
        if isinstance(resume, str | Path):
            return str(resume)
        raise ConfigError(f"resume must be True, False or a run folder / last.pt path, got {resume!r}")

    def _yaml_name(self):
        """What to write as ``model`` for a model built from a dict: its YAML file name, else the dict."""
        return self.model.yaml.get("yaml_file") or self.model.yaml

    def val(
        self,
        data=None,
        imgsz: int | None = None,
        batch_size: int | None = None,
        conf: float = 0.001,
        iou: float | None = None,
        verbose: bool | None = None,
        batch: int | None = None,
        device: str | None = None,
        **kwargs,
    ):
        """COCO metrics of this model on ``data``'s validation split (a ``ValidationResult``).

        ``data`` and ``imgsz`` default to what a yolotr checkpoint was trained on and at (else: an error, and 640).
        ``batch`` is ``batch_size`` by the package's name (and train's; default 16, both with other values are
        refused); ``device`` moves the model there first, as in :meth:`predict`.

        ``verbose=False`` hides the progress bar and the logged table. Other keywords go to
        :func:`~yolotr.engine.validator.validate`, e.g. ``save_json=True``: the detections as COCO results
        in the dataset's own ids, scored against a COCO-format dataset's JSON (``result.coco_map``).
        """
        self._need_pytorch("validation")
        from yolotr.engine.validator import validate

        check_keywords("val", kwargs, set(inspect.signature(validate).parameters) - {"model"})
        if batch is not None and batch_size is not None and batch != batch_size:
            raise ConfigError(f"val: batch={batch} and batch_size={batch_size}: give one (batch is batch_size)")
        batch_size = next((b for b in (batch, batch_size) if b is not None), 16)
        verbose = self._verbose(verbose)
        with verbosity(verbose):
            if device is not None:
                self.to(device)
            self.metrics = validate(
                self.model, data, imgsz=imgsz, batch_size=batch_size, conf=conf, iou=iou, verbose=verbose, **kwargs
            )  # also model.metrics, as the package keeps it
            return self.metrics

    def export(
        self,
        format: str = "onnx",
        path: str | Path | None = None,
        imgsz: int | None = None,
        verbose: bool | None = None,
        device: str | None = None,
        **kwargs,
    ):
        """Export (fused, eval) and verify against PyTorch; returns an ``ExportResult`` with the path.

        ``imgsz`` defaults to the size the checkpoint was trained at, else 640. ``device`` is checked, as the
        package takes it, and the model is traced on the CPU (``yolotr export --device``).

        ``path`` defaults to the checkpoint's path with the format's suffix (``best.pt`` -> ``best.onnx``
        beside it), or ``<YAML stem>.<format>`` in the working folder for a model built from a YAML.
        """
        self._need_pytorch("export")
        from yolotr.engine.exporter import export_destination, export_model
        from yolotr.engine.runs import select_device

        check_keywords("export", kwargs, set(inspect.signature(export_model).parameters) - {"model", "format", "path"})
        path = export_destination(path, self.source, format)
        with verbosity(self._verbose(verbose)):
            if device is not None and select_device(str(device)).type != "cpu":  # checked, then traced on the CPU
                LOGGER.info("device=%s: exported from the CPU (a float32 file is the same on any device)", device)
            return export_model(self.model, format, path, imgsz=default_imgsz(imgsz, self.model), **kwargs)

    def info(self, imgsz: int = 640, verbose: bool = True, detailed: bool = False) -> dict:
        """Layer table, parameters and GFLOPs at ``imgsz``; ``verbose`` shows the table on the ``yolotr`` logger;
        ``detailed`` adds a row per parameter tensor (name, trained, count, shape, mean, std, dtype), as the
        package's ``info(detailed=True)``.

        Returns a dict with ``layers``, ``params``, ``gradients``, ``gflops``, ``attention_gflops`` (the part in
        attention's matrix products, which the ``ultralytics`` package's count leaves out) and ``table`` (the text).
        """
        self._need_pytorch("info")
        from yolotr.data.imgsz import check_imgsz, largest_stride
        from yolotr.engine.config import check_flag

        imgsz = check_imgsz(imgsz, largest_stride(self.model))
        with verbosity(verbose):
            return self.model.info(imgsz, verbose, detailed=check_flag("info: detailed", detailed))

    def fuse(self) -> YOLO:
        """Fold BatchNorm into convolutions for faster inference."""
        self._need_pytorch("fuse")
        self.model.fuse()
        return self

    def __repr__(self) -> str:
        source = "<dict>" if isinstance(self.source, dict) else repr(self.source)
        return f"YOLO({source}, nc={len(self.names)})"
