"""Errors a user can fix. Each message names the file, line or key and says what to do."""


class YolotrError(Exception):
    """Base class of every error yolotr raises on purpose."""


class ConfigError(YolotrError):
    """A model or training configuration is wrong (unknown module, bad argument, bad key)."""


class DataError(YolotrError):
    """A dataset cannot be used (no usable image, unreadable dataset YAML, ...)."""


class TrainingError(YolotrError):
    """A training run cannot go on (non-finite values that come back after every roll back)."""


class CheckpointError(YolotrError):
    """A checkpoint cannot be loaded (truncated, foreign class, keys or shapes that do not fit)."""


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``"3"``, ``"-0.5"``, ``"1e-3"``): a value given in quotes, or a
    negative number where an option was looked for."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def did_you_mean(word: str, candidates, prefix: str = "") -> str:
    """``"; did you mean X?"`` (or ``X or Y``) naming the candidates nearest ``word``, else ``""``.

    Nearness is difflib's ratio; ties keep the order of ``candidates`` (``lr`` -> ``lr0`` before ``lrf``
    when the list is in ``default.yaml``'s order). A candidate that ``word`` starts (or that starts
    ``word``) counts when nothing is near enough.
    """
    import difflib

    candidates = list(dict.fromkeys(candidates))
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), -i, c) for i, c in enumerate(candidates)]
    close = [c for score, _, c in sorted(scored, reverse=True) if score >= 0.6][:3]
    if not close:
        close = sorted((c for c in candidates if c.startswith(word) or word.startswith(c)), key=len)[:3]
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


