"""What a user of ``YOLO.predict`` meets: sizes, sources, settings, ``Results`` and the files it writes."""

from __future__ import annotations

import json
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import shared_path, zeroed_copy
from yolotr import YOLO
from yolotr.data.images import iter_frames
from yolotr.data.imgsz import check_imgsz
from yolotr.data.transforms import letterbox
from yolotr.engine.exporter import default_export_path
from yolotr.engine.runs import select_device
from yolotr.errors import CheckpointError, ConfigError, DataError
from yolotr.models.loading import load_model


@pytest.fixture(scope="module")
def official():
    return YOLO(shared_path("weights", "yolov5n.pt"), verbose=False)


@pytest.fixture(scope="module")
def bus():
    return shared_path("images", "bus.jpg")


def predict(model, source, **kw):
    kw.setdefault("imgsz", 320)
    kw.setdefault("backend", "torch")
    return model.predict(source, verbose=False, **kw)


def test_check_imgsz_rounds_up_to_the_stride_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        assert check_imgsz(320, 32) == 320
        assert not caplog.text
        assert check_imgsz(100, 32) == 128
        assert check_imgsz((100, 200), 64) == (128, 256)
        assert check_imgsz([96], 32) == 96
        assert check_imgsz(16, 32) == 32
    assert "imgsz 100 is not a multiple of the model's largest stride 32: using 128" in caplog.text


@pytest.mark.parametrize("bad", [0, -64, 12.5, True, "128", None, (1, 2, 3)])
def test_check_imgsz_refuses_what_is_not_a_size(bad):
    with pytest.raises(ConfigError, match="imgsz"):
        check_imgsz(bad, 32)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_at_a_size_off_the_stride_uses_the_next_multiple(official, bus, backend, caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        odd = predict(official, bus, imgsz=333, backend=backend)[0]
    assert "using 352" in caplog.text
    even = predict(official, bus, imgsz=352, backend=backend)[0]
    assert odd.input_shape == even.input_shape == (352, 288)
    assert torch.equal(odd.boxes.data, even.boxes.data)


def test_a_folder_skips_an_unreadable_file_with_a_warning(official, bus, tmp_path, caplog):
    shutil.copy(bus, tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    shutil.copy(bus, tmp_path / "c.jpg")
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        results = predict(official, tmp_path)
    assert [r.path for r in results] == [str(tmp_path / "a.jpg"), str(tmp_path / "c.jpg")]
    assert "b.jpg: truncated JPEG (no end marker)" in caplog.text and "skipped" in caplog.text
    (tmp_path / "a.jpg").write_text("text")
    (tmp_path / "c.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of its 3 files"):
        predict(official, tmp_path)


def test_a_single_unreadable_file_is_an_error(official, tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match="x.jpg: not a readable image"):
        predict(official, tmp_path / "x.jpg")


def test_in_memory_images_give_the_file_s_detections(official, bus):
    from PIL import Image

    from_file = predict(official, bus)[0]
    bgr = cv2.imread(str(bus))
    from_array, from_pil, again = predict(official, [bgr, Image.open(bus), str(bus)])
    # a PIL image opened from a file keeps its name, as the package's Results.path
    assert (from_array.path, from_pil.path, again.path) == ("image0.jpg", str(bus), str(bus))
    assert torch.equal(from_array.boxes.data, from_file.boxes.data)
    assert torch.equal(again.boxes.data, from_file.boxes.data)
    assert len(from_pil) == len(from_file)
    grey = predict(official, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[0]
    assert grey.orig_img.shape == bgr.shape


@pytest.mark.parametrize(
    "source, match",
    [(np.zeros((3, 8, 8), np.float32), "must be uint8"), (np.zeros((0, 8, 3), np.uint8), "empty image"), ([], "empty")],
)
def test_bad_in_memory_sources_are_named(official, source, match):
    with pytest.raises(DataError, match=match):
        predict(official, source)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"conf": 2}, "conf must be a number between 0 and 1"),
        ({"conf": float("nan")}, "conf"),
        ({"iou": -0.1}, "iou"),
        ({"max_det": 0}, "max_det must be a whole number >= 1"),
        ({"max_det": "x"}, "max_det must be a whole number >= 1, got .x."),
        ({"batch": 0}, "batch"),
        ({"classes": ["person"]}, "classes must be class ids"),
    ],
)
def test_settings_out_of_range_are_config_errors(official, bus, settings, match):
    with pytest.raises(ConfigError, match=match):
        predict(official, bus, **settings)


