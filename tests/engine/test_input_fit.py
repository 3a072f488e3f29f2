"""Stretched input: RT-DETR's images resized to the ``imgsz`` square without keeping their aspect ratio, in
training, validation, prediction, explain and exported files, as the ``ultralytics`` package feeds RT-DETR
(``RTDETRDataset.load_image``, ``RTDETRPredictor.scale_fill``); the YOLOs keep the letterbox."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch

from yolotr.data.dataset import DetectionDataset
from yolotr.data.sources import ImageRecord
from yolotr.data.transforms import letterbox, stretch
from yolotr.engine.exporter import export_model
from yolotr.engine.head_mode import input_fit
from yolotr.engine.onnx_model import OnnxModel
from yolotr.engine.predictor import Predictor
from yolotr.errors import CheckpointError
from yolotr.models.detection import DetectionModel
from yolotr.ops.boxes import scale_boxes

from .test_rtdetr_engine import TINY_RTDETR

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BOX = (20.0, 10.0, 70.0, 30.0)  # xyxy in the 60 x 100 photo


def _photo(h: int = 60, w: int = 100, seed: int = 0) -> np.ndarray:
    """A smooth ``(h, w, 3)`` uint8 BGR image with a white block at :data:`BOX`."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 200, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    image[y1:y2, x1:x2] = 255
    return image


def _record(tmp_path, h: int = 60, w: int = 100) -> ImageRecord:
    path = tmp_path / f"photo_{h}x{w}.png"
    cv2.imwrite(str(path), _photo(h, w))
    return ImageRecord(str(path), h, w, np.array([BOX], np.float32), np.array([1]))


@pytest.fixture(scope="module")
def tiny_rtdetr() -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(TINY_RTDETR, nc=3).eval()


def test_stretch_scales_each_axis_and_boxes_map_back():
    image = _photo()
    out, ratio, pad = stretch(image, 64)
    assert out.shape == (64, 64, 3) and ratio == (0.64, 64 / 60) and pad == (0.0, 0.0)
    ys, xs = np.nonzero(out[..., 0] == 255)  # the block, stretched: 0.64 x wide, 1.07 x high
    assert abs(xs.min() - BOX[0] * 0.64) <= 1 and abs(xs.max() + 1 - BOX[2] * 0.64) <= 1
    assert abs(ys.min() - BOX[1] * 64 / 60) <= 1 and abs(ys.max() + 1 - BOX[3] * 64 / 60) <= 1
    in_input = torch.tensor([[BOX[0] * 0.64, BOX[1] * 64 / 60, BOX[2] * 0.64, BOX[3] * 64 / 60]])
    back = scale_boxes((64, 64), in_input.clone(), (60, 100), stretched=True)
    torch.testing.assert_close(back, torch.tensor([BOX]))
    letterboxed_back = scale_boxes((64, 64), in_input.clone(), (60, 100))  # the letterbox rule reads it otherwise
    assert not torch.allclose(letterboxed_back, torch.tensor([BOX]), atol=1.0)
    assert stretch(image, (32, 96))[0].shape == (32, 96, 3)


def test_stretched_dataset_item_keeps_the_normalised_boxes(tmp_path):
    record = _record(tmp_path)
    image, labels, _, shapes = DetectionDataset([record], imgsz=64, stretch=True)[0]
    assert image.shape == (3, 64, 64)
    cx, cy, w, h = (BOX[0] + BOX[2]) / 200, (BOX[1] + BOX[3]) / 120, (BOX[2] - BOX[0]) / 100, (BOX[3] - BOX[1]) / 60
    torch.testing.assert_close(labels[0, 1:], torch.tensor([1.0, cx, cy, w, h]))
    assert shapes == ((60, 100), ((64 / 60, 0.64), (0.0, 0.0)))  # one gain per axis, no padding
    letterboxed = DetectionDataset([record], imgsz=64)[0]
    assert letterboxed[3][1][1] != (0.0, 0.0)  # the YOLOs' letterbox pads the short side
    augmented = DetectionDataset([record], imgsz=64, augment=True, stretch=True)
    assert augmented.load_image(0)[0].shape[:2] == (64, 64)  # the mosaic's tiles are stretched too
    with pytest.raises(ValueError, match="rect"):
        DetectionDataset([record], imgsz=64, stretch=True, rect=True)


