"""An exported TorchScript detector (``yolotr export --format torchscript``), run as it is by the predictor.

A traced graph holds the shapes it was traced at: the input size and batch of the export. So, unlike an ONNX
file with dynamic axes, it takes images fitted to that size only, and any number of them by padding or
splitting the batch. What it is (class names, stride, output layout, NMS settings, input fit) is in the
archive's ``config.txt`` (JSON), written by the exporter; the ``ultralytics`` package writes the same entry,
so its TorchScript exports are read too (names as a dict by index, one stride, a layout guessed from the
output's shape when the entry has none).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from yolotr.engine.head_mode import LETTERBOX, STRETCH
from yolotr.engine.onnx_model import OnnxModel, check_fixed_size, guess_layout, metadata_names, run_in_batches
from yolotr.errors import CheckpointError
from yolotr.ops.boxes import DETECTIONS, LAYOUTS

EXPORTED_SUFFIXES = (".onnx", ".torchscript")


def is_exported_file(source) -> bool:
    """Whether ``source`` names an exported model (``.onnx``, ``.torchscript``) rather than weights or a YAML."""
    return isinstance(source, str | Path) and str(source).lower().endswith(EXPORTED_SUFFIXES)


def load_exported(path: str | Path) -> nn.Module:
    """An :class:`OnnxModel` or a :class:`TorchScriptModel` by the file's suffix; it predicts only."""
    return OnnxModel(path) if str(path).lower().endswith(".onnx") else TorchScriptModel(path)


class TorchScriptModel(nn.Module):
    """A TorchScript file usable wherever the predictor takes a model, with :class:`OnnxModel`'s attributes
    (``names``, ``stride``, ``imgsz``, ``input_hw``, ``input_batch``, ``layout``, ``end2end``, ``nms``,
    ``input_fit``). The scripted module is kept outside the module tree, so that the model has no parameters
    and backends run it as it is (no fusing, no ``channels_last`` copy)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        extra = {"config.txt": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice (torch 2.14)
                script = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        except Exception as e:  # noqa: BLE001 - torch.jit raises several unrelated types
            raise CheckpointError(f"{self.path}: cannot load TorchScript model ({str(e).splitlines()[0]})") from None
        self.__dict__["script"] = script.eval()
        try:
            meta = json.loads(extra["config.txt"] or "{}")
        except ValueError:
            raise CheckpointError(f"{self.path}: its config.txt is not JSON") from None
        names = meta.get("names", [])
        self.names = metadata_names(names if isinstance(names, str) else json.dumps(names), self.path)
        stride = _json_value(meta.get("stride", 32))
        self.stride = torch.tensor(stride if isinstance(stride, list) else [stride], dtype=torch.float32)
        imgsz = _json_value(meta.get("imgsz", [640, 640]))
        self.input_hw = (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, list) else (int(imgsz), int(imgsz))
        self.imgsz = self.input_hw
        self.input_batch = int(_json_value(meta.get("batch", 1)))
        self.layout = meta.get("layout") or self._probe_layout()
        if self.layout not in LAYOUTS:
            raise CheckpointError(f"{self.path}: unknown output layout {self.layout!r} in its config.txt")
        self.end2end = self.layout == DETECTIONS
        nms = meta.get("nms")
        self.nms = _json_value(nms) if nms is not None else None
        self.input_fit = meta.get("fit", LETTERBOX)
        if self.input_fit not in (LETTERBOX, STRETCH):
            raise CheckpointError(f"{self.path}: unknown input fit {self.input_fit!r} in its config.txt")

    def _probe_layout(self) -> str:
        """A file without a layout (the package's): guessed from the output of one blank input."""
        with torch.no_grad():
            out = self.script(torch.zeros(self.input_batch, 3, *self.input_hw))
        out = out[0] if isinstance(out, tuple | list) else out
        return guess_layout(list(out.shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """``(B, 3, H, W)`` float in ``[0, 1]`` -> ``(output,)`` in :attr:`layout`, float32 on the CPU.

        Raises:
            YolotrError: ``(H, W)`` differs from the size the file was traced at.
        """
        check_fixed_size(self.path, self.input_hw, x)

        def run(chunk: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                out = self.script(chunk)
            return (out[0] if isinstance(out, tuple | list) else out).float()

        return (run_in_batches(x, self.input_batch, run),)


def _json_value(value):
    """A metadata value that may itself be JSON text (ours: every value a string) or already decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
