"""Prediction on CUDA through captured CUDA graphs: one graph per input shape, replayed per batch.

At batch 1 a detector on a modern GPU is bound by kernel launches and Python, not arithmetic: yolov8n's
8.7 GFLOPs need about 0.01 ms of an H200, its ~250 kernels several milliseconds of launching. A CUDA graph
records the launches of one forward once and replays them with a single call, so the per-image cost
becomes the GPU's own time.

:class:`CudaGraphBackend` keeps the same prepared model as :class:`~yolotr.engine.fast_backend.TorchBackend`
(fused, eval, ``channels_last``, in the model's dtype: fp32, or fp16 for ``half``), and per input shape
``(B, 3, H, W)``, as the ONNX backend keeps a session per shape:

1. warm-up forwards on a side stream (cuDNN picks its algorithms, heads build their anchor grids);
2. capture of one forward into a ``torch.cuda.CUDAGraph`` reading a static input tensor;
3. a check: the replayed output (its buffer first filled with NaN) against the eager one (fp16 tolerance);
   a shape whose graph differs, or whose capture fails (an operation that synchronises with the host, a
   dynamic shape), runs eagerly from then on, with one warning.

Graphs share one memory pool and at most :data:`MAX_GRAPHS` shapes are kept (least recently used go).
Each call copies the batch into the static input, replays, and returns a copy of the static output (the
next replay overwrites it). ``torch.compile(mode="reduce-overhead")`` does the same capture through
Inductor: ``bench/gpu_predict.py`` measures both; this backend needs no compiler and starts in
milliseconds per shape.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from yolotr.engine.fast_backend import Backend, TorchBackend, _decoded, preprocess
from yolotr.errors import YolotrError

LOGGER = logging.getLogger("yolotr")
MAX_GRAPHS = 8
WARMUP = 3
# |graph - eager| allowed, relative to the output's largest magnitude: fp16 rounding of a different
# (equally valid) kernel choice, not a wrong graph, which differs by O(1).
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-4}


class _Graph:
    """One captured forward: static input ``(B, 3, H, W)`` and output tensors on the device.

    The output starts as NaN, so that only a replay that writes all of it passes the backend's check (a
    capture that recorded nothing leaves whatever the forward wrote while it was captured).
    """

    def __init__(self, graph: torch.cuda.CUDAGraph, static_in: torch.Tensor, static_out: torch.Tensor):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out.fill_(float("nan"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` as a new float32 tensor (the next replay overwrites the static one)."""
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.float() if self.static_out.dtype != torch.float32 else self.static_out.clone()


class CudaGraphBackend(Backend):
    """The fused model on CUDA, each input shape captured once as a CUDA graph and replayed; float32 output
    whatever the model's dtype (fp16 for ``half``), as the other backends give.

    Args:
        model: a ``DetectionModel`` on a CUDA device (its dtype is the inference dtype).
        copy_model: fuse a deep copy (default) rather than the model itself.
    """

    name = "cuda-graph"

    def __init__(self, model: nn.Module, copy_model: bool = True):
        param = next(model.parameters(), None)
        if param is None or param.device.type != "cuda":
            where = "no parameters" if param is None else f"parameters on {param.device}"
            raise YolotrError(f"the cuda-graph backend needs a model on a CUDA device ({where}); use backend='auto'")
        self._prepare_model(model, copy_model)

    def _prepare_model(self, model: nn.Module, copy_model: bool) -> None:
        self.eager = TorchBackend(model, copy_model=copy_model)
        self.model, self.layout = self.eager.model, self.eager.layout
        self.device, self.dtype = self.eager.device, self.eager.dtype
        self.graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()  # None: this shape runs eagerly
        self.pool = None

    def to_input(self, images: list[np.ndarray]) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]``, ``channels_last``, on the model's device and dtype."""
        return preprocess(images, self.device, self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # not inference mode, even inside the predictor's: the graph's static tensors outlive the call and
        # are written in place by later calls, which inference tensors refuse outside inference mode
        with torch.inference_mode(False), torch.no_grad(), self._on_device():
            key = (tuple(x.shape), x.dtype)
            if key not in self.graphs:
                self.graphs[key] = self._prepared(x)
                while len(self.graphs) > MAX_GRAPHS:
                    self.graphs.popitem(last=False)
            self.graphs.move_to_end(key)
            graph = self.graphs[key]
            return graph(x) if graph is not None else _decoded(self.model(x)).float()

    def _on_device(self) -> torch.cuda.device:
        """Makes the model's GPU the current device: capture records, and replay runs, on the current device's
        streams (a model on ``cuda:1`` would otherwise run eagerly beside an empty graph); a no-op off CUDA."""
        return torch.cuda.device(self.device if self.device.type == "cuda" else -1)

    def _prepared(self, x: torch.Tensor) -> _Graph | None:
        """The checked graph of ``x``'s shape, or None (with a warning) to run that shape eagerly."""
        try:
            graph = self._capture(x)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run this shape eagerly
            LOGGER.warning("CUDA graph capture failed for input %s (%s); this shape runs eagerly", tuple(x.shape), e)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return None
        eager = _decoded(self.model(x)).float()
        replayed = graph(x).float()
        scale = max(float(eager.abs().max()), 1.0)
        error = float((replayed - eager).abs().max()) / scale
        if not error <= TOLERANCE.get(self.dtype, 1e-2):
            LOGGER.warning(
                "the CUDA graph of input %s differs from the eager model (max relative error %.2g); this shape "
                "runs eagerly", tuple(x.shape), error,
            )  # fmt: skip
            return None
        return graph

    def _capture(self, x: torch.Tensor) -> _Graph:
        """Warm up on a side stream, then record one forward reading a static copy of ``x``."""
        static_in = x.clone(memory_format=torch.channels_last)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP):
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # the outer stream context puts the current stream back when a failed capture raises from
        # torch.cuda.graph's exit before it restores the stream itself
        with torch.cuda.stream(torch.cuda.current_stream(self.device)), torch.cuda.graph(graph, pool=self.pool):
            static_out = _decoded(self.model(static_in))
        return _Graph(graph, static_in, static_out)
