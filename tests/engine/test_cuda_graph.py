"""The CUDA-graph prediction backend: its bookkeeping (a graph per shape, checked against eager, eager
fallback, least recently used eviction) on the CPU with stand-in graphs; real capture runs in the GPU check."""

from __future__ import annotations

import logging

import pytest
import torch

from yolotr.engine import cuda_graph
from yolotr.engine.cuda_graph import CudaGraphBackend
from yolotr.engine.fast_backend import auto_backend, prepare_backend
from yolotr.errors import YolotrError
from yolotr.models.detection import DetectionModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DetectionModel("yolov5n.yaml", nc=3).eval()


def _backend(model) -> CudaGraphBackend:
    """A backend whose device check is bypassed, so its logic runs on the CPU."""
    backend = CudaGraphBackend.__new__(CudaGraphBackend)
    backend._prepare_model(model, copy_model=True)
    return backend


class _StandIn:
    """A 'graph' that runs a function: counts replays."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def test_a_model_off_cuda_is_refused_with_a_clear_error(model):
    with pytest.raises(YolotrError, match="needs a model on a CUDA device"):
        CudaGraphBackend(model)
    with pytest.raises(YolotrError, match="needs a model on a CUDA device"):
        prepare_backend(model, "cuda-graph")
    assert auto_backend(model) != "cuda-graph"


def test_each_shape_is_captured_once_checked_and_replayed(model, monkeypatch):
    backend = _backend(model)
    graphs = []

    def capture(x):
        graphs.append(_StandIn(lambda y: backend.model(y)[0].float()))
        return graphs[-1]

    monkeypatch.setattr(backend, "_capture", capture)
    x = torch.rand(1, 3, 64, 96)
    eager = backend.model(x)[0]
    for _ in range(3):
        out = backend(x)
    assert len(graphs) == 1 and graphs[0].calls == 1 + 3  # the check's replay, then one per call
    assert out.dtype == torch.float32 and torch.allclose(out, eager)
    backend(torch.rand(2, 3, 64, 96))
    assert (
        len(graphs) == 2
        and list(backend.graphs) == [((2, 3, 64, 96), torch.float32), ((1, 3, 64, 96), torch.float32)][::-1]
    )


def test_a_failed_capture_or_a_wrong_graph_runs_that_shape_eagerly(model, monkeypatch, caplog):
    backend = _backend(model)
    x = torch.rand(1, 3, 64, 64)
    eager = backend.model(x)[0]

    def fails(x):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(backend, "_capture", fails)
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(x)
        backend(x)
    assert torch.allclose(out, eager)
    assert [r.getMessage() for r in caplog.records].count(
        "CUDA graph capture failed for input (1, 3, 64, 64) (operation not permitted when stream is capturing); "
        "this shape runs eagerly"
    ) == 1  # once per shape, not per call

    wrong = _StandIn(lambda y: backend.model(y)[0] + 1.0)
    monkeypatch.setattr(backend, "_capture", lambda x: wrong)
    y = torch.rand(1, 3, 32, 64)
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(y)
    assert "differs from the eager model" in caplog.records[-1].getMessage()
    assert torch.allclose(out, backend.model(y)[0]) and backend.graphs[((1, 3, 32, 64), torch.float32)] is None


class _RecordedNothing:
    """A captured graph whose replay launches nothing (a capture on another device's stream records none)."""

    def replay(self) -> None:
        pass


def test_a_graph_whose_replay_writes_nothing_is_refused(model, monkeypatch, caplog):
    """The forward ran while 'captured' and left the right output for the capture's own input in the static
    buffer; the check must not take that for the replay's work (every later batch would get it back)."""
    backend = _backend(model)

    def capture(x):
        static_in = x.clone()
        return cuda_graph._Graph(_RecordedNothing(), static_in, backend.model(static_in)[0])

    monkeypatch.setattr(backend, "_capture", capture)
    x = torch.rand(1, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(x)
    assert "differs from the eager model" in caplog.records[-1].getMessage()
    assert backend.graphs[((1, 3, 64, 64), torch.float32)] is None
    other = torch.rand(1, 3, 64, 64)
    assert torch.allclose(out, backend.model(x)[0]) and torch.allclose(backend(other), backend.model(other)[0])


def test_at_most_max_graphs_shapes_are_kept(model, monkeypatch):
    backend = _backend(model)
    monkeypatch.setattr(cuda_graph, "MAX_GRAPHS", 2)
    monkeypatch.setattr(backend, "_capture", lambda x: _StandIn(lambda y: backend.model(y)[0].float()))
    for side in (32, 64, 96):
        backend(torch.rand(1, 3, side, side))
    assert [key[0][2] for key in backend.graphs] == [64, 96]


CAPTURED = ["yolov5n.yaml", "yolov8n.yaml", "yolo26n.yaml", "yolov8n-swinv2.yaml", "rtdetr-l.yaml"]


@pytest.mark.parametrize("name", CAPTURED)
def test_an_eval_forward_reads_nothing_on_the_host(name):
    """What capture needs: once warm (grids and masks cached), an eval forward makes no op that waits for the
    device (RT-DETR's decoder read its stride with ``float()``: every capture of it failed)."""
    from tests.device_syncs import DeviceSyncs

    torch.manual_seed(0)
    model = DetectionModel(name, nc=3).eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        model(x)
        with DeviceSyncs() as syncs:
            model(x)
    assert syncs.reads == []
