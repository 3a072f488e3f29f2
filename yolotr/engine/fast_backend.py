"""Inference backends for prediction: prepared once per model, then only forward passes.

The predictor hands a backend letterboxed RGB images and gets back the decoded model output,
``(B, N, 5 + nc)`` float32 (``(B, N, 4 + nc)`` from an anchor-free head), boxes in input pixels, in
the backend's ``layout`` (:func:`output_layout`: the model says which; ``detections`` ``(B, k, 6)``
when the model needs no NMS).

- :class:`TorchBackend`: a fused copy of the model (BatchNorm folded into the convolutions), in
  eval mode and ``channels_last``, run under ``torch.inference_mode``.
- :class:`OnnxBackend`: the model exported once by :func:`~yolotr.engine.exporter.export_model`
  (fused, dynamic batch, height and width, checked with onnxruntime) into
  ``$YOLOTR_CACHE/onnx/<hash of the weights>.onnx``; then, per input shape, one onnxruntime
  session of that file with the shape written into the graph, so that onnxruntime folds the
  grid arithmetic into constants. Sessions use ``torch.get_num_threads()`` intra-op threads.
  The first image of each shape also runs through the fused PyTorch copy and the two outputs
  are compared: a shape where they differ (a block whose export kept its example size) stays on
  PyTorch, with a warning.

``prepare_backend(model, "auto")`` gives, for a float32 model on the CPU when onnxruntime is installed,
:class:`AutoCpuBackend`: PyTorch for the first ``TORCH_BATCHES`` (8) batches of each input shape and the ONNX
backend (the faster one there: ``python bench/latency.py --e2e``) from the next one on; the torch backend
otherwise. The export happens when a shape first reaches that batch, the first time a set of weights is seen
(seconds; later processes find the file). Preparing costs a deep copy of the model; :class:`yolotr.YOLO` keeps
the prepared backend until the weights change.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolotr.data.label_cache import cache_dir
from yolotr.engine.head_mode import same_detections
from yolotr.errors import YolotrError
from yolotr.logs import verbosity
from yolotr.ops.boxes import DETECTIONS, ROWS, as_rows

LOGGER = logging.getLogger("yolotr")
BACKENDS = ("auto", "torch", "onnx", "cuda-graph")
ONNX_OPSET = 17
CACHE_VERSION = 1  # bump when the exported graph changes for the same weights
KEEP_FILES = 32  # exported models kept in the cache folder (least recently used go first)


def onnx_cache_dir() -> Path:
    """``$YOLOTR_CACHE/onnx`` (default ``~/.cache/yolotr/onnx``)."""
    return cache_dir() / "onnx"


def onnx_spinning() -> bool:
    """Whether onnxruntime's intra-op threads busy-wait during a run: ``$YOLOTR_ONNX_SPIN`` (default ``1``)."""
    return os.environ.get("YOLOTR_ONNX_SPIN", "1").strip().lower() not in ("0", "false", "no", "off")


