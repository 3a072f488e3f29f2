"""Export to ONNX (checked with onnxruntime on the spot) and TorchScript, and running ONNX files.

The exported graph is the fused model in eval mode whose output is the decoded, NMS-free tensor in
the layout its head declares (``export_layout``, :data:`yolotr.ops.boxes.LAYOUTS`): YOLOv5 and YOLOv4
heads ``(B, anchors, 5 + nc)`` as YOLOv5 exports, anchor-free heads ``(B, 4 + nc, anchors)`` as the
``ultralytics`` package exports; an end-to-end head (``end2end``) its ``(B, k, 6)`` detections. With
``nms=True`` the graph ends in NMS (:mod:`yolotr.engine.export_nms`): ``(B, max_det, 6)``. With
``raw=True`` the raw head maps. Class names, strides, the layout (and the NMS settings) travel in
the ONNX metadata (keys ``names``, ``stride``, ``layout``, ``nms``, and ``fit`` for a model fed stretched images).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.engine.config import check_count, check_fraction
from yolotr.engine.export_nms import WithNms
from yolotr.engine.head_mode import (
    STRETCH,
    all_tied,
    default_iou,
    head_of,
    input_fit,
    same_detections,
    set_end2end,
)
from yolotr.errors import ConfigError, YolotrError
from yolotr.ops.boxes import COLUMNS, DETECTIONS, ROWS, as_rows, non_max_suppression

LOGGER = logging.getLogger("yolotr")
FORMATS = ("onnx", "torchscript")


class ExportError(YolotrError):
    """An export whose output differs from the PyTorch model's."""


@dataclass
class ExportResult:
    """Where the file is and how far its output is from PyTorch's on the check input. It is path-like
    (``os.fspath``), so ``YOLO(model.export("onnx"))`` and ``open(result)`` take it as the package's path string."""

    path: Path
    max_abs_diff: float
    detections_match: bool

    def __fspath__(self) -> str:
        return str(self.path)


class _RawHeads(nn.Module):
    """Wraps a model so that its traced output is the tuple of raw head maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        raw = self.model(x)[1]
        if isinstance(raw, dict):  # an end-to-end head: its one-to-one maps, the ones its detections come from
            raw = raw["one2one"]
        return tuple(raw)


class _Columns(nn.Module):
    """Wraps a model in export mode so that its ``(B, A, C)`` rows leave the graph as ``(B, C, A)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).transpose(1, 2)


def default_export_path(source, format: str) -> Path:
    """Where an export of the model loaded from ``source`` goes by default: beside a checkpoint file
    (``runs/train/exp/weights/best.pt`` -> ``best.onnx`` there), else ``<YAML stem>.<format>`` here
    (``model.<format>`` for a model built from a dict)."""
    if isinstance(source, dict):
        return Path(f"model.{format}")
    path = Path(source)
    if path.suffix.lower() in (".pt", ".pth") and path.is_file():
        return path.with_suffix(f".{format}")
    return Path(f"{path.stem}.{format}")


def export_destination(output: str | Path | None, source, format: str) -> Path:
    """The file an export goes to: ``output``, or inside it when it is a folder (one that exists, or any path
    written with a trailing slash) the :func:`default_export_path` name; that path itself without ``output``."""
    default = default_export_path(source, format)
    if output is None:
        return default
    if Path(output).is_dir() or str(output).endswith(("/", os.sep)):
        return Path(output) / default.name
    return Path(output)


