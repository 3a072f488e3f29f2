"""Prediction backends: the ONNX fast path gives the boxes of PyTorch and of the official YOLOv5 code,
set-up happens once per set of weights, and a change of weights prepares again."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from tests.head_inputs import calibrate_batch_norm
from tests.test_cli_errors import run_cli
from yolotr import YOLO
from yolotr.engine import exporter, fast_backend
from yolotr.engine.fast_backend import AutoCpuBackend, OnnxBackend, TorchBackend, prepare_backend, weights_key
from yolotr.errors import YolotrError
from yolotr.models.detection import DetectionModel


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """``$YOLOTR_CACHE`` in a temporary folder for the whole module (exports land there)."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("YOLOTR_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def official(cache):
    return YOLO(shared_path("weights", "yolov5n.pt"), verbose=False)


@pytest.fixture
def exports(monkeypatch):
    """Counts calls of ``export_model`` (the ONNX backend's one-time set-up)."""
    calls = []
    original = exporter.export_model

    def counting(*args, **kwargs):
        calls.append(kwargs.get("imgsz"))
        return original(*args, **kwargs)

    monkeypatch.setattr(exporter, "export_model", counting)
    return calls


def _tiny(seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel("yolov5n.yaml", nc=2)
    model.names = ["a", "b"]
    return model


def test_auto_is_onnx_on_cpu_once_a_shape_repeats_and_gives_the_torch_boxes(official):
    image = shared_path("images", "zidane.jpg")
    for _ in range(AutoCpuBackend.TORCH_BATCHES):
        official.predict(image, imgsz=320)
    auto = official.prepared_backend("auto")
    assert isinstance(auto, AutoCpuBackend) and auto.onnx is None  # the first batches of a shape: PyTorch
    fast = official.predict(image, imgsz=320)[0].boxes.data
    assert auto.onnx is not None and list(auto.onnx.sessions) == [(1, 192, 320)]
    plain = official.predict(image, imgsz=320, backend="torch")[0].boxes.data
    assert official.prepared_backend("torch").name == "torch"
    assert len(fast) > 0 and fast.shape == plain.shape
    assert torch.allclose(fast[:, :4], plain[:, :4], atol=0.05)
    assert torch.allclose(fast[:, 4], plain[:, 4], atol=1e-4)
    assert torch.equal(fast[:, 5], plain[:, 5])


@pytest.mark.parametrize("backend", ["onnx", "torch"])
@pytest.mark.parametrize("mode", ["square640", "rect640"])
@pytest.mark.parametrize("image", ["bus", "zidane"])
def test_backends_match_official_reference_detections(official, backend, mode, image):
    ref = json.loads(shared_path("reference", "yolov5", "reference_detections.json").read_text())
    expected = ref["images"][image][mode]["detections"]
    path = shared_path("images", f"{image}.jpg")
    got = official.predict(path, imgsz=640, rect=mode == "rect640", max_det=1000, backend=backend)[0]
    assert official.prepared_backend(backend).name == backend
    rows = got.boxes.data.tolist()
    assert len(rows) == len(expected)
    for g, e in zip(rows, expected):
        assert max(abs(a - b) for a, b in zip(g[:4], e[:4])) <= 1.0
        assert abs(g[4] - e[4]) <= 1e-3
        assert int(g[5]) == e[5]


def test_second_call_reuses_the_prepared_backend(cache, exports, monkeypatch, tmp_path):
    prepared = []
    original = fast_backend.prepare_backend

    def counting(*args, **kwargs):
        prepared.append(args[1] if len(args) > 1 else kwargs.get("backend"))
        return original(*args, **kwargs)

    monkeypatch.setattr(fast_backend, "prepare_backend", counting)
    yolo = YOLO("yolov5n.yaml", nc=2, verbose=False)
    image = np.full((96, 128, 3), 114, np.uint8)
    image[20:70, 30:90] = 255
    wide, low = tmp_path / "wide.png", tmp_path / "low.png"
    cv2.imwrite(str(wide), image)
    cv2.imwrite(str(low), image[:64])
    monkeypatch.setattr(AutoCpuBackend, "TORCH_BATCHES", 1)
    for _ in range(3):
        yolo.predict(wide, imgsz=128)
    backend = yolo.prepared_backend("auto")
    assert prepared == ["auto"] and len(exports) == 1
    assert list(backend.onnx.sessions) == [(1, 96, 128)]  # one session for the one input shape, reused
    yolo.predict(low, imgsz=128)  # a new shape: PyTorch first, then a session of the same file, no new export
    assert (1, 64, 128) not in backend.onnx.sessions
    yolo.predict(low, imgsz=128)
    assert len(exports) == 1 and (1, 64, 128) in backend.onnx.sessions and backend is yolo.prepared_backend("auto")


def test_auto_runs_one_off_sizes_in_torch_without_an_export(cache, exports):
    """A photo, or a folder of photos of many sizes: no export and no session, PyTorch's outputs exactly."""
    model = _tiny(seed=8)
    auto, plain = prepare_backend(model, "auto"), TorchBackend(model)
    rng = np.random.default_rng(0)
    for h, w in ((64, 96), (96, 64), (64, 128), (128, 64)):
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)]
        assert torch.equal(auto(auto.to_input(images)), plain(plain.to_input(images)))
    assert exports == [] and auto.onnx is None


