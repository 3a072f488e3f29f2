"""``single_cls``: a multi-class set trained as one class named ``item``, its checkpoint validated again on its
own training data, a one-class set keeping its name, and an 80-class COCO checkpoint scored on the one-class
raccoon set as YOLOv5's own ``val.py --single-cls`` scores it (live, skipped without the ``yolov5`` package)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import shared_path
from tests.engine.conftest import tiny_train_cfg
from yolotr.data.single_class import single_class
from yolotr.data.sources import load_dataset_config, load_records
from yolotr.engine.trainer import Trainer
from yolotr.engine.validator import validate
from yolotr.errors import ConfigError
from yolotr.models.loading import load_model
from yolotr.models.weights import read_checkpoint, training_settings

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _raccoon() -> dict:
    root = shared_path("data", "raccoon")
    return {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["raccoon"], "format": "voc"}


def test_single_cls_trains_one_item_class_that_validates_again_from_its_checkpoint(tiny_shapes, tmp_path):
    assert len(load_dataset_config(tiny_shapes).names) == 3
    trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, single_cls=True))
    trainer.train()
    assert trainer.model.nc == 1 and trainer.names == ["item"]
    assert all(not r.classes.any() for r in trainer.train_set.records)
    best = trainer.weights_dir / "best.pt"
    _, checkpoint = read_checkpoint(best)
    assert checkpoint["names"] == ["item"] and training_settings(checkpoint)["single_cls"] is True
    model = load_model(best)
    assert model.single_cls and model.names == ["item"]
    result = validate(model, None, imgsz=64, batch_size=8, workers=0, verbose=False)  # its training data, one class
    assert [c.name for c in result.per_class] == ["item"] and result.metrics.instances > 0
    with pytest.raises(ConfigError, match="single_cls=True"):  # read as its own three classes: a clear error
        validate(model, tiny_shapes, imgsz=64, workers=0, verbose=False, single_cls=False)
    resumed = Trainer.resume(trainer.save_dir, epochs=2)  # the run's settings, single_cls with them
    resumed.train()
    assert resumed.cfg["single_cls"] is True and resumed.model.nc == 1 and resumed.names == ["item"]


def test_a_one_class_dataset_keeps_its_own_name():
    config = load_dataset_config(_raccoon())
    records, _ = load_records(config, "val")
    one, zeroed = single_class(config, records)
    assert one.names == ["raccoon"] and config.names == ["raccoon"]
    assert sum(len(r.classes) for r in zeroed) == sum(len(r.classes) for r in records) > 0
    many = load_dataset_config({**_raccoon(), "names": ["dog", "raccoon"]})
    assert single_class(many)[0].names == ["item"] and many.names == ["dog", "raccoon"]
    assert all(not r.classes.any() for r in single_class(many, load_records(many, "val")[0])[1])


def test_an_80_class_checkpoint_on_raccoon_scores_as_yolov5s_val(tmp_path, monkeypatch):
    pytest.importorskip("yolov5", reason="the official YOLOv5 package is a bench extra (pip install -e .[bench])")
    weights = shared_path("weights", "yolov5n.pt")
    data = _raccoon()
    model = load_model(weights)
    with pytest.raises(ConfigError, match="single_cls=True"):
        validate(model, data, imgsz=320, workers=0, verbose=False)
    ours = validate(model, data, imgsz=320, batch_size=32, workers=0, verbose=False, single_cls=True)

    # YOLOv5 reads YOLO txt labels: the same boxes written beside links to the photos
    config = load_dataset_config(data)
    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    for r in load_records(config, "val")[0]:
        image = tmp_path / "images" / r.path.rsplit("/", 1)[-1]
        image.symlink_to(r.path)
        xyxy = r.boxes.astype(np.float64)
        cxcywh = np.concatenate(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)
        cxcywh /= [r.width, r.height, r.width, r.height]
        rows = [f"{c} " + " ".join(f"{v:.6f}" for v in box) for c, box in zip(r.classes, cxcywh)]
        (tmp_path / "labels" / f"{image.stem}.txt").write_text("\n".join(rows) + "\n")
    from yolov5 import val as yolov5_val
    from yolov5.models import experimental
    from yolov5.utils import general

    monkeypatch.setattr(experimental.torch, "load", functools.partial(torch.load, weights_only=False))
    monkeypatch.setattr(general, "check_font", lambda *a, **k: None)  # no network: no font download
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # NumPy 2 renamed it
    yolov5_data = {"path": str(tmp_path), "train": "images", "val": "images", "names": {0: "raccoon"}, "nc": 1}
    (_, _, theirs_map50, theirs_map, *_), *_ = yolov5_val.run(
        data=yolov5_data, weights=str(weights), batch_size=32, imgsz=320, single_cls=True, workers=0,
        device="cpu", project=str(tmp_path / "runs"), plots=False,
    )  # fmt: skip
    assert theirs_map50 > 0.5
    assert abs(ours.map50 - theirs_map50) < 0.02, (ours.map50, theirs_map50)
    assert abs(ours.map50_95 - theirs_map) < 0.02, (ours.map50_95, theirs_map)


def test_the_single_cls_flag_of_train_and_val(tmp_path, capsys):
    from yolotr.cli import TRAIN_KEYS, build_parser, main
    from yolotr.cli_args import expand_key_values

    parser = build_parser()
    assert parser.parse_args(["train", "--single-cls"]).single_cls is True and "single_cls" in TRAIN_KEYS
    assert parser.parse_args(expand_key_values(parser, ["train", "single_cls=True"])).single_cls is True
    assert parser.parse_args(["val", "--model", "a.pt"]).single_cls is None  # the checkpoint's setting
    data = tmp_path / "raccoon.yaml"
    data.write_text(yaml.safe_dump(_raccoon()))
    weights = str(shared_path("weights", "yolov5n.pt"))
    argv = ["val", "--model", weights, "--data", str(data), "--imgsz", "64", "--workers", "0", "--single-cls"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "all" in table and "raccoon" not in table  # one class: the all row only


def test_yolo_val_takes_single_cls():
    from yolotr import YOLO

    model = YOLO(str(shared_path("weights", "yolov5n.pt")))
    result = model.val(data=_raccoon(), imgsz=64, workers=0, single_cls=True, verbose=False)
    assert [c.name for c in result.per_class] == ["raccoon"] and result.metrics.instances > 0
    for wrong in ("False", 2):  # read as true by bool(): an 80-class model scored as one class without a word
        with pytest.raises(ConfigError, match=f"single_cls must be true or false, got {wrong!r}"):
            model.val(data=_raccoon(), imgsz=64, workers=0, single_cls=wrong, verbose=False)


def test_a_single_class_model_on_another_one_class_set_is_not_warned_of_other_names(caplog):
    """Read as one class, every name is the same class: a single_cls checkpoint ('item') on a one-class set
    that keeps its own name ('raccoon') was warned that the dataset may not be the one it was trained on."""
    from yolotr.models.detection import DetectionModel

    model = DetectionModel("yolov5n.yaml", nc=1)
    model.names, model.single_cls = ["item"], True
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        result = validate(model, _raccoon(), imgsz=64, workers=0, verbose=False)
        assert [c.name for c in result.per_class] == ["raccoon"]
        assert "class names are not the dataset's" not in caplog.text
        validate(model, _raccoon(), imgsz=64, workers=0, verbose=False, single_cls=False)  # classes by index
    assert "class names are not the dataset's" in caplog.text


def test_training_a_single_cls_checkpoint_again_keeps_and_says_single_cls(tiny_shapes, tmp_path, caplog):
    """As the package keeps a checkpoint's single_cls: trained again without the key, one class, and a line says
    it is the checkpoint's setting (as for its data and imgsz), not silently."""
    from yolotr import YOLO

    first = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, single_cls=True, name="first"))
    first.train()
    model = YOLO(str(first.weights_dir / "best.pt"))
    with caplog.at_level(logging.INFO, logger="yolotr"):
        model.train(**tiny_train_cfg(tiny_shapes, tmp_path, epochs=1, name="again"))
    assert model.model.nc == 1 and model.model.names == ["item"] and model.model.single_cls
    assert "single_cls: True, the checkpoint's" in caplog.text
