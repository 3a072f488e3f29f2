"""Export to ONNX (checked with onnxruntime on the spot) and TorchScript, and running ONNX files.

The exported graph is the fused model in eval mode whose output is the decoded, NMS-free
``(B, N, 5 + nc)`` tensor (or, with ``raw=True``, the raw head maps); NMS stays outside, in the
same post-processing the PyTorch model uses. Class names and strides travel in the ONNX metadata.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.errors import CheckpointError, YolotrError
from yolotr.nn.head import Detect
from yolotr.nn.head_af import AnchorFreeDetect
from yolotr.ops.boxes import non_max_suppression

LOGGER = logging.getLogger("yolotr")
FORMATS = ("onnx", "torchscript")


class ExportError(YolotrError):
    """An export whose output differs from the PyTorch model's."""


@dataclass
class ExportResult:
    """Where the file is and how far its output is from PyTorch's on the check input."""

    path: Path
    max_abs_diff: float
    detections_match: bool


class _RawHeads(nn.Module):
    """Wraps a model so that its traced output is the tuple of raw head maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return tuple(self.model(x)[1])


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

    Raises:
        ExportError: when the detections after NMS differ between PyTorch and the exported file.
    """
    if format not in FORMATS:
        raise YolotrError(f"unknown export format {format!r}; choose one of {FORMATS}")
    imgsz = check_imgsz(imgsz, largest_stride(model))
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    net = copy.deepcopy(model).float().eval().fuse() if hasattr(model, "fuse") else copy.deepcopy(model).eval()
    head = net.model[-1] if hasattr(net, "model") else None
    if isinstance(head, Detect | AnchorFreeDetect):
        head.export = not raw
    module = (_RawHeads(net) if raw else net).eval()
    example = torch.rand(batch, 3, h, w)
    path = Path(path or f"model.{format}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        _export_onnx(module, example, path, dynamic, dynamic_size, raw, opset, net)
    else:
        with torch.no_grad():
            traced = torch.jit.trace(module, example, strict=False)
        traced.save(str(path))
    if not check:
        return ExportResult(path, float("nan"), True)
    return _check(module, path, format, example, raw, len(getattr(net, "names", [])) or None)


def _export_onnx(module, example, path, dynamic, dynamic_size, raw, opset, net) -> None:
    axes = {}
    if dynamic or dynamic_size:
        axes["images"] = {0: "batch"} if dynamic else {}
        if dynamic_size:
            axes["images"].update({2: "height", 3: "width"})
    outputs = [f"raw{i}" for i in range(net.model[-1].nl)] if raw else ["output"]
    for name in outputs:
        axes[name] = {0: "batch"} if dynamic else {}
        if dynamic_size and not raw:
            axes[name][1] = "boxes"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), opset_version=opset, input_names=["images"], output_names=outputs,
            dynamic_axes=axes or None, dynamo=False,
        )  # fmt: skip
    import onnx

    proto = onnx.load(str(path))
    meta = {"names": json.dumps(list(getattr(net, "names", []))), "stride": json.dumps(net.stride.tolist())}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _run_file(path: Path, format: str, x: torch.Tensor) -> list[np.ndarray]:
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        out = torch.jit.load(str(path))(x)
    return [t.numpy() for t in (out if isinstance(out, tuple | list) else [out])]


def _check(module, path: Path, format: str, example: torch.Tensor, raw: bool, nc: int | None) -> ExportResult:
    with torch.no_grad():
        expected = module(example)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple | list) else [expected])]
    got = _run_file(path, format, example)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    match = True
    if not raw:
        a = non_max_suppression(torch.from_numpy(expected[0]), 0.25, 0.45, nc=nc)
        b = non_max_suppression(torch.from_numpy(got[0]), 0.25, 0.45, nc=nc)
        match = all(x.shape == y.shape and (x.shape[0] == 0 or torch.allclose(x, y, atol=0.5)) for x, y in zip(a, b))
    if not match:
        raise ExportError(f"{path}: detections of the exported model differ from PyTorch's (max abs diff {diff:.3g})")
    LOGGER.info("exported %s: max abs difference to PyTorch %.2e%s", path, diff, "" if raw else ", detections match")
    return ExportResult(path, diff, match)


class OnnxModel(nn.Module):
    """An exported ONNX detector run with onnxruntime, usable wherever the predictor takes a model.

    The input shape comes from the file: ``input_hw`` is the fixed ``(height, width)`` of a model
    exported without ``dynamic_size`` (``None`` when both are dynamic), ``input_batch`` the fixed
    batch size of a ``--static`` export (``None`` when dynamic). A fixed-batch model still takes any
    number of images: :meth:`forward` pads or splits the batch.
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
        self.names = json.loads(meta.get("names", "[]"))
        self.stride = torch.tensor(json.loads(meta.get("stride", "[32]")))
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(shape) != 4:
            raise CheckpointError(f"{self.path}: expected one image input (B, 3, H, W), found {shape}")
        self.input_name = inputs[0].name
        batch, _, h, w = (d if isinstance(d, int) and d > 0 else None for d in shape)
        self.input_batch: int | None = batch
        self.input_hw: tuple[int, int] | None = (h, w) if h is not None and w is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """``(B, 3, H, W)`` float in ``[0, 1]`` -> ``((B, N, 5 + nc) float32,)``, decoded boxes in pixels.

        Raises:
            YolotrError: ``(H, W)`` differs from the fixed input size of the file.
        """
        if self.input_hw is not None and tuple(x.shape[2:]) != self.input_hw:
            h, w = self.input_hw
            raise YolotrError(
                f"{self.path}: the model was exported for a fixed {h}x{w} input, got {x.shape[2]}x{x.shape[3]}; "
                f"letterbox to {h}x{w} (or export with --dynamic-size)"
            )
        x = x.detach().cpu().float().numpy()
        n, size = x.shape[0], self.input_batch or x.shape[0]
        outputs = []
        for i in range(0, n, size):
            chunk = x[i : i + size]
            if chunk.shape[0] < size:  # a fixed-batch model: pad with blank images, drop their outputs
                pad = np.zeros((size - chunk.shape[0], *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self.session.run(None, {self.input_name: chunk})[0][: min(size, n - i)])
        return (torch.from_numpy(np.concatenate(outputs)),)