def test_a_session_evicted_and_built_again_is_not_checked_again(cache, monkeypatch):
    backend = OnnxBackend(_tiny(seed=9))
    backend.max_sessions = 1
    checks = []
    original = backend._agrees
    monkeypatch.setattr(backend, "_agrees", lambda out, x: checks.append(x.shape) or original(out, x))
    for h in (64, 96, 64, 96):
        backend(backend.to_input([np.zeros((h, 64, 3), np.uint8)]))
    assert checks == [(1, 3, 64, 64), (1, 3, 96, 64)] and list(backend.sessions) == [(1, 96, 64)]


def test_changed_weights_prepare_again(cache, exports):
    yolo = YOLO("yolov5n.yaml", nc=2, verbose=False)
    first = yolo.prepared_backend("torch")
    assert yolo.prepared_backend("torch") is first
    with torch.no_grad():
        yolo.model.model[0].conv.weight.mul_(0.5)  # an in-place update, as an optimizer step makes
    second = yolo.prepared_backend("torch")
    assert second is not first
    yolo.model = DetectionModel("yolov5n.yaml", nc=2)  # what train() does with the best weights
    assert yolo.prepared_backend("torch") is not second
    onnx_first = yolo.prepared_backend("onnx")
    yolo.fuse()
    onnx_second = yolo.prepared_backend("onnx")
    assert onnx_second is not onnx_first and onnx_second.key != onnx_first.key
    assert len(exports) == 2


def test_same_weights_share_one_exported_file(cache, exports):
    a = OnnxBackend(_tiny(seed=1))
    b = OnnxBackend(_tiny(seed=1))  # another object, the same weights
    assert a.path == b.path and a.path.parent == cache / "onnx" and a.path.is_file()
    assert len(exports) == 1  # the second backend found the file


def test_unreadable_cached_file_is_exported_again(cache, exports, caplog):
    model = _tiny(seed=6)
    path = OnnxBackend(model).path
    path.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        backend = OnnxBackend(model)
    assert f"{path} is unreadable" in caplog.text and len(exports) == 2
    assert backend(backend.to_input([np.zeros((64, 64, 3), np.uint8)])).shape == (1, 252, 7)