def test_predictor_feeds_rtdetr_the_stretched_square_and_scales_boxes_per_axis(tiny_rtdetr):
    """A 60 x 100 photo reaches RT-DETR as the 64 x 64 square whatever ``rect`` says; its detections are the
    head's own on that square, x scaled by 100 / 64 and y by 60 / 64; a YOLO gets the letterboxed rectangle."""
    image = _photo()[..., ::-1].copy()  # the predictor takes RGB
    predictor = Predictor(tiny_rtdetr, ["a", "b", "c"], imgsz=64, rect=True, conf=0.0, max_det=30)
    (det,), seen = predictor.predict_images([image])
    assert seen == (64, 64) and len(det) == 30
    x = torch.from_numpy(np.ascontiguousarray(stretch(image, 64)[0].transpose(2, 0, 1)))[None].float() / 255
    with torch.no_grad():
        want = tiny_rtdetr(x)[0][0].clone()
    want[:, [0, 2]] = (want[:, [0, 2]] * 100 / 64).clamp(0, 100)
    want[:, [1, 3]] = (want[:, [1, 3]] * 60 / 64).clamp(0, 60)
    order = lambda d: d[torch.argsort(d[:, 4], descending=True, stable=True)]  # noqa: E731
    torch.testing.assert_close(order(det)[:, 4:], order(want)[:30, 4:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(det[:, :4].sum(), want[:30, :4].sum(), atol=1e-2, rtol=1e-4)
    yolo = DetectionModel("yolov5n.yaml", nc=3).eval()
    assert input_fit(yolo) == "letterbox"
    assert Predictor(yolo, ["a", "b", "c"], imgsz=64, rect=True).predict_images([image])[1] == (64, 64)
    assert Predictor(yolo, ["a", "b", "c"], imgsz=96, rect=True).predict_images([image])[1] == (64, 96)


def test_exported_file_says_how_to_fit_its_input(tiny_rtdetr, tmp_path):
    path = tmp_path / "tiny-rtdetr.onnx"
    export_model(tiny_rtdetr, "onnx", path, imgsz=64, dynamic=False)
    model = OnnxModel(path)
    assert model.input_fit == "stretch" and input_fit(model) == "stretch"
    proto = onnx.load(str(path))
    for value, expected in ((None, "letterbox"), ("squash", None)):
        entries = [p for p in proto.metadata_props if p.key != "fit"]
        del proto.metadata_props[:]
        proto.metadata_props.extend(entries)
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = "fit", value
        edited = tmp_path / f"fit-{value}.onnx"
        onnx.save(proto, str(edited))
        if expected is None:
            with pytest.raises(CheckpointError, match="squash"):
                OnnxModel(edited)
        else:
            assert OnnxModel(edited).input_fit == expected


def test_stretch_is_the_package_rtdetr_preprocessing(tmp_path):
    """Pixel for pixel the package's predictor transform (``LetterBox(scale_fill=True)``) and its RT-DETR dataset
    item (``RTDETRDataset``, no augmentation): image and normalised boxes."""
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics.data.augment import LetterBox
    from ultralytics.models.rtdetr.val import RTDETRDataset
    from ultralytics.utils import DEFAULT_CFG

    image = _photo()
    theirs = LetterBox((64, 64), auto=False, scale_fill=True)(image=image.copy())
    assert np.array_equal(stretch(image, 64)[0], theirs)
    assert not np.array_equal(letterbox(image, 64, auto=False)[0], theirs)

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "photo.png"), image)
    cx, cy, w, h = (BOX[0] + BOX[2]) / 200, (BOX[1] + BOX[3]) / 120, (BOX[2] - BOX[0]) / 100, (BOX[3] - BOX[1]) / 60
    (root / "labels" / "photo.txt").write_text(f"1 {cx} {cy} {w} {h}\n")
    package = RTDETRDataset(
        img_path=str(root / "images"), imgsz=64, augment=False, hyp=DEFAULT_CFG, rect=False, batch_size=1,
        data={"names": {0: "a", 1: "b", 2: "c"}, "channels": 3}, cache=False,
    )  # fmt: skip
    item = package[0]
    ours = DetectionDataset([_record(tmp_path)], imgsz=64, stretch=True)[0]
    assert torch.equal(ours[0], item["img"])
    torch.testing.assert_close(ours[1][:, 2:], item["bboxes"].float(), atol=1e-6, rtol=0)


