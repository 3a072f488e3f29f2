"""What a user who knows the ``ultralytics`` package tries from Python: the run names the model it trained,
``model(source)``, ``stream``, ``device``, ``half``, ``Results`` helpers, ``names`` as a dict, and a
checkpoint that remembers its training image size (issue 26, item 7)."""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml

from tests.conftest import shared_path
from tests.engine.conftest import tiny_train_cfg
from yolotr import YOLO
from yolotr.engine.results import Boxes, Results
from yolotr.errors import ConfigError


@pytest.fixture(scope="module")
def official():
    return YOLO(shared_path("weights", "yolov5n.pt"), verbose=False)


@pytest.fixture(scope="module")
def bus():
    return shared_path("images", "bus.jpg")


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory):
    """``YOLO("yolov8n.yaml", nc=3).train(...)`` at imgsz 64, one epoch: (the YOLO, the train result, log text)."""
    project = tmp_path_factory.mktemp("habits")
    cfg = tiny_train_cfg(tiny_shapes, project, epochs=1, mosaic=0.0)
    del cfg["model"]
    model = YOLO("yolov8n.yaml", nc=3, verbose=False)
    logger = logging.getLogger("yolotr")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        result = model.train(verbose=True, **cfg)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return model, result, "\n".join(records)


def test_args_yaml_and_log_name_the_model_trained_from_python(trained):
    model, result, log = trained
    args = yaml.safe_load(Path(result["save_dir"], "args.yaml").read_text())
    assert args["model"] == "yolov8n.yaml"
    assert "training yolov8n.yaml on" in log and "yolov5n.yaml" not in log
    assert model.model.yaml["scale"] == "n" and "C2f" in str(model.model.yaml["backbone"])


def test_val_answers_to_the_package_names(trained):
    """``metrics.box.map``, ``results_dict`` and ``speed["postprocess"]`` were AttributeError / KeyError."""
    model, _, _ = trained
    metrics = model.val(verbose=False)
    assert metrics.box.map == metrics.map50_95 and metrics.box.map50 == metrics.map50
    assert metrics.results_dict["metrics/mAP50(B)"] == metrics.map50 and metrics.maps.shape == (3,)
    assert set(metrics.speed) == {"preprocess", "inference", "postprocess"}