def export_model(
    model: nn.Module,
    format: str = "onnx",
    path: str | Path | None = None,
    imgsz: int | tuple[int, int] = 640,
    batch: int = 1,
    dynamic: bool = True,
    dynamic_size: bool = False,
    raw: bool = False,
    opset: int = 17,
    check: bool = True,
    nms: bool = False,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    end2end: bool | None = None,
) -> ExportResult:
    """Export a ``DetectionModel`` (fused copy, eval mode) and verify the file against PyTorch.

    Args:
        format: ``onnx`` or ``torchscript``.
        path: output file (default: ``model.onnx`` / ``model.torchscript`` in the working folder).
        imgsz: example input size ``(h, w)`` or side.
        dynamic: dynamic batch axis (ONNX).
        dynamic_size: dynamic height and width too (ONNX).
        raw: export the raw head maps ``(B, na, H, W, 5 + nc)`` instead of decoded boxes.
        check: run the file on a random input and compare with PyTorch (ONNX: onnxruntime).
        nms: end the graph with NMS (ONNX only): output ``(B, max_det, 6)`` float ``x1, y1, x2, y2,
            score, class`` in input pixels, best first, zero rows after the last detection; ``conf``,
            ``iou`` and ``max_det`` are fixed in the file (the predictor's defaults by default: 0.25, the
            head's IoU, 300). A head that is end-to-end already gets none. ``conf`` and ``iou`` are refused
            without NMS in the graph, ``max_det`` too unless the head is end-to-end (its top-k): a setting
            the file would not hold is an error, not silently dropped.
        end2end: for a YOLOv10 / YOLO26 head (:mod:`yolotr.engine.head_mode`): ``None`` (its own, NMS-free)
            or ``True`` exports its top-``max_det`` detections (``(B, max_det, 6)``, no NMS anywhere);
            ``False`` the one-to-many branch in the anchor-free layout (NMS after, or inside with ``nms``).

    Raises:
        ExportError: when the detections after NMS differ between PyTorch and the exported file.
        ConfigError: a setting out of range, or one the export would not use (see ``nms``).
    """
    if format not in FORMATS:
        raise YolotrError(f"unknown export format {format!r}; choose one of {FORMATS}")
    if nms and (raw or format != "onnx"):
        raise YolotrError("nms=True (--nms) needs format 'onnx' and decoded output (not raw=True / --raw)")
    asked = {k: v for k, v in {"conf": conf, "iou": iou, "max_det": max_det}.items() if v is not None}
    iou = default_iou(model, "predict") if iou is None else iou  # the predictor's default for this head
    if max_det is None:  # an end-to-end head's own top-k (as predict set it), else the predictor's 300
        max_det = getattr(head_of(model), "max_det", None) or 300
    conf = 0.25 if conf is None else conf
    conf, iou, max_det = check_fraction("conf", conf), check_fraction("iou", iou), check_count("max_det", max_det)
    batch, opset = check_count("batch", batch), check_count("opset", opset)
    low, high = onnx_opsets()
    if format == "onnx" and not low <= opset <= high:
        raise ConfigError(f"opset {opset}: this torch exports ONNX opsets {low} to {high} (default 17)")
    path = output_path(path, format)
    imgsz = check_imgsz(imgsz, largest_stride(model))
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    # a copy on the CPU in float32 (the model may sit on CUDA, e.g. after predict there): the example input,
    # the tracing and the check against onnxruntime are the CPU's
    net = copy.deepcopy(model).cpu().float().eval()
    net = net.fuse() if hasattr(net, "fuse") else net
    head = net.model[-1] if hasattr(net, "model") else None
    set_end2end(net, end2end, max_det=max_det, where="export end2end")  # the copy's; the model's stays
    if hasattr(head, "export"):
        head.export = not raw
    if hasattr(head, "dynamic_size"):
        head.dynamic_size = bool(dynamic_size) and format == "onnx"
    nc = len(getattr(net, "names", [])) or getattr(head, "nc", None)
    if raw:
        layout, module = "raw", _RawHeads(net)
    elif getattr(head, "end2end", False):  # the head's own output is detections: no NMS to add
        if nms:
            LOGGER.info("the model's head is end-to-end (NMS-free): exporting its detections, no NMS added")
        layout, module, nms = DETECTIONS, net, False
    elif nms:
        layout, module = DETECTIONS, WithNms(net, ROWS, nc, conf, iou, max_det)
    else:
        layout = getattr(head, "export_layout", ROWS)
        module = _Columns(net) if layout == COLUMNS else net
    _refuse_unused(asked, nms, layout == DETECTIONS and not nms and getattr(head, "end2end", False))
    module = module.eval()
    settings = {"conf": conf, "iou": iou, "max_det": max_det} if nms else None
    example = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))  # a check that repeats
    partial = path.with_name(f".{path.name}.partial")  # the file appears whole or not at all
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if format == "onnx":
            _export_onnx(module, example, partial, dynamic, dynamic_size, layout, opset, net, settings)
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings (shape checks traced as constants), jit's deprecation
                traced = torch.jit.trace(module, example, strict=False)
            meta = {**file_metadata(net, example, layout, settings), "batch": str(batch)}  # traced: a fixed shape
            traced.save(str(partial), _extra_files={"config.txt": json.dumps(config_values(meta))})
        # checked before it takes the name: a file that disagrees with PyTorch is never left as the export
        result = _check(module, partial, format, example, layout, nc, path) if check else None
        partial.replace(path)
    except OSError as e:
        raise YolotrError(f"{path}: cannot write the export ({e.strerror or e})") from None
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise YolotrError(f"{format} export (opset {opset}) failed: {first}") from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename, or never made
            partial.unlink(missing_ok=True)
    return result if result is not None else ExportResult(path, float("nan"), True)