# settings of the ultralytics package spelled otherwise here: what their unknown-setting error says instead
FOREIGN_SETTINGS = {
    "nms": "; the ultralytics package's nms=False (an end-to-end head's own output) is end2end=True here, "
    "nms=True is end2end=False",
    "augment": "; yolotr has no test-time augmentation (the package's augment=True)",
    "visualize": "; yolotr does not save feature maps; `yolotr explain` draws attention maps and Grad-CAM",
    "vid_stride": "; yolotr reads every frame of a video (no frame stride)",
    "show": "; yolotr opens no window: save=True writes the drawn images, Results.plot() returns one (RGB)",
    "line_width": "; give it to Results.plot(line_width=...) (as conf= and labels=)",
    "show_labels": "; Results.plot(labels=False) draws boxes without labels",
    "show_conf": "; Results.plot(conf=False) draws labels without scores",
    "simplify": "; the ONNX file is written as torch.onnx exports it and checked with onnxruntime (no simplifier)",
    "val.plots": "; val draws its PR curve and confusion matrix only when given save_dir=...",
    "save": "; a training run always writes weights/last.pt and best.pt (save_period=N keeps more)",
    "pretrained": "; weights=PATH (or YOLO(...).load(PATH)) transfers a checkpoint's weights; a YAML model starts "
    "untrained",
    "export.half": "; exported files are float32 (predict(half=True) runs float16 on CUDA)",
    "val.half": "; amp=True validates under autocast (float16 on CUDA)",
    "train.half": "; training and its validations run in amp's precision (amp: auto, fp16, bf16 or false)",
    "tracker": "; yolotr does not track objects (no tracker, persist or boxes.id)",
    "persist": "; yolotr does not track objects (no tracker, persist or boxes.id)",
    **dict.fromkeys(  # "val.name": a hint for one method's keyword (another method may take the word)
        ("val.name", "val.project"),
        "; val writes its plots and COCO JSON into save_dir=... (project and name are train's and predict's)",
    ),
    "val.classes": "; val scores every class of the set (train's classes=[...] keeps some in training and in its "
    "validations)",
    "time": "; time_limit=MINUTES (the package's time is in hours)",
    "cache": "; cache_ram=true keeps every decoded, resized training image in memory (the package's cache=ram; "
    "there is no disk cache)",
    "rect": "; training batches are square mosaics; validation and prediction are rectangular already",
    **dict.fromkeys(
        ("erasing", "auto_augment", "dropout", "crop_fraction"),
        "; the package uses it in classification training only: a detector trains without it there too (remove "
        "the key)",
    ),
    "iou_t": "; YOLOv5's iou_t is read by nothing in YOLOv5 either (remove the key)",
    "task": "; yolotr trains detectors only (the package's task: detect; remove the key)",
    "mode": "; the command or method says it (train, val, predict, export)",
    "cls_remap": "; a checkpoint's class rows are not matched by name: weights=PATH transfers the tensors that fit "
    "(other classes give the head new class rows)",
    "verbose": "; give verbose= to the YOLO method, or -v to the CLI",
    "resume": "; YOLO.train(resume=True) or yolotr train --resume RUN continues a run",
    "profile": "; yolotr times no export formats while training (bench/latency.py times a model)",
    "quantize": "; predict(half=True) runs float16 on CUDA; exports are float32",
    **dict.fromkeys(("distill_model", "dis"), "; yolotr has no knowledge distillation"),
    **dict.fromkeys(
        ("overlap_mask", "mask_ratio", "pose", "kobj", "rle", "angle", "dlog", "dgrad", "dlam"),
        "; a setting of the package's other tasks (segment, pose, obb, depth): yolotr detects boxes",
    ),
    **dict.fromkeys(
        ("train.source", "train.agnostic_nms", "train.save_txt", "train.save_conf", "train.save_crop"),
        "; a prediction setting: YOLO.predict(...) and yolotr predict take it",
    ),
    **dict.fromkeys(
        ("train.format", "train.dynamic", "train.opset"),
        "; an export setting: YOLO.export(...) and yolotr export take it",
    ),
    "train.cfg": "; cfg names the settings file itself (--cfg FILE, train(cfg=FILE)), not a key inside it",
    "train.split": "; training validates on the dataset's val split; YOLO.val(split=...) and yolotr val --split score "
    "another",
    "train.save_json": "; YOLO.val(save_json=True) and yolotr val --save-json write the COCO results JSON",
    "embed": "; yolotr returns no embeddings: a forward hook on model.model[i] gives any layer's output",
    **dict.fromkeys(("retina_masks", "show_boxes"), "; a segmentation setting of the package (yolotr detects boxes)"),
    "stream_buffer": "; yolotr reads files, not live streams: every frame of a video is read in turn",
    "save_frames": "; save=True writes a video's drawn frames as a video; Results.plot() returns one frame (RGB)",
    "dnn": "; OpenCV DNN runs an exported ONNX file: yolotr export, then cv2.dnn.readNetFromONNX (docs/predict.md)",
    "compile": "; prediction runs the fused model, then onnxruntime on the CPU; backend='cuda-graph' captures "
    "CUDA graphs on a GPU",
    **dict.fromkeys(
        ("export.data", "export.fraction"),
        "; calibration data of the package's int8 exports (exports here are float32)",
    ),
    "int8": "; exports are float32: onnxruntime.quantization quantizes the ONNX file",
    **dict.fromkeys(
        ("workspace", "optimize", "keras"), "; a TensorRT / TorchScript-mobile / Keras setting of the package's exports"
    ),
}


def setting_hint(word: str, candidates, where: str = "") -> str:
    """The hint for an unknown setting ``word`` (of the method ``where``: ``val``, ``predict``, ...): how yolotr
    spells a setting of the ``ultralytics`` package (:data:`FOREIGN_SETTINGS`), else :func:`did_you_mean`."""
    return FOREIGN_SETTINGS.get(f"{where}.{word}") or FOREIGN_SETTINGS.get(word) or did_you_mean(word, candidates)


def check_keywords(where: str, given, known) -> None:
    """Refuse keywords of ``given`` not in ``known`` with a :class:`ConfigError` naming the first one and the
    nearest settings (:func:`setting_hint`), where Python would raise a bare ``TypeError``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r}{setting_hint(unknown[0], sorted(known), where)}")
