"""Which output an end-to-end (NMS-free) head gives: the one-to-one top-k or the one-to-many rows for NMS.

YOLOv10's and YOLO26's heads (:class:`~yolotr.nn.head_e2e.E2EDetect`) carry two branches. The setting
``end2end`` chooses, for predict, val and export alike:

- ``None`` (default): what the head says (a head built end-to-end stays end-to-end: top-k, no NMS);
- ``True``: the one-to-one branch, no NMS (a head without a one-to-one branch: :class:`ConfigError`);
- ``False``: the one-to-many branch decoded like YOLOv8's head, then NMS (a head that needs NMS anyway:
  unchanged).

The ``ultralytics`` package (8.4.190) spells this ``nms``: ``nms=False`` is our ``end2end=True``; its default
(``nms`` unset) runs the one-to-many branch with NMS, i.e. our ``end2end=False``. The text forms of the
command line (``on``/``off``, ``true``/``false``, ``auto``) read through :func:`parse_end2end`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from yolotr.errors import ConfigError
from yolotr.ops.boxes import ROWS

_TEXT = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}


def parse_end2end(value) -> bool | None:
    """``None``/``auto`` -> ``None``; a bool or ``on/off/true/false/yes/no/1/0`` -> that bool; else ConfigError."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "none", "null", ""):
        return None
    if text in _TEXT:
        return _TEXT[text]
    raise ConfigError(f"end2end: expected true, false or auto (the head's own), got {value!r}")


def head_of(model: nn.Module) -> nn.Module | None:
    """The detection head (last layer) of a ``DetectionModel``, or None for anything else (an ONNX file)."""
    layers = getattr(model, "model", None)
    return layers[-1] if isinstance(layers, nn.Sequential | nn.ModuleList) and len(layers) else None


LETTERBOX, STRETCH = "letterbox", "stretch"  # how images are fitted to the model's input (input_fit)


def input_fit(model: nn.Module) -> str:
    """How ``model`` wants images fitted to its input in training, validation and prediction: ``letterbox``
    (resized keeping the aspect ratio, then padded: the YOLOs) or ``stretch`` (resized to the ``imgsz`` square
    without keeping it: RT-DETR as the package trains, validates and predicts it). The head declares it
    (``input_fit``); an :class:`~yolotr.engine.onnx_model.OnnxModel` carries it from the file's metadata."""
    head = head_of(model)
    fit = getattr(head if head is not None else model, "input_fit", LETTERBOX)
    return fit if fit in (LETTERBOX, STRETCH) else LETTERBOX


# The NMS IoU threshold by default, (predict, val): YOLOv5's detect.py and val.py for its heads (Detect: YOLOv5,
# YOLOv4), the ultralytics package's 0.7 for both on its anchor-free and NMS-free heads. Heads declare theirs.
YOLOV5_IOU, PACKAGE_IOU = (0.45, 0.6), (0.7, 0.7)


def default_iou(model: nn.Module, task: str) -> float:
    """The NMS IoU threshold ``model`` predicts (``task`` ``predict``) or validates (``val``) at when none is
    given: its head's ``nms_iou`` (:data:`YOLOV5_IOU` for YOLOv5 / YOLOv4, :data:`PACKAGE_IOU` for the
    ``ultralytics`` package's families), the reference each family's weights are scored with. An ONNX file
    (no head) says by its layout: one row per anchor is ours of a YOLOv5 head, anything else the package's."""
    if task not in ("predict", "val"):
        raise ValueError(f"default_iou: task must be predict or val, got {task!r}")
    head = head_of(model)
    pair = getattr(head, "nms_iou", None) if head is not None else None
    if pair is None:
        pair = YOLOV5_IOU if head is None and getattr(model, "layout", None) == ROWS else PACKAGE_IOU
    return float(pair[0 if task == "predict" else 1])


def head_state(model: nn.Module) -> tuple:
    """What decides the head's eval output (``end2end``, ``max_det``, ``agnostic``): part of a prepared
    backend's identity, so a backend prepared in one mode is not reused for the other."""
    head = head_of(model)
    return tuple(getattr(head, k, None) for k in ("end2end", "max_det", "agnostic"))


