"""An exported ONNX detector run with onnxruntime (:class:`OnnxModel`), and what reading one needs: its class
names and output layout from the metadata (ours, or the ``ultralytics`` package's), its fixed input size."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch
from torch import nn

from yolotr.engine.head_mode import LETTERBOX, STRETCH
from yolotr.errors import CheckpointError, YolotrError
from yolotr.ops.boxes import COLUMNS, DETECTIONS, LAYOUTS, ROWS


class OnnxModel(nn.Module):
    """An exported ONNX detector run with onnxruntime, usable wherever the predictor takes a model.

    The input shape comes from the file: ``input_hw`` is the fixed ``(height, width)`` of a model
    exported without ``dynamic_size`` (``None`` when both are dynamic), ``input_batch`` the fixed
    batch size of a ``--static`` export (``None`` when dynamic). A fixed-batch model still takes any
    number of images: :meth:`forward` pads or splits the batch.

    What the output is comes from the file too: ``layout`` (:data:`yolotr.ops.boxes.LAYOUTS`) from
    the metadata key ``layout`` (a file without it: ``columns`` when its output's middle axis is
    fixed and shorter than its last, as in an ``ultralytics`` export, else ``rows``); ``end2end`` when
    it is ``detections`` (NMS in the graph, or an NMS-free head), ``nms`` the ``conf``, ``iou`` and
    ``max_det`` fixed in the file by ``export(nms=True)`` (``None`` otherwise), ``input_fit`` from the key ``fit``
    (``stretch`` for RT-DETR; ``letterbox`` when absent).
    """

    def __init__(self, path: str | Path):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise CheckpointError(f"{self.path}: cannot load ONNX model ({str(e).splitlines()[0]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names = metadata_names(meta.get("names", ""), self.path)
        self.stride = torch.tensor(json.loads(meta.get("stride", "[32]"))).reshape(-1)  # the package writes one number
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(shape) != 4:
            raise CheckpointError(f"{self.path}: expected one image input (B, 3, H, W), found {shape}")
        self.input_name = inputs[0].name
        batch, _, h, w = (d if isinstance(d, int) and d > 0 else None for d in shape)
        self.input_batch: int | None = batch
        self.input_hw: tuple[int, int] | None = (h, w) if h is not None and w is not None else None
        exported = json.loads(meta["imgsz"]) if "imgsz" in meta else None  # (h, w) it was exported at
        self.imgsz = self.input_hw or (tuple(exported) if exported else None)  # predict's default size
        self.layout = meta.get("layout") or package_layout(meta) or guess_layout(self.session.get_outputs()[0].shape)
        if self.layout not in LAYOUTS:
            raise CheckpointError(f"{self.path}: unknown output layout {self.layout!r} in the metadata")
        self.end2end = self.layout == DETECTIONS
        self.nms: dict | None = json.loads(meta["nms"]) if "nms" in meta else None
        self.input_fit = meta.get("fit", LETTERBOX)  # how images are fitted to the input (head_mode.input_fit)
        if self.input_fit not in (LETTERBOX, STRETCH):
            raise CheckpointError(f"{self.path}: unknown input fit {self.input_fit!r} in the metadata")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """``(B, 3, H, W)`` float in ``[0, 1]`` -> ``(output,)``: the file's float32 output as it is, in
        :attr:`layout` (``(B, N, 5 + nc)``, ``(B, 4 + nc, N)`` or ``(B, k, 6)``), boxes in input pixels.

        Raises:
            YolotrError: ``(H, W)`` differs from the fixed input size of the file.
        """
        check_fixed_size(self.path, self.input_hw, x)

        def run(chunk: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.session.run(None, {self.input_name: chunk.numpy()})[0])

        return (run_in_batches(x, self.input_batch, run),)


def check_fixed_size(path: Path, input_hw: tuple[int, int] | None, x: torch.Tensor) -> None:
    """Refuse an input ``(B, 3, H, W)`` of another size than an exported file's fixed ``input_hw`` (None: any).

    Raises:
        YolotrError: naming the file, both sizes and the way out.
    """
    if input_hw is not None and tuple(x.shape[2:]) != tuple(input_hw):
        h, w = input_hw
        raise YolotrError(
            f"{path}: the model was exported for a fixed {h}x{w} input, got {x.shape[2]}x{x.shape[3]}; "
            f"letterbox to {h}x{w} (or export to ONNX with --dynamic-size)"
        )


def run_in_batches(x: torch.Tensor, size: int | None, run) -> torch.Tensor:
    """``run`` (a file's forward: ``(size, 3, H, W)`` float32 on the CPU -> its first output) over ``x`` in
    batches of a fixed-batch file's ``size`` (None: all at once), the last padded with blank images whose
    outputs are dropped."""
    x = x.detach().cpu().float()
    n = x.shape[0]
    size = size or n
    outputs = []
    for i in range(0, n, size):
        chunk = x[i : i + size]
        if chunk.shape[0] < size:
            chunk = torch.cat((chunk, chunk.new_zeros(size - chunk.shape[0], *chunk.shape[1:])))
        outputs.append(run(chunk)[: min(size, n - i)])
    return torch.cat(outputs)


def metadata_names(text: str, path: str | Path = "") -> list[str]:
    """Class names from an ONNX file's ``names`` metadata, by class index: ours is a JSON list
    (``["person", ...]``), the ``ultralytics`` package's a Python dict repr (``{0: 'person', ...}``, read
    with :func:`ast.literal_eval`: literals only, nothing is run). Empty text: no names.

    Raises:
        CheckpointError: text that is neither, or a dict whose keys are not the indices ``0..nc-1``.
    """
    if not text.strip():
        return []
    try:
        names = json.loads(text)
    except ValueError:
        try:
            names = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            names = None
    if isinstance(names, dict):  # JSON object keys are strings: "0" -> 0
        names = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in names.items()}
    if isinstance(names, dict) and set(names) == set(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list | tuple):
        raise CheckpointError(
            f"{path}: metadata 'names' is {text[:80]!r}; expected a JSON list of class names or a dict "
            "{0: 'name', ...} by class index 0..nc-1"
        )
    return [str(n) for n in names]


def package_layout(meta: dict) -> str | None:
    """``detections`` for a file of the ``ultralytics`` package whose output is after NMS, which it writes no
    ``layout`` for: an NMS-free head (``end2end: 'True'``) or NMS in the graph (``nms`` in its ``args``: a
    ``(B, 300, 6)`` output that the shape alone took for rows of 1 class); None otherwise."""
    if str(meta.get("end2end", "")).strip().lower() == "true":
        return DETECTIONS
    try:
        args = ast.literal_eval(meta.get("args", "{}") or "{}")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return DETECTIONS if isinstance(args, dict) and args.get("nms") is True else None


def guess_layout(shape: list) -> str:
    """The layout of a decoded output ``(B, d1, d2)`` without metadata: ``columns`` when ``d1`` is a fixed
    number below ``d2`` (fewer values per anchor than anchors), or when ``d2`` is a symbolic axis named for the
    anchors (the ``ultralytics`` package's dynamic export: ``(batch, <dim>, anchors)``), else ``rows``."""
    if len(shape) == 3 and isinstance(shape[2], str) and "anchor" in shape[2].lower():
        return COLUMNS
    if len(shape) == 3 and isinstance(shape[1], int) and (not isinstance(shape[2], int) or shape[1] < shape[2]):
        return COLUMNS
    return ROWS
