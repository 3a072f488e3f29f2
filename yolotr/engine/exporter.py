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
from pathlib import Path

import torch
from torch import nn

from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.engine.config import check_count, check_fraction
from yolotr.engine.export_check import ExportError, ExportResult, check_file
from yolotr.engine.export_nms import WithNms
from yolotr.engine.head_mode import (
    STRETCH,
    default_iou,
    head_of,
    input_fit,
    set_end2end,
)
from yolotr.errors import ConfigError, YolotrError
from yolotr.ops.boxes import COLUMNS, DETECTIONS, ROWS

__all__ = [  # ExportError and ExportResult live in export_check, with the check that makes them
    "FORMATS",
    "ExportError",
    "ExportResult",
    "config_values",
    "default_export_path",
    "export_destination",
    "export_model",
    "file_metadata",
    "onnx_opsets",
    "output_path",
]

LOGGER = logging.getLogger("yolotr")
FORMATS = ("onnx", "torchscript")


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


# formats of the ultralytics package that their own tools make from an ONNX file: what the refusal says instead
FROM_ONNX = {
    "engine": " (TensorRT: export onnx, then `trtexec --onnx=model.onnx --saveEngine=model.engine`, with --fp16 "
    "for half precision)",
    "openvino": " (OpenVINO reads the ONNX file itself: `openvino.convert_model('model.onnx')`, or `ovc model.onnx`)",
    "ncnn": " (ncnn converts the ONNX file: `pnnx model.onnx` or `onnx2ncnn`)",
    "mnn": " (MNN converts the ONNX file: `MNNConvert -f ONNX --modelFile model.onnx --MNNModel model.mnn`)",
    **dict.fromkeys(
        ("tflite", "saved_model", "pb", "tfjs", "edgetpu"),
        " (TensorFlow formats: convert the ONNX file, e.g. with onnx2tf)",
    ),
    "coreml": " (Core ML: coremltools converts the TorchScript export)",
    "paddle": " (Paddle: x2paddle converts the ONNX file)",
}


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
        hint = FROM_ONNX.get(str(format).lower(), "")
        raise YolotrError(f"unknown export format {format!r}; choose one of {FORMATS}{hint}")
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
        result = check_file(module, partial, format, example, layout, nc, path) if check else None
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