def test_classes_the_model_lacks_warn_and_one_id_may_be_bare(official, bus, caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        none = predict(official, bus, classes=[100])[0]
    assert len(none) == 0 and "classes [100]" in caplog.text
    buses = predict(official, bus, classes=5)[0]
    assert len(buses) >= 1 and set(buses.boxes.cls.tolist()) == {5.0}


def test_agnostic_nms_keeps_one_box_per_place(official, bus):
    loose = predict(official, bus, conf=0.05)[0]
    agnostic = predict(official, bus, conf=0.05, agnostic_nms=True)[0]
    assert len(agnostic) < len(loose)
    iou = torchvision.ops.box_iou(agnostic.boxes.xyxy, agnostic.boxes.xyxy)
    assert float((iou - torch.eye(len(agnostic))).max()) <= 0.45 + 1e-6


def test_results_api(official, bus, tmp_path, monkeypatch):
    result = predict(official, bus)[0]
    h, w = result.orig_shape
    assert (h, w) == (1080, 810) and result.input_shape == (320, 256) and result.frame is None
    parsed = json.loads(result.to_json())
    assert parsed == result.summary() and parsed[0]["name"] == "person"
    boxes = result.boxes
    x1, y1, x2, y2 = boxes.xyxy[0].tolist()
    assert boxes.xywh[0].tolist() == pytest.approx([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    assert boxes.xyxyn[0].tolist() == pytest.approx([x1 / w, y1 / h, x2 / w, y2 / h])
    assert boxes.xywhn[0].tolist() == pytest.approx(
        [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
    )
    assert float(boxes.xyxyn.max()) <= 1.0
    confident = boxes[boxes.conf > 0.5]
    assert len(confident) == int((boxes.conf > 0.5).sum()) and len(boxes[0]) == 1
    as_numpy = boxes.cpu().numpy()  # the package's idiom: Boxes whose views are NumPy arrays
    assert isinstance(as_numpy.xyxy, np.ndarray) and as_numpy.data.shape == (len(boxes), 6)
    for view in ("xyxy", "xywh", "xyxyn", "xywhn", "conf", "cls"):
        np.testing.assert_allclose(getattr(as_numpy, view), getattr(boxes, view).numpy(), rtol=1e-6)
    assert isinstance(as_numpy.to(torch.float64).data, torch.Tensor) and as_numpy[0].shape == (1, 6)
    from yolotr.engine.results import Boxes

    whole = Boxes(np.array([[1, 2, 5, 7, 1, 0]]), (10, 10)).xywh  # integer boxes: centres are not cut down
    assert whole.dtype.kind == "f" and whole.tolist() == [[3.0, 4.5, 4.0, 5.0]]
    first = result[0]  # Results index and iterate by detection, as the package's
    assert len(first) == 1 and first.boxes.data.tolist() == boxes.data[:1].tolist() and first.path == result.path
    assert [len(d) for d in result] == [1] * len(result) and len(result[result.boxes.conf > 0.5]) == len(confident)
    assert result.numpy().verbose() == result.verbose() and result.cpu().plot().shape == result.plot().shape
    assert "detections" in repr(result) and len(repr(result)) < 200
    monkeypatch.chdir(tmp_path)
    saved = result.save()
    assert saved.name == "results_bus.jpg" and cv2.imread(str(tmp_path / saved)).shape == (1080, 810, 3)


def test_predict_save_writes_like_the_cli(official, bus, tmp_path):
    project = tmp_path / "runs"
    first = predict(official, bus, save=True, save_txt=True, project=project)
    predict(official, bus, save_json=True, project=project)
    images = project / "exp"
    assert (images / "bus.jpg").is_file() and (images / "labels" / "bus.txt").is_file()
    written = json.loads((images / "predictions.json").read_text())
    assert written[0]["detections"] == first[0].summary()
    coco = json.loads((project / "exp2" / "predictions_coco.json").read_text())
    assert len(coco) == len(first[0]) and not (project / "exp2" / "bus.jpg").exists()


def test_a_checkpoint_ignores_nc_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        model = load_model(shared_path("weights", "yolov5n.pt"), nc=3)
    assert model.nc == 80 and "nc=3 ignored: the checkpoint has 80 classes" in caplog.text


def test_damaged_checkpoint_bytes_are_refused(tmp_path):
    damaged = zeroed_copy(shared_path("weights", "yolov5n.pt"), tmp_path / "damaged.pt", 1000)
    with pytest.raises(CheckpointError, match="damaged.pt: damaged checkpoint: its member .* fails its CRC-32 check"):
        load_model(damaged)


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_model_source_of_the_wrong_kind(bad):
    with pytest.raises(ConfigError, match="model source"):
        YOLO(bad)


def test_a_model_from_a_dict():
    cfg = {
        "nc": 2,
        "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
        "head": [[[1, 2], 1, "Detect", ["nc", "anchors"]]],
    }
    assert YOLO(cfg, verbose=False).model.nc == 2
    cfg["head"] = [[[2], 1, "Detect", ["nc", "anchors"]]]
    with pytest.raises(ConfigError, match="Detect has 2 anchor levels but 1 input"):
        YOLO(cfg)


def test_device_strings():
    assert select_device("").type == "cpu" or torch.cuda.is_available()
    assert select_device("CPU") == torch.device("cpu")
    for bad in ("gpu", "mps", "cpu,cuda", "cuda:x"):
        with pytest.raises(ConfigError, match="use auto, cpu, cuda, cuda:N or a GPU index"):
            select_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda:0' asked for, but CUDA is not available"):
            select_device("0")


def test_a_cuda_index_past_the_machines_gpus_is_refused_and_a_ddp_rank_sets_its_gpu(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert select_device("1") == torch.device("cuda", 1) and select_device("cuda") == torch.device("cuda")
    with pytest.raises(ConfigError, match=r"device 'cuda:2': this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        select_device("2")
    assert current == []  # one process: the current device stays as it is
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1) and current == [1]


def test_letterbox_keeps_a_row_of_a_very_wide_image():
    image = np.full((3, 5000, 3), 200, np.uint8)
    boxed, (r, _), _ = letterbox(image, 640, auto=True, stride=32)
    assert boxed.shape == (32, 640, 3) and r == pytest.approx(640 / 5000)


def test_default_export_path(tmp_path):
    weights = tmp_path / "weights" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    assert default_export_path(weights, "onnx") == tmp_path / "weights" / "best.onnx"
    assert default_export_path("yolov5n-swinv2.yaml", "torchscript").name == "yolov5n-swinv2.torchscript"
    assert default_export_path({"nc": 1}, "onnx").name == "model.onnx"


def test_iter_frames_refuses_an_empty_list():
    with pytest.raises(DataError, match="empty list"):
        iter_frames([])


def test_an_exported_onnx_file_predicts_through_yolo(official, bus, tmp_path):
    path = official.export("onnx", tmp_path / "v5n.onnx", imgsz=320, dynamic_size=True, verbose=False).path
    onnx = YOLO(path, verbose=False)
    assert onnx.is_onnx and onnx.names == official.names and "nc=80" in repr(onnx)
    got, want = predict(onnx, bus)[0], predict(official, bus, backend="onnx")[0]
    assert torch.allclose(got.boxes.data, want.boxes.data, atol=1e-3)
    with pytest.raises(ConfigError, match="an exported model can only predict; validation needs"):
        onnx.val(data="shapes")


@pytest.mark.parametrize("settings, match", [({"conf": 2}, "conf must be"), ({"iou": -1}, "iou must be")])
def test_val_thresholds_out_of_range(official, settings, match):
    with pytest.raises(ConfigError, match=match):
        official.val(data="shapes", imgsz=64, **settings)


@pytest.mark.parametrize("columns", [5 + 3, 4 + 3], ids=["objectness", "anchor-free"])
def test_candidates_on_the_device_equal_those_on_the_host(columns):
    """The accelerator's path (torch on ``decoded``'s device) keeps the rows NumPy keeps on the CPU."""
    from yolotr.engine.predictor import candidates

    decoded = torch.rand(2, 500, columns, generator=torch.Generator().manual_seed(columns))
    host, device = candidates(decoded, 0.9, 3, on_host=True), candidates(decoded, 0.9, 3, on_host=False)
    assert [len(rows) for rows in device] == [len(rows) for rows in host] and 0 < len(host[0]) < 500
    assert all(torch.equal(d, h) for d, h in zip(device, host))


def test_results_have_the_packages_other_fields_to_csv_and_update(official, bus):
    """Code written for the package's Results ran into AttributeError on ``r.masks``, ``r.to_csv()`` and
    ``r.update(boxes=...)``."""
    result = official.predict(bus, verbose=False)[0]
    assert (result.masks, result.keypoints, result.probs, result.obb) == (None, None, None, None)
    lines = result.to_csv().splitlines()
    assert lines[0] == "name,class,confidence,x1,y1,x2,y2" and len(lines) == len(result) + 1
    first = lines[1].split(",")
    assert first[0] == result.names[int(result.boxes.cls[0])] and float(first[2]) == pytest.approx(
        float(result.boxes.conf[0]), abs=1e-5
    )
    h, w = result.orig_shape
    result.update(boxes=torch.tensor([[-10.0, 5.0, w + 50.0, 20.0, 0.9, 5.0]]))
    assert len(result) == 1 and result.boxes.xyxy.tolist() == [[0.0, 5.0, float(w), 20.0]]
    with pytest.raises(ConfigError, match="masks= is a field of another task"):
        result.update(masks=torch.zeros(1, 4, 4))