def test_tensorboard_draws_the_detections_predict_gives(tiny_rtdetr, tmp_path, monkeypatch):
    """The validation images of TensorBoard show RT-DETR's own detections on the stretched square (no NMS over
    its ``(B, k, 6)`` output), the boxes ``predict`` gives at conf 0.25."""
    from yolotr.data.images import read_image
    from yolotr.engine import tensorboard

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), _photo())
    model = DetectionModel(TINY_RTDETR, nc=3).eval()
    model.load_state_dict(tiny_rtdetr.state_dict())
    with torch.no_grad():
        model.model[-1].dec_score_head[-1].bias += 3.0  # every query scores above 0.25
    drawn = []
    monkeypatch.setattr("yolotr.plotting.draw_boxes", lambda image, boxes, *rest: drawn.append(boxes) or image)
    tensorboard.draw_predictions(model, [str(path)], 64, ["a", "b", "c"])
    (det,), _ = Predictor(model, ["a", "b", "c"], imgsz=64, conf=0.25, max_det=300).predict_images([read_image(path)])
    assert len(det) == 30 and drawn[0].shape == (30, 4)  # the head's 30 queries: NMS would have thinned them
    np.testing.assert_allclose(np.sort(drawn[0], 0), np.sort(det[:, :4].numpy(), 0), atol=1e-3)


@pytest.mark.parametrize("photo", ["bus.jpg", "zidane.jpg"])
def test_rtdetr_l_predicts_what_the_package_predicts_on_photos(photo):
    """The package's rtdetr-l checkpoint on a photo that is not square: ``YOLO.predict`` gives the package's
    ``RTDETR.predict`` detections (the top 300 at conf 0), as sets: scores to 1e-4, boxes to 0.05 px once the
    package's are clipped to the photo as ours are."""
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from ultralytics import RTDETR

    from tests.conftest import assert_same_detections, shared_path
    from yolotr import YOLO

    weights, image = shared_path("reference", "ultralytics-next", "rtdetr-l_rule.pt"), shared_path("images", photo)
    ours = YOLO(str(weights)).predict(str(image), conf=0.0, max_det=300, backend="torch")[0]
    theirs = RTDETR(str(weights)).predict(str(image), conf=0.0, max_det=300, verbose=False)[0]
    assert ours.input_shape == (640, 640) and len(ours.boxes.conf) == 300
    assert_same_detections(ours, theirs, box_px=0.05, score_atol=1e-4)


@pytest.mark.parametrize(("max_det", "some_classes"), [(300, False), (40, False), (300, True)])
def test_rtdetr_of_fewer_queries_gives_the_packages_rows(max_det, some_classes):
    """A decoder of 100 queries (``bench/rtdetr-l-w25.yaml``), the package's random weights loaded by name: the
    package keeps ``num_queries`` (query, class) pairs and cuts them to ``max_det`` after ``conf`` and
    ``classes``; yolotr gave up to 300 pairs (each query again with its other classes)."""
    pytest.importorskip("ultralytics", reason="the ultralytics package is a bench extra (pip install -e .[bench])")
    from pathlib import Path

    from ultralytics import RTDETR

    from tests.conftest import assert_same_detections, shared_path
    from yolotr import YOLO

    cfg, image = str(Path(__file__).parents[2] / "bench" / "rtdetr-l-w25.yaml"), shared_path("images", "bus.jpg")
    torch.manual_seed(0)
    package = RTDETR(cfg)
    ours = YOLO(cfg)
    ours.model.load_state_dict(package.model.state_dict())
    settings = dict(imgsz=128, conf=0.0, max_det=max_det)
    if some_classes:  # two classes the top rows hold (the weights are random)
        settings["classes"] = package.predict(str(image), verbose=False, **settings)[0].boxes.cls[:2].int().tolist()
    got = ours.predict(str(image), backend="torch", **settings)[0]
    expected = package.predict(str(image), verbose=False, **settings)[0]
    assert len(got.boxes.conf) == len(expected.boxes.conf) <= min(max_det, 100)
    assert_same_detections(got, expected, box_px=0.05, score_atol=1e-4)