def test_auto_falls_back_to_torch_when_the_cache_is_not_writable(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("YOLOTR_CACHE", str(blocker))
    monkeypatch.setattr(AutoCpuBackend, "TORCH_BATCHES", 0)
    backend = prepare_backend(_tiny(seed=7), "auto")
    images = [np.zeros((64, 64, 3), np.uint8)]
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(backend.to_input(images))
    assert backend.export_failed and backend.onnx is None
    assert torch.equal(out, backend.torch(backend.torch.to_input(images)))
    assert "backend 'onnx': exporting the model failed ([Errno 20] Not a directory" in caplog.text
    assert "; predicting with the torch backend" in caplog.text
    with pytest.raises(YolotrError, match=r"backend 'onnx': exporting the model failed \(\[Errno 20\]"):
        prepare_backend(_tiny(seed=7), "onnx")


def test_onnx_output_equals_torch_at_several_shapes_and_batches(cache):
    model = calibrate_batch_norm(_tiny(seed=3), torch.rand(2, 3, 128, 128), min_var=0.5)  # features of order 1
    onnx, torch_backend = OnnxBackend(model), TorchBackend(model)
    rng = np.random.default_rng(0)
    for b, h, w in ((1, 64, 96), (2, 96, 64), (1, 128, 128)):
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(b)]
        got = onnx(onnx.to_input(images))
        expected = torch_backend(torch_backend.to_input(images))
        assert got.shape == expected.shape == (b, 3 * (h * w // 64 + h * w // 256 + h * w // 1024), 7)
        assert float((got - expected).abs().max()) < 2e-3
    assert not onnx.on_torch


def test_shape_where_onnx_disagrees_runs_in_torch(cache, caplog):
    backend = OnnxBackend(_tiny(seed=4))
    true_reference = backend.reference
    backend.reference = lambda x: true_reference(x) + 100.0  # as if the export had kept its example size
    images = [np.zeros((64, 64, 3), np.uint8)]
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(backend.to_input(images))
    assert backend.on_torch == {(1, 64, 64)}
    assert "at input 64x64 the exported model differs from PyTorch" in caplog.text
    assert torch.allclose(out, true_reference(torch.zeros(1, 3, 64, 64)) + 100.0)


def test_shape_without_a_session_runs_in_torch(cache, caplog, monkeypatch):
    """A file onnxruntime cannot build a session of at some shape (a graph that keeps an example size, in
    onnxruntime's shape inference): that shape runs on PyTorch with a warning, not a traceback."""
    backend = OnnxBackend(_tiny(seed=6))

    def refuse(shape):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Node (/model.28/Mul) Incompatible dimensions\nmore")

    monkeypatch.setattr(backend, "_session", refuse)
    x = backend.to_input([np.zeros((64, 96, 3), np.uint8)])
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        out = backend(x)
    assert backend.on_torch == {(1, 64, 96)}
    assert "no session for input (1, 64, 96) ([ONNXRuntimeError] : 1 : FAIL : Node (/model.28/Mul)" in caplog.text
    assert torch.equal(out, backend.reference(torch.from_numpy(x)))


def test_cached_files_are_per_version_of_the_code(monkeypatch):
    """A file exported by other code (an older exporter, an edited module) is not reused: the key holds a
    fingerprint of yolotr's sources."""
    model = _tiny(seed=7)
    key = weights_key(model)
    monkeypatch.setattr(fast_backend, "code_fingerprint", lambda: "another version")
    assert weights_key(model) != key


def test_bad_backend_names_and_models():
    model = _tiny()
    with pytest.raises(YolotrError, match="unknown predict backend 'tensorrt'; choose one of auto, torch, onnx"):
        prepare_backend(model, "tensorrt")
    with pytest.raises(
        YolotrError, match=r"backend 'onnx' needs a float32 model on the CPU \(this one has torch.float64"
    ):
        prepare_backend(model.double(), "onnx")
    assert prepare_backend(model, "auto").name == "torch"  # float64: auto stays in PyTorch


def test_weights_key_follows_weights_not_objects():
    a, b = _tiny(seed=5), _tiny(seed=5)
    assert weights_key(a) == weights_key(b)
    with torch.no_grad():
        b.model[-1].m[0].bias[0] += 1e-3
    assert weights_key(a) != weights_key(b)


def test_cli_backends_give_the_same_boxes(cache, tmp_path):
    image = shared_path("images", "bus.jpg")
    weights = shared_path("weights", "yolov5n.pt")
    boxes = {}
    for backend in ("torch", "onnx"):
        proc = run_cli(
            "predict", "--model", weights, "--source", image, "--imgsz", "320", "--backend", backend,
            "--save", "--project", tmp_path, "--name", backend, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        detections = json.loads((tmp_path / backend / "predictions.json").read_text())[0]["detections"]
        boxes[backend] = np.array([[*d["box"], d["confidence"], d["class"]] for d in detections])
    assert len(boxes["torch"]) > 0 and boxes["torch"].shape == boxes["onnx"].shape
    assert np.allclose(boxes["torch"], boxes["onnx"], atol=0.05)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("1", True), ("0", False), ("off", False), (" False ", False)]
)
def test_onnx_spinning_follows_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("YOLOTR_ONNX_SPIN", raising=False)
    else:
        monkeypatch.setenv("YOLOTR_ONNX_SPIN", value)
    assert fast_backend.onnx_spinning() is expected