def weights_version(model: nn.Module) -> tuple:
    """A cheap fingerprint of the model's current weights: changes when any parameter or buffer is
    replaced (``load_state_dict``, ``.to()``, ``fuse()``) or modified in place (an optimizer step).

    Built from each tensor's storage address and autograd version counter (0.15 ms for yolov5n).
    """
    state = [id(model)]  # flat ints: no per-tensor tuples for the garbage collector to count
    stack: list[nn.Module | None] = [model]
    while stack:  # a plain walk over the module tree: twice as fast as model.modules()
        module = stack.pop()
        if module is None:  # a submodule slot registered as None
            continue
        for t in module._parameters.values():
            if t is not None:
                state += (t.data_ptr(), t._version)
        for t in module._buffers.values():
            if t is not None:
                state += (t.data_ptr(), t._version)
        stack.extend(module._modules.values())
    return tuple(state)


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 of yolotr's own source files (the modules, heads and exporter that make the graph), once per
    process: a file exported by other code (an upgrade, an edit) is not taken from the cache."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def weights_key(model: nn.Module) -> str:
    """SHA-256 (hex, 24 chars) of the architecture, names, strides and every ``state_dict`` tensor, and of
    yolotr's code (:func:`code_fingerprint`).

    The name of a model's exported file in the cache: equal weights share one file across
    processes and ``YOLO`` objects.
    """
    digest = hashlib.sha256(f"{CACHE_VERSION}|{ONNX_OPSET}|{torch.__version__}|{type(model).__qualname__}".encode())
    digest.update(code_fingerprint().encode())  # an exporter or a module changed: a graph of the new code
    digest.update(repr(model).encode())
    digest.update(json.dumps([list(getattr(model, "names", [])), getattr(model, "yaml", None)], default=str).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def preprocess(images: list[np.ndarray], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """List of equally sized RGB ``(H, W, 3)`` uint8 images -> ``(B, 3, H, W)`` float in ``[0, 1]``
    (``channels_last`` memory), on ``device`` in ``dtype``.

    float32 on the CPU is converted in NumPy (the same float32 division, no PyTorch thread pool);
    elsewhere the uint8 batch moves to the device first and is converted there.
    """
    stacked = images[0][None] if len(images) == 1 else np.stack(images)
    if torch.device(device).type == "cpu" and dtype == torch.float32:
        scaled = stacked.astype(np.float32)
        scaled /= np.float32(255.0)
        return torch.from_numpy(scaled).permute(0, 3, 1, 2)  # (B, H, W, 3) memory: channels_last
    batch = torch.from_numpy(stacked).permute(0, 3, 1, 2)  # a channels-last view of (B, H, W, 3)
    return batch.to(device=device, dtype=dtype, non_blocking=True, memory_format=torch.channels_last) / 255.0


@contextlib.contextmanager
def single_thread(active: bool = True) -> Iterator[None]:
    """Run PyTorch on one intra-op thread within the block (restored after).

    For post-processing on the CPU: the tensors are tiny, but ops such as boolean indexing and
    ``max(dim)`` still open an OpenMP region, which costs a scheduler time slice (~10 ms) whenever
    another process holds a core (measured: 12 ms vs 12 us per op at 2 threads on a loaded machine).
    """
    if not active:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def output_layout(model: nn.Module) -> str:
    """The layout (:data:`yolotr.ops.boxes.LAYOUTS`) of ``model``'s decoded eval output, as the model
    declares it: an ONNX file its own (``OnnxModel.layout``); a ``DetectionModel`` its head's:
    ``detections`` when the head is end-to-end (``end2end``), else ``rows`` (in PyTorch every head
    decodes one row per anchor; ``export_layout`` is what the exporter writes)."""
    layout = getattr(model, "layout", None)
    if isinstance(layout, str):
        return layout
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential | nn.ModuleList) and len(layers) else None
    return DETECTIONS if getattr(head, "end2end", False) else ROWS


def _decoded(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


class Backend:
    """What the predictor runs images through.

    ``to_input`` turns equally sized letterboxed RGB ``(H, W, 3)`` uint8 images into the backend's
    input; calling the backend on it gives the decoded ``(B, N, 5 + nc)`` float32 CPU-or-device tensor
    in ``layout`` (``rows``, ``columns`` or ``detections``).
    """

    name = ""
    layout = ROWS

    def to_input(self, images: list[np.ndarray]):
        raise NotImplementedError

    def __call__(self, x) -> torch.Tensor:
        raise NotImplementedError


class TorchBackend(Backend):
    """The model in PyTorch: fused (a copy unless ``copy=False``), eval, ``channels_last``.

    A module without parameters (an :class:`~yolotr.engine.onnx_model.OnnxModel`) is called as it is.
    """

    name = "torch"

    def __init__(self, model: nn.Module, copy_model: bool = True, fuse: bool = True):
        param = next(model.parameters(), None)
        if param is not None:
            if copy_model:
                model = copy.deepcopy(model)
            model.eval()
            if fuse and hasattr(model, "fuse"):
                model.fuse()
            model = model.to(memory_format=torch.channels_last)  # faster convolutions (oneDNN, cuDNN)
        self.model = model.eval()
        self.layout = output_layout(model)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32

    def to_input(self, images: list[np.ndarray]) -> torch.Tensor:
        """``(B, 3, H, W)`` float in ``[0, 1]``, ``channels_last``, on the model's device and dtype."""
        return preprocess(images, self.device, self.dtype)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _decoded(self.model(x))


class OnnxBackend(Backend):
    """The model exported to ONNX once (cached on disk by :func:`weights_key`), run by onnxruntime.

    Args:
        model: a float32 ``DetectionModel`` on the CPU.
        threads: onnxruntime intra-op threads (default ``torch.get_num_threads()``).
        copy_model: the PyTorch copy used to check each new input shape is a fused deep copy (else
            the model itself is fused in place).
        folder: where exported files live (default :func:`onnx_cache_dir`).
        reference: the fused PyTorch backend that checks each new shape (default: made from ``model``).
        key: the file's :func:`weights_key`, when the caller took it before fusing the model.

    Raises:
        YolotrError: the model is not float32 on the CPU, or its export failed (the cause is named).
    """

    name = "onnx"

    def __init__(
        self,
        model: nn.Module,
        threads: int | None = None,
        copy_model: bool = True,
        folder: str | Path | None = None,
        reference: TorchBackend | None = None,
        key: str | None = None,
    ):
        _check_cpu_float32(model)
        self.threads = int(threads or torch.get_num_threads())
        self.key = key or weights_key(model)
        self.path = Path(folder or onnx_cache_dir()) / f"{self.key}.onnx"
        self.reference = reference or TorchBackend(model, copy_model=copy_model)  # checks each new shape once
        cached = self._cached()
        self.proto = cached if cached is not None else self._export(model)
        self.input_name = self.proto.graph.input[0].name
        meta = {p.key: p.value for p in self.proto.metadata_props}
        self.file_layout = meta.get("layout", ROWS)  # the file's; calls return the PyTorch model's layout
        self.layout = self.reference.layout
        bytes_per_session = sum(t.numel() * 4 for t in self.reference.model.parameters())
        self.max_sessions = max(2, min(8, (1 << 30) // max(bytes_per_session, 1)))
        self.sessions: OrderedDict[tuple[int, int, int], object] = OrderedDict()
        self.on_torch: set[tuple[int, int, int]] = set()
        self.checked: set[tuple[int, int, int]] = set()  # shapes whose output matched PyTorch's once

    def _cached(self):
        """The ONNX graph of the cached file, or None when there is none (an unreadable one is deleted)."""
        import onnx

        if not self.path.is_file():
            return None
        try:
            proto = onnx.load(str(self.path))
            os.utime(self.path)  # most recently used: kept longest
            return proto
        except Exception as e:  # noqa: BLE001 - protobuf and OS errors alike mean "export again"
            LOGGER.warning("onnx backend: %s is unreadable (%s); exporting again", self.path, type(e).__name__)
            self.path.unlink(missing_ok=True)
            return None

    def _export(self, model: nn.Module):
        """Export ``model`` into the cache (a temporary file renamed into place) and return its graph."""
        import onnx

        from yolotr.engine.exporter import export_model

        tmp = self.path.with_name(f".{self.key}.{os.getpid()}.tmp.onnx")
        LOGGER.info("onnx backend: exporting the model once for these weights (cached in %s)", self.path.parent)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = 8 * int(max(model.stride))  # the example size of the trace and the export's check
            with verbosity(False):  # the exporter would name the temporary file
                result = export_model(model, "onnx", tmp, imgsz=size, dynamic=True, dynamic_size=True)
            os.replace(tmp, self.path)
        except Exception as e:  # noqa: BLE001 - torch.onnx and onnxruntime raise many unrelated types
            cause = (str(e).splitlines() or [type(e).__name__])[0]
            raise YolotrError(f"backend 'onnx': exporting the model failed ({cause})") from e
        finally:
            with contextlib.suppress(OSError):  # nothing to remove (or nowhere to write it)
                tmp.unlink()
        LOGGER.info("onnx backend: %s, max abs difference to PyTorch %.2e", self.path.name, result.max_abs_diff)
        _prune(self.path.parent)
        return onnx.load(str(self.path))

    def _session(self, shape: tuple[int, int, int]):
        """An onnxruntime session of the file with the input fixed to ``(B, 3, H, W)`` = ``shape``."""
        session = self.sessions.get(shape)
        if session is not None:
            self.sessions.move_to_end(shape)
            return session
        import onnxruntime as ort

        b, h, w = shape
        dims = self.proto.graph.input[0].type.tensor_type.shape.dim
        for dim, value in zip(dims, (b, 3, h, w)):
            dim.dim_value = value  # replaces the symbolic name: a static shape for onnxruntime's optimizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the workers busy-wait between the nodes of a run (5-8% faster end to end on idle cores than
        # sleeping) and stop when the run returns: left spinning, they starve the NMS and image decoding
        # that follow (measured 2-5x slower end to end). Where other processes keep the cores busy,
        # spinning costs more than it gains (+40% with one core busy): YOLOTR_ONNX_SPIN=0 turns it off
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if onnx_spinning() else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        session = ort.InferenceSession(self.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.sessions[shape] = session
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)
        return session

    def to_input(self, images: list[np.ndarray]) -> np.ndarray:
        """``(B, 3, H, W)`` float32 in ``[0, 1]``, C-contiguous (the same values as the torch input)."""
        stacked = images[0][None] if len(images) == 1 else np.stack(images)
        batch = stacked.transpose(0, 3, 1, 2).astype(np.float32)  # astype copies into NCHW order
        batch /= np.float32(255.0)
        return batch

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        b, _, h, w = x.shape
        shape = (b, h, w)
        if shape in self.on_torch:
            return self.reference(torch.from_numpy(x))
        first = shape not in self.checked
        try:
            session = self._session(shape)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (Fail, InvalidGraph, ...)
            cause = (str(e).splitlines() or [type(e).__name__])[0]
            LOGGER.warning("onnx backend: no session for input %s (%s); running it on PyTorch", shape, cause)
            self.on_torch.add(shape)
            return self.reference(torch.from_numpy(x))
        out = as_rows(torch.from_numpy(session.run(None, {self.input_name: x})[0]), self.file_layout)
        if first and not self._agrees(out, x):
            self.on_torch.add(shape)
            self.sessions.pop(shape, None)
            return self.reference(torch.from_numpy(x))
        self.checked.add(shape)
        return out

    def _agrees(self, out: torch.Tensor, x: np.ndarray) -> bool:
        """Whether onnxruntime's output at this shape matches PyTorch's (within 1e-3 of the image size)."""
        expected = self.reference(torch.from_numpy(x)).float().cpu()
        tol = 1e-3 * max(x.shape[2:])
        if out.shape == expected.shape and float((out - expected).abs().max()) <= tol:
            return True
        if self.layout == DETECTIONS and same_detections(out, expected, tol):  # top-k rows: a set, near-ties
            return True
        if out.shape == expected.shape:
            how = f"max abs difference {float((out - expected).abs().max()):.3g} over the tolerance {tol:.3g}"
        else:
            how = f"shape {tuple(out.shape)} vs {tuple(expected.shape)}"
        LOGGER.warning(
            "onnx backend: at input %dx%d the exported model differs from PyTorch (%s); images of this size run "
            "in PyTorch", x.shape[2], x.shape[3], how,
        )  # fmt: skip
        return False


class AutoCpuBackend(Backend):
    """``auto`` for a float32 model on the CPU: the fused PyTorch copy runs the first :attr:`TORCH_BATCHES`
    batches of each input shape, :class:`OnnxBackend` the later ones (exported, or found in the cache, when a
    shape first gets there).

    onnxruntime is the faster of the two once its session of a shape is built (yolov5n, bus.jpg at 640 on 2 AMD
    cores: the model 24 ms against 33 ms, a whole ``predict`` 28 ms against 55 ms), but building the session and
    checking it against PyTorch takes 100-160 ms, and the first export of a set of weights over a second. Going
    to onnxruntime at once made a single photo 8x slower than PyTorch (1.31 s against 0.16 s) and a folder of 20
    photos letterboxed to 11 sizes slower too (1.01 s against 0.71 s, the export cached). A shape that repeats (a
    video, a folder from one camera) runs its first batches in PyTorch, then on onnxruntime as before. An export
    that fails keeps PyTorch, with a warning.
    """

    name = "auto"
    TORCH_BATCHES = 8  # a session pays for itself after 4-10 images; a size seen less often never builds one

    def __init__(self, model: nn.Module, threads: int | None = None, copy_model: bool = True):
        _check_cpu_float32(model)
        self.threads = threads
        self.key = weights_key(model)  # before a fuse in place (copy_model False) changes the weights
        self.torch = TorchBackend(model, copy_model=copy_model)
        self.layout = self.torch.layout
        self.onnx: OnnxBackend | None = None
        self.export_failed = False
        self.batches: dict[tuple[int, int, int], int] = {}  # batches run so far per (B, H, W)

    def to_input(self, images: list[np.ndarray]) -> tuple[Backend, object]:
        """The backend this batch of equally sized images runs on, and its input for that backend."""
        shape = (len(images), *images[0].shape[:2])
        self.batches[shape] = self.batches.get(shape, 0) + 1
        settled = self.batches[shape] > self.TORCH_BATCHES
        if settled and self.onnx is None and not self.export_failed:
            try:
                self.onnx = OnnxBackend(self.torch.model, self.threads, reference=self.torch, key=self.key)
            except YolotrError as e:
                LOGGER.warning("%s; predicting with the torch backend", e)
                self.export_failed = True
        backend = self.onnx if settled and self.onnx is not None else self.torch
        return backend, backend.to_input(images)

    def __call__(self, routed: tuple[Backend, object]) -> torch.Tensor:
        backend, x = routed
        return backend(x)


def _check_cpu_float32(model: nn.Module) -> None:
    """Raise :class:`YolotrError` unless ``model`` has float32 parameters on the CPU (what onnxruntime runs)."""
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu" or param.dtype != torch.float32:
        where = "no parameters" if param is None else f"{param.dtype} on {param.device}"
        raise YolotrError(f"backend 'onnx' needs a float32 model on the CPU (this one has {where}); use 'torch'")


def _prune(folder: Path, keep: int = KEEP_FILES) -> None:
    """Delete all but the ``keep`` most recently used exported files in ``folder``."""
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in files[keep:]:
        path.unlink(missing_ok=True)


def auto_backend(model: nn.Module) -> str:
    """``cuda-graph`` for a model on CUDA (:mod:`yolotr.engine.cuda_graph`); ``onnx`` for a float32 model on
    the CPU when onnxruntime is installed; else ``torch``."""
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return "cuda-graph"
    if param is None or param.device.type != "cpu" or param.dtype != torch.float32:
        return "torch"
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def prepare_backend(
    model: nn.Module, backend: str = "auto", copy_model: bool = True, threads: int | None = None
) -> Backend:
    """The backend ``backend`` (``auto``, ``torch`` or ``onnx``) of ``model``, ready to run.

    With ``copy_model=False`` the model itself is fused in place (for a model loaded only to predict).
    ``auto`` on the CPU is :class:`AutoCpuBackend`, which stays on ``torch`` with a warning when the export fails.

    Raises:
        YolotrError: an unknown backend name, or ``onnx`` asked for a model it cannot run.
    """
    if backend not in BACKENDS:
        raise YolotrError(f"unknown predict backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    chosen = auto_backend(model) if backend == "auto" else backend
    if chosen == "cuda-graph":
        from yolotr.engine.cuda_graph import CudaGraphBackend

        return CudaGraphBackend(model, copy_model=copy_model)
    if chosen == "onnx" and backend == "auto":
        return AutoCpuBackend(model, threads=threads, copy_model=copy_model)
    if chosen == "onnx":
        return OnnxBackend(model, threads=threads, copy_model=copy_model)
    return TorchBackend(model, copy_model=copy_model)
