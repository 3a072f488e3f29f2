"""The check of an exported file: run it (onnxruntime, or TorchScript) on the example input beside the PyTorch
module it came from, and compare the detections; :class:`ExportError` when they differ.

Random input makes near-tied scores, so the comparison allows what near ties change between runtimes: the order of
top-k rows, which of two near-equal candidates NMS keeps, and (an untrained model's) which of its equally scored
rows a top-k keeps; a broken graph, whose boxes or scores no candidate has, is refused.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.engine.export_nms import WithNms
from yolotr.engine.head_mode import all_tied, head_of, same_detections
from yolotr.errors import YolotrError
from yolotr.ops.boxes import COLUMNS, DETECTIONS, as_rows, non_max_suppression

LOGGER = logging.getLogger("yolotr")


class ExportError(YolotrError):
    """An export whose output differs from the PyTorch model's."""


@dataclass
class ExportResult:
    """Where the file is and how far its output is from PyTorch's on the check input. It is path-like
    (``os.fspath``) and ``str()`` gives the path, so ``YOLO(model.export("onnx"))``, ``YOLO(str(result))`` and
    ``open(result)`` take it as the package's path string."""

    path: Path
    max_abs_diff: float
    detections_match: bool

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        """The path, as the package's ``export()`` returns it (``f"{model.export()}"``, ``str(...)``)."""
        return str(self.path)


def _run_file(path: Path, format: str, x: torch.Tensor) -> list[np.ndarray]:
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": x.numpy()})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, once per load
        out = torch.jit.load(str(path))(x)
    return [t.numpy() for t in (out if isinstance(out, tuple | list) else [out])]


def _detections(output: np.ndarray, layout: str, nc: int | None) -> list[torch.Tensor]:
    """Per image ``(n, 6)`` detections of a decoded output: above 0.25 after NMS at IoU 0.45, or every row of
    ``detections`` (top-k rows, all compared)."""
    if layout == DETECTIONS:  # every row but filler (score -1), in a fixed order (equal scores sort either way):
        kept = (d[d[:, 4] >= 0] for d in output)  # above 0.25 only, a detector that scores noise low kept none
        return [torch.from_numpy(d[np.lexsort(d[:, [3, 2, 1, 0, 5, 4]].T)][::-1].copy()) for d in kept]
    return non_max_suppression(as_rows(torch.from_numpy(output), layout), 0.25, 0.45, nc=nc)


def check_file(
    module, written: Path, format: str, example: torch.Tensor, layout: str, nc: int | None, path: Path
) -> ExportResult:
    """Run the ``written`` file (to be renamed ``path``) on ``example`` beside PyTorch: the same detections
    after NMS, or (a file of candidates, where near-tied random scores change what NMS keeps) the same
    candidates (:func:`_same_candidates`); top-k rows compared as sets."""
    with torch.no_grad():
        expected = module(example)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple | list) else [expected])]
    got = _run_file(written, format, example)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    match, raw = True, layout == "raw"
    if not raw:
        a, b = _detections(expected[0], layout, nc), _detections(got[0], layout, nc)
        match = all(x.shape == y.shape and (x.shape[0] == 0 or torch.allclose(x, y, atol=0.5)) for x, y in zip(a, b))
        if not match and layout == DETECTIONS:  # top-k rows (an end-to-end head, NMS in the graph):
            # near-tied scores swap rows or cross the cut, so compare as sets (engine/head_mode.py)
            match = same_detections(torch.from_numpy(got[0]), torch.from_numpy(expected[0]), box_tol=0.5)
            if not isinstance(module, WithNms):
                match = _end_to_end_rows_match(match, module, example, got[0], expected[0])
            if not match and isinstance(module, WithNms):  # NMS on near-tied scores kept other boxes
                match = _rows_are_candidates(module, example, got[0])
        elif not match:  # candidates: NMS on near-tied scores of a random input may keep other boxes
            match = _same_candidates(expected[0], got[0], layout)
    if not match:
        raise ExportError(f"{path}: detections of the exported model differ from PyTorch's (max abs diff {diff:.3g})")
    if not raw and layout == DETECTIONS:  # the rows are a top-k: near-tied scores sort either way
        LOGGER.info("exported %s: detections match PyTorch's as sets (row by row up to %.2e)", path, diff)
    else:
        note = "" if raw else ", detections match"
        LOGGER.info("exported %s: max abs difference to PyTorch %.2e%s", path, diff, note)
    return ExportResult(path, diff, match)


def _rows_are_candidates(module: WithNms, example: torch.Tensor, got: np.ndarray) -> bool:
    """Whether every row a file with NMS inside kept (``(B, max_det, 6)``, score above 0) is one of PyTorch's
    candidates: a box of that class and score (to 1 px + 1 % and 0.01). On the check's random input the
    scores are near ties, and which of them NMS keeps differs between runtimes; a broken graph gives boxes or
    scores that no candidate has."""
    with torch.no_grad():
        boxes, _, best, cls = module.candidates(example)
    for b, kept in enumerate(torch.from_numpy(got)):
        for row in kept[kept[:, 4] > 0]:
            near = (boxes[b] - row[:4]).abs() <= 1.0 + 0.01 * row[:4].abs()
            same = near.all(-1) & (cls[b] == row[5].long()) & ((best[b] - row[4]).abs() <= 1e-2)
            if not bool(same.any()):
                return False
    return True