def test_a_checkpoint_remembers_its_training_imgsz(trained, tmp_path):
    model, result, _ = trained
    best = YOLO(result["save_dir"] + "/weights/best.pt", verbose=False)
    assert best.model.imgsz == 64 and model.model.imgsz == 64
    image = np.full((48, 80, 3), 127, np.uint8)
    (r,) = best.predict(image, backend="torch", verbose=False, rect=False)
    assert r.input_shape == (64, 64)  # the training size, not 640
    (r,) = best.predict(image, imgsz=128, backend="torch", verbose=False, rect=False)
    assert r.input_shape == (128, 128)  # unless told otherwise
    exported = best.export("onnx", tmp_path / "best.onnx", dynamic=False, verbose=False)
    dims = [d.dim_value for d in onnx.load(str(exported.path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    onnx_model = YOLO(exported, verbose=False)  # the package's YOLO(model.export(...)): the result is path-like
    assert onnx_model.is_onnx and onnx_model.source == str(tmp_path / "best.onnx")


@pytest.mark.parametrize(
    ("train_args", "imgsz", "data"),
    [
        ({"imgsz": 160, "data": "DATA"}, 160, "DATA"),
        ({"imgsz": [96, 128], "data": "coco8.yaml"}, (96, 128), None),  # a set of the package's, not a file here
        ({"imgsz": "big"}, None, None),
        ({}, None, None),
    ],
)
def test_a_package_checkpoint_remembers_its_training_imgsz_and_data(train_args, imgsz, data, tiny_shapes, monkeypatch):
    """The package's ``train_args`` were ignored: a checkpoint trained at 160 predicted, validated (mAP 0 where
    the package read 0.30) and exported at 640, and ``val()`` without data had no dataset."""
    import yolotr.models.loading as loading

    read = loading.read_checkpoint
    given = {k: str(tiny_shapes) if v == "DATA" else v for k, v in train_args.items()}
    monkeypatch.setattr(
        loading, "read_checkpoint", lambda path: (read(path)[0], {**read(path)[1], "train_args": given})
    )
    model = YOLO(shared_path("reference", "ultralytics", "yolov8n_rule.pt"), verbose=False)
    assert model.model.imgsz == imgsz
    assert model.model.train_data == (str(tiny_shapes) if data else None)
    (r,) = model.predict(np.full((48, 80, 3), 127, np.uint8), backend="torch", verbose=False, rect=False)
    assert r.input_shape == (imgsz if isinstance(imgsz, tuple) else (imgsz or 640,) * 2)


def test_model_call_predicts_and_names_is_a_dict(official, bus):
    assert official.names[0] == "person" and official.names[5] == "bus" and len(official.names) == 80
    assert isinstance(official.names, dict) and list(official.names) == list(range(80))
    called = official(bus, imgsz=320, backend="torch", verbose=False)
    predicted = official.predict(bus, imgsz=320, backend="torch", verbose=False)
    assert len(called) == 1 and torch.equal(called[0].boxes.data, predicted[0].boxes.data)
    assert len(called[0]) > 0 and called[0].names[5] == "bus"


def test_stream_yields_results_one_frame_at_a_time(official, tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    gen = official.predict(video, stream=True, imgsz=64, backend="torch", verbose=False)
    assert inspect.isgenerator(gen)
    first = next(gen)
    assert isinstance(first, Results) and first.frame == 0
    assert [r.frame for r in gen] == [1, 2, 3]
    saved = official.predict(
        video, stream=True, imgsz=64, backend="torch", save_txt=True, project=tmp_path, name="s", verbose=False
    )
    assert not (tmp_path / "s").exists()  # nothing runs before the generator is consumed
    assert len(list(saved)) == 4
    assert sorted(p.name for p in (tmp_path / "s" / "labels").iterdir()) == [f"clip_{i}.txt" for i in range(1, 5)]


def test_device_and_half(official, bus, caplog):
    cpu = official.predict(bus, imgsz=320, backend="torch", device="cpu", verbose=False)[0]
    assert next(official.model.parameters()).device.type == "cpu"
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        half = official.predict(bus, imgsz=320, backend="torch", half=True, verbose=False)[0]
    assert "half=True needs a CUDA device" in caplog.text
    assert torch.equal(half.boxes.data, cpu.boxes.data)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            official.predict(bus, device="cuda", verbose=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_on_cuda_gives_the_float_detections(bus):
    model = YOLO(shared_path("weights", "yolov5n.pt"), verbose=False)
    full = model.predict(bus, imgsz=320, device="cuda", verbose=False)[0]
    half = model.predict(bus, imgsz=320, device="cuda", half=True, verbose=False)[0]
    assert half.boxes.data.dtype == torch.float32 and len(half) == len(full)
    assert torch.allclose(half.boxes.xyxy, full.boxes.xyxy, atol=2.0)
    model.to("cpu")


def test_results_speed_verbose_save_txt(official, bus, tmp_path):
    (r,) = official.predict(bus, imgsz=320, backend="torch", verbose=False)
    assert set(r.speed) == {"preprocess", "inference", "postprocess"}
    assert all(v > 0 for v in r.speed.values()) and r.speed["inference"] < 60_000
    counts = {}
    for c in r.boxes.cls.int().tolist():
        counts[c] = counts.get(c, 0) + 1
    assert r.verbose() == ", ".join(f"{n} {r.names[c]}{'s' if n > 1 else ''}" for c, n in sorted(counts.items()))
    assert "bus" in r.verbose()
    path = r.save_txt(tmp_path / "l" / "bus.txt")
    rows = [line.split() for line in path.read_text().splitlines()]
    assert len(rows) == len(r) and all(len(row) == 5 for row in rows)
    np.testing.assert_allclose(np.array(rows, float)[:, 1:], r.boxes.xywhn.numpy(), atol=1e-5)
    rows = [line.split() for line in r.save_txt(tmp_path / "c.txt", save_conf=True).read_text().splitlines()]
    np.testing.assert_allclose([float(row[5]) for row in rows], r.boxes.conf.numpy(), atol=1e-5)
    empty = Results(np.zeros((8, 8, 3), np.uint8), "e.jpg", Boxes(torch.zeros(0, 6), (8, 8)), ["a"])
    assert empty.verbose() == "(no detections)" and empty.save_txt(tmp_path / "e.txt").read_text() == ""


def test_plot_takes_the_package_drawing_arguments():
    """``r.plot(line_width=..., labels=..., conf=...)`` raised TypeError."""
    box = Boxes(torch.tensor([[50.0, 60, 150, 160, 0.9, 0]]), (200, 200))
    r = Results(np.full((200, 200, 3), 128, np.uint8), "g.jpg", box, ["cat"])
    default, bare, thick, no_conf = r.plot(), r.plot(labels=False), r.plot(line_width=6), r.plot(conf=False)
    above = lambda image: int((image[:58] != 128).any(-1).sum())  # noqa: E731 - the label's pixels above the box
    assert above(default) > above(no_conf) > 0 and above(bare) == 0
    assert (thick[70:150, 52] != 128).any(-1).all() and (default[70:150, 52] == 128).all()
    with pytest.raises(ConfigError, match="line_width must be a whole number >= 1"):
        r.plot(line_width=0)


def test_show_opens_the_drawn_image(monkeypatch):
    """``r.show()`` raised AttributeError; it hands :meth:`Results.plot`'s image to Pillow's viewer."""
    from PIL import Image

    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, title=None: shown.append((np.asarray(self), title)))
    box = Boxes(torch.tensor([[50.0, 60, 150, 160, 0.9, 0]]), (200, 200))
    r = Results(np.full((200, 200, 3), 128, np.uint8), "dir/g.jpg", box, ["cat"])
    r.show(labels=False)
    ((image, title),) = shown
    assert title == "g.jpg" and np.array_equal(image, r.plot(labels=False))
    assert not np.array_equal(image, r.orig_img)


def test_to_df_with_and_without_pandas(monkeypatch):
    r = Results(
        np.zeros((10, 20, 3), np.uint8),
        "x.jpg",
        Boxes(torch.tensor([[1.0, 2.0, 5.0, 6.0, 0.9, 1.0]]), (10, 20)),
        ["a", "b"],
    )
    pd = pytest.importorskip("pandas")
    df = r.to_df()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["name", "class", "confidence", "x1", "y1", "x2", "y2"]
    assert df.iloc[0].tolist() == ["b", 1, 0.9, 1.0, 2.0, 5.0, 6.0]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        r.to_df()


def test_nms_iou_defaults_follow_the_head(tiny_shapes, monkeypatch):
    """Without ``iou``, YOLOv5 / YOLOv4 heads predict at 0.45 and validate at 0.6 (YOLOv5's detect.py and val.py)
    and the package's anchor-free and NMS-free heads at 0.7 for both (its default), in Python, on the command
    line, in the trainer's validation (``val_iou: auto``) and in an ``--nms`` export; a given value wins."""
    from yolotr.cli import build_parser
    from yolotr.engine import validator as validator_module
    from yolotr.engine.config import resolve_config
    from yolotr.engine.head_mode import default_iou
    from yolotr.engine.predictor import Predictor
    from yolotr.models.detection import DetectionModel

    names = ["a", "b", "c"]
    for spec, predict_iou, val_iou in (
        ("yolov5n.yaml", 0.45, 0.6),
        ("yolov8n.yaml", 0.7, 0.7),
        ("yolo26n.yaml", 0.7, 0.7),
    ):
        model = DetectionModel(spec, nc=3).eval()
        assert (default_iou(model, "predict"), default_iou(model, "val")) == (predict_iou, val_iou), spec
        assert Predictor(model, names, imgsz=64).iou == predict_iou and Predictor(model, names, iou=0.5).iou == 0.5
        seen = []
        real = validator_module.Validator

        def recording(*args, seen=seen, real=real, **kwargs):  # the iou the validator was built with
            seen.append(args[3])
            return real(*args, **kwargs)

        monkeypatch.setattr(validator_module, "Validator", recording)
        validator_module.validate(model, str(tiny_shapes), imgsz=64, batch_size=4, workers=0, verbose=False)
        validator_module.validate(model, str(tiny_shapes), imgsz=64, batch_size=4, workers=0, iou=0.3, verbose=False)
        monkeypatch.setattr(validator_module, "Validator", real)
        assert seen == [val_iou, 0.3], spec
    parser = build_parser()
    assert parser.parse_args(["predict", "--model", "m.pt", "--source", "x.jpg"]).iou is None
    assert parser.parse_args(["val", "--model", "m.pt", "--data", "d.yaml"]).iou is None
    assert (
        resolve_config({"val_iou": "auto"})["val_iou"] == "auto" and resolve_config({"val_iou": 0.5})["val_iou"] == 0.5
    )
    with pytest.raises(ConfigError, match="val_iou"):
        resolve_config({"val_iou": 1.5})


def test_a_model_built_from_a_yaml_trains_alike_under_one_seed(tiny_shapes, tmp_path):
    """``YOLO("x.yaml", nc=3).train(seed=0)`` trained from weights drawn when the YOLO was built, before the
    seed: two runs (two processes, or two models in one) ended with different weights. A second ``train()``
    continues from the trained weights."""
    cfg = tiny_train_cfg(tiny_shapes, tmp_path, epochs=1)
    del cfg["model"]
    finals = []
    for name in ("a", "b"):
        model = YOLO("yolov5n.yaml", nc=3, verbose=False)
        model.train(**{**cfg, "name": name}, verbose=False)
        finals.append(torch.load(tmp_path / name / "weights" / "last.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(finals[0][k], v) for k, v in finals[1].items())
    trained = {k: v.clone() for k, v in model.model.named_parameters()}
    model.train(**{**cfg, "name": "c", "lr0": 1e-9, "warmup_epochs": 0}, verbose=False)  # continues, barely moving
    moved = max((p - trained[k]).abs().max().item() for k, p in model.model.named_parameters())
    assert moved < 1e-3


def test_add_callback_on_the_model_reaches_its_training(tmp_path):
    """The package's ``model.add_callback("on_train_epoch_end", fn)``: called with the trainer at each epoch."""
    from yolotr.data.synthetic import make_shapes_dataset
    from yolotr.errors import ConfigError

    data = make_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=4, imgsz=64, seed=1)
    model = YOLO("yolov5n.yaml")
    epochs, batches, starts, ends, epoch_starts = [], [], [], [], []
    model.add_callback("on_train_epoch_end", lambda trainer: epochs.append(trainer.step))
    model.add_callback("on_batch_start", lambda trainer: batches.append(trainer.step))
    model.add_callback("on_train_start", lambda trainer: starts.append(trainer.step))
    model.add_callback("on_train_epoch_start", lambda trainer: epoch_starts.append(trainer.epoch))
    model.add_callback("on_train_end", lambda trainer: ends.append(len(batches)))
    model.train(data=str(data), epochs=2, imgsz=64, batch=4, nbs=4, workers=0, val=False, project=str(tmp_path),
                verbose=False)  # fmt: skip
    assert batches == [0, 1, 2, 3] and epochs == [1, 3]
    assert starts == [0] and epoch_starts == [0, 1] and ends == [4]  # once; each epoch; after all
    model.train(data=str(data), epochs=1, imgsz=64, batch=4, nbs=4, workers=0, val=False, project=str(tmp_path),
                verbose=False)  # fmt: skip
    assert starts == [0, 0] and ends == [4, 6]  # once per run
    assert model.trainer.save_dir.is_dir()  # model.trainer, model.metrics: the package's names
    assert model.val(data=str(data), imgsz=64, verbose=False) is model.metrics
    with pytest.raises(ConfigError, match="'on_val_end' is one of the ultralytics package's validator"):
        model.add_callback("on_val_end", print)