def _refuse_unused(asked: dict, nms: bool, top_k: bool) -> None:
    """A ``conf`` / ``iou`` / ``max_det`` the user gave that the exported file would not hold is an error.

    With NMS in the graph all three are fixed in it; an end-to-end head's file holds its top ``max_det``
    with every score (filter by score after); any other file holds the model's raw candidates.
    """
    if nms:
        return
    unused = [k for k in asked if not (top_k and k == "max_det")]
    if unused:
        why = (
            "the head is end-to-end: the file holds its top max_det detections with every score (filter by score "
            "after) and no NMS; leave it out"
            if top_k
            else "without nms=True (--nms) the file holds every candidate and NMS runs after it; leave it out or "
            "export with nms=True"
        )
        raise ConfigError(f"export: {', '.join(unused)} given but not used: {why}")


def onnx_opsets() -> tuple[int, int]:
    """The lowest and highest ONNX opset this torch's exporter writes (7 and 20 where it does not say)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MIN_OPSET), int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 7, 20


def output_path(path: str | Path | None, format: str) -> Path:
    """Where an export goes: ``path`` (default ``model.<format>``), which must end in the format's suffix
    (``.onnx``, ``.torchscript``): any other suffix (a ``.pt`` checkpoint's, the model being exported) would
    be overwritten by a file of another kind."""
    path = Path(path or f"model.{format}")
    if path.suffix.lower() != f".{format}":
        raise YolotrError(f"{path}: an {format} export is written to a .{format} file; name one ending in .{format}")
    return path


def _export_onnx(module, example, path, dynamic, dynamic_size, layout, opset, net, settings) -> None:
    raw = layout == "raw"
    axes = {}
    if dynamic or dynamic_size:
        axes["images"] = {0: "batch"} if dynamic else {}
        if dynamic_size:
            axes["images"].update({2: "height", 3: "width"})
    outputs = [f"raw{i}" for i in range(net.model[-1].nl)] if raw else ["output"]
    for i, name in enumerate(outputs):
        axes[name] = {0: "batch"} if dynamic else {}
        if dynamic_size and layout in (ROWS, COLUMNS):
            axes[name][1 if layout == ROWS else 2] = "anchors"
        if dynamic_size and raw:  # (B, C, H, W) or YOLOv5's (B, na, H, W, no): a level's map follows the input
            axes[name].update({2: f"height{i}", 3: f"width{i}"})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), opset_version=opset, input_names=["images"], output_names=outputs,
            dynamic_axes=axes or None, dynamo=False,
        )  # fmt: skip
    import onnx

    proto = onnx.load(str(path))
    with torch.no_grad():
        out = module(example)
    shapes = [list(t.shape) for t in (out if isinstance(out, tuple | list) else (out,))]
    _declare_fixed_output_dims(proto, axes, shapes)
    for key, value in file_metadata(net, example, layout, settings, dynamic_size).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _declare_fixed_output_dims(proto, axes: dict, shapes: list[list[int]]) -> None:
    """Write the outputs' fixed sizes into the graph: the tracer names them ``Concatoutput_dim_1`` (and the batch
    of a ``--static`` file too), which looked dynamic to tools that read the class or anchor count from the
    graph's declared shape. Axes exported as dynamic keep their names."""
    for output, shape in zip(proto.graph.output, shapes):
        dynamic = axes.get(output.name, {})
        for i, dim in enumerate(output.type.tensor_type.shape.dim):
            if i not in dynamic and i < len(shape):
                dim.dim_value = int(shape[i])