def _end_to_end_rows_match(
    as_sets: bool, module: nn.Module, example: torch.Tensor, got: np.ndarray, expected: np.ndarray
) -> bool:
    """An end-to-end head's rows against PyTorch's, given whether :func:`same_detections` matched them as sets.

    Rows all tied at the cut (an untrained head's scores on the check's random input) were exempt there, so
    nothing was compared: they are checked against the one-to-one branch's candidates (YOLOv10, YOLO26), or
    each must have its like in the other output (RT-DETR). An untrained RT-DETR scores its queries within 0.01
    of each other, and which queries its encoder keeps then differs between runtimes: when the two outputs
    hold the same scores and classes, the file is accepted with a warning (nothing more can be compared)."""
    e2e = hasattr(head_of(module), "decode_xyxy")
    if as_sets and all_tied(got):
        if e2e:
            return _rows_are_top_candidates(module, example, got)
        as_sets = same_detections(torch.from_numpy(got), torch.from_numpy(expected), 0.5, ties_exempt=False)
    if as_sets or e2e or not _scores_alike(got, expected):
        return as_sets
    LOGGER.warning(
        "export check: the model scores every row alike (untrained?), and the two runtimes kept different "
        "queries of equal score; the rows' scores and classes match, their boxes could not be compared"
    )
    return True


def _scores_alike(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(B, k, 6)`` outputs hold scores within 0.01 of each other (an untrained model's) and the same
    scores (1e-3) and classes once sorted."""
    for x, y in zip(a, b):
        x, y = x[x[:, 4] >= 0], y[y[:, 4] >= 0]
        if len(x) != len(y) or not len(x) or np.ptp(x[:, 4]) >= 0.01:
            return False
        if not np.allclose(np.sort(x[:, 4]), np.sort(y[:, 4]), rtol=0, atol=1e-3):
            return False
        if not np.array_equal(np.sort(x[:, 5]), np.sort(y[:, 5])):
            return False
    return True


def _rows_are_top_candidates(module: nn.Module, example: torch.Tensor, got: np.ndarray) -> bool:
    """Whether every row of an end-to-end head's file (``(B, k, 6)``, score 0 or more) is one of the candidates of
    PyTorch's one-to-one branch (a box of that class and score, to 1 px + 1 % and 0.01) and among its top k.

    For outputs whose scores are all tied (an untrained head's saturated 1.0, on the check's random input), where
    which k of the tied candidates a top-k keeps differs between runtimes; a head without a one-to-one branch to
    decode (RT-DETR's queries) is not checked this way (False)."""
    head = head_of(module)
    if not hasattr(head, "decode_xyxy"):
        return False
    seen: list[list[torch.Tensor]] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]) or None)  # keep its output
    export = head.export
    try:
        with torch.no_grad():
            module(example)
            head.export = False  # the branch maps besides the detections
            candidates = head.decode_xyxy(head(seen[0])[1]["one2one"])  # (B, anchors, 4 + nc)
    finally:
        hook.remove()
        head.export = export
    boxes, scores = candidates[..., :4], candidates[..., 4:]
    for b, rows in enumerate(torch.from_numpy(got)):
        rows = rows[rows[:, 4] >= 0]
        kth = scores[b].amax(-1).topk(min(len(rows), scores.shape[1])).values[-1] if len(rows) else 0.0
        for row in rows:
            near = ((boxes[b] - row[:4]).abs() <= 1.0 + 0.01 * row[:4].abs()).all(-1)
            same = near & ((scores[b, :, int(row[5])] - row[4]).abs() <= 1e-2) & (row[4] >= kth - 1e-2)
            if not bool(same.any()):
                return False
    return True


def _same_candidates(expected: np.ndarray, got: np.ndarray, layout: str) -> bool:
    """Whether two candidate outputs (``rows`` ``(B, N, 4 + ...)``, ``columns`` ``(B, 4 + ..., N)``) agree:
    boxes to 1 px + 1% and scores to 0.01. On the check's random input the activations are extreme and a
    distribution head's boxes move by up to a pixel between runtimes (yolov10n at 320: 0.99 px of 960,
    scores 0.005), where a broken graph is off by a stride or more."""
    if expected.shape != got.shape:
        return False
    if layout == COLUMNS:
        expected, got = expected.transpose(0, 2, 1), got.transpose(0, 2, 1)
    boxes = np.allclose(got[..., :4], expected[..., :4], rtol=1e-2, atol=1.0)
    return boxes and np.allclose(got[..., 4:], expected[..., 4:], rtol=0, atol=1e-2)