def set_end2end(
    model: nn.Module, end2end=None, max_det: int | None = None, agnostic: bool | None = None, where: str = "end2end"
) -> bool:
    """Put ``model``'s head in the mode ``end2end`` asks for (see the module); returns whether its output is
    now end-to-end. ``max_det`` and ``agnostic`` set the top-k of an end-to-end head (ignored otherwise).

    Raises:
        ConfigError: ``end2end`` is not a bool/``auto``, or True for a head without a one-to-one branch.
    """
    end2end = parse_end2end(end2end)
    head = head_of(model)
    if not hasattr(head, "set_end2end"):
        if end2end:
            name = type(head).__name__ if head is not None else type(model).__name__
            raise ConfigError(
                f"{where}=True: the model's head ({name}) has no one-to-one branch and needs NMS; "
                "only YOLOv10 / YOLO26 heads (end2end: True in the YAML) run end to end"
            )
        return bool(getattr(head, "end2end", False))
    head.set_end2end(head.end2end if end2end is None else end2end, max_det=max_det, agnostic=agnostic)
    return bool(head.end2end)


@contextlib.contextmanager
def end2end_mode(
    model: nn.Module, end2end=None, max_det: int | None = None, agnostic: bool | None = None, where: str = "end2end"
) -> Iterator[bool]:
    """:func:`set_end2end` for the block, the head's previous mode restored after. Yields whether the
    output is end-to-end."""
    head = head_of(model)
    saved = head_state(model) if hasattr(head, "set_end2end") else None
    try:
        yield set_end2end(model, end2end, max_det, agnostic, where)
    finally:
        if saved is not None:
            head.set_end2end(saved[0], max_det=saved[1], agnostic=saved[2])


def same_detections(
    a: torch.Tensor, b: torch.Tensor, box_tol: float, score_tol: float = 1e-3, ties_exempt: bool = True
) -> bool:
    """Whether two ``(B, k, 6)`` top-k outputs (``x1, y1, x2, y2, score, class``, best first) hold the same
    detections as sets: each row of one has a row of the other of the same class within ``box_tol`` pixels
    and ``score_tol`` in score. Rows whose score is within ``score_tol`` of the lowest kept score are exempt
    (near-tied candidates at the cut may be in one output and not the other), and so is the order of rows
    (near-tied scores sort either way, e.g. onnxruntime against PyTorch). Filler rows (score -1, past an
    input's anchor count) are not detections: the cut is the lowest score of the rest. ``ties_exempt=False``
    compares every row that is not filler (rows all tied at the cut would otherwise all be exempt)."""
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 6:
        return False
    a, b = a.float(), b.float()
    for x, y in ((a, b), (b, a)):
        for rows, other in zip(x, y):
            cut = torch.minimum(_lowest_kept(rows), _lowest_kept(other)) + score_tol if ties_exempt else -0.5
            rows = rows[rows[:, 4] > cut]
            if not len(rows):
                continue
            near = (
                ((rows[:, None, :4] - other[None, :, :4]).abs().amax(-1) <= box_tol)
                & ((rows[:, None, 4] - other[None, :, 4]).abs() <= score_tol)
                & (rows[:, None, 5] == other[None, :, 5])
            )
            if not bool(near.any(1).all()):
                return False
    return True


def all_tied(rows: np.ndarray | torch.Tensor, score_tol: float = 1e-3) -> bool:
    """Whether every non-filler row of ``(B, k, 6)`` top-k outputs scores within ``score_tol`` of its image's
    lowest: :func:`same_detections` exempts such rows as near ties at the cut, so it compared none of them."""
    scores = torch.as_tensor(rows)[..., 4].float()
    kept = scores >= 0
    if not bool(kept.any()):
        return False
    low = torch.where(kept, scores, torch.inf).amin(-1, keepdim=True)
    return bool(((scores - low <= score_tol) | ~kept).all())


def _lowest_kept(rows: torch.Tensor) -> torch.Tensor:
    """The lowest score of ``(k, 6)`` top-k rows that are not filler (score -1), or -1 when all are."""
    scores = rows[:, 4]
    kept = scores[scores >= 0]
    return kept.min() if len(kept) else scores.new_tensor(-1.0)