def file_metadata(
    net: nn.Module, example: torch.Tensor, layout: str, settings: dict | None, dynamic_size: bool = False
) -> dict[str, str]:
    """What an exported file says about itself (ONNX metadata props; a TorchScript file's ``config.txt``):
    ``names``, ``stride``, ``imgsz`` (JSON), ``layout``, ``nms`` (its settings, when in the graph) and ``fit``.

    So that the ``ultralytics`` package predicts with an anchor-free model's file as with its own, ``stride``
    is the largest stride as one whole number (its reader takes ``int(stride)``), and ``task``, ``end2end`` and
    ``args`` (``dynamic``: height and width; a Python literal, which its reader parses) are its keys."""
    meta = {"names": json.dumps(list(getattr(net, "names", []))), "stride": str(largest_stride(net))}
    meta.update(task="detect", end2end=str(layout == DETECTIONS), args=repr({"dynamic": bool(dynamic_size)}))
    meta["imgsz"] = json.dumps(list(example.shape[2:]))  # the size to predict at when the input's is dynamic
    if layout != "raw":
        meta["layout"] = layout
    if settings is not None:
        meta["nms"] = json.dumps(settings)
    if input_fit(net) == STRETCH:  # RT-DETR: the reader resizes images to the input without keeping the aspect
        meta["fit"] = STRETCH
    return meta


def config_values(meta: dict[str, str]) -> dict:
    """:func:`file_metadata` (strings, as ONNX metadata props must be) as a TorchScript ``config.txt`` holds them:
    ``names``, ``imgsz`` and ``nms`` as JSON lists and objects, ``stride`` and ``batch`` as numbers, as YOLOv5's
    and the package's exports write them (YOLOv5's reader takes ``names`` as it is: a JSON string in the JSON
    labelled every box with one character of it)."""
    values: dict = dict(meta)
    for key in ("names", "imgsz", "nms"):
        if key in values:
            values[key] = json.loads(values[key])
    for key in ("stride", "batch"):
        if key in values:
            values[key] = int(values[key])
    return values


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


def _check(
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
        as_sets = _every_row_has_its_like(got, expected) and _every_row_has_its_like(expected, got)
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


def _every_row_has_its_like(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether each row of ``(B, k, 6)`` ``a`` (score 0 or more) has a row of ``b`` of its class, box (0.5 px) and
    score (1e-3), in any order."""
    for rows, other in zip(a, b):
        rows = rows[rows[:, 4] >= 0]
        near = (
            (np.abs(rows[:, None, :4] - other[None, :, :4]).max(-1) <= 0.5)
            & (np.abs(rows[:, None, 4] - other[None, :, 4]) <= 1e-3)
            & (rows[:, None, 5] == other[None, :, 5])
        )
        if not near.any(1).all():
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
