"""``yolotr val`` / ``YOLO.val()`` without a dataset or size: the checkpoint's training data and size."""

from __future__ import annotations

import logging

import pytest
import torch

from yolotr import YOLO
from yolotr.cli import main
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.models.weights import model_checkpoint, save_checkpoint


def _checkpoint(tmp_path, data):
    torch.manual_seed(0)
    model = DetectionModel("yolov5n.yaml", nc=3).eval()
    model.names = ["circle", "square", "triangle"]
    state = {"cfg": {"data": data, "imgsz": 64}}
    return save_checkpoint(model_checkpoint(model, names=model.names, train_state=state), tmp_path / "best.pt")


def test_val_without_data_uses_the_checkpoints_training_data_and_size(tiny_shapes, tmp_path, capsys, caplog):
    checkpoint = _checkpoint(tmp_path, str(tiny_shapes))
    with caplog.at_level(logging.INFO, logger="yolotr"):
        assert main(["val", "--model", str(checkpoint), "--workers", "0"]) == 0
    assert f"the checkpoint's training data ({tiny_shapes})" in caplog.text
    table = capsys.readouterr().out
    assert "all" in table and "8" in table.split("all")[1].split()[0]  # the tiny set's 8 val images
    result = YOLO(str(checkpoint)).val(workers=0, verbose=False)
    assert result.dataloader.dataset.imgsz == 64  # the training size, not 640


def test_val_without_data_and_nothing_to_fall_back_on_is_one_clear_error(tmp_path, capsys):
    assert main(["val", "--model", "yolov5n.yaml"]) == 2
    assert "the model does not name the data it was trained on" in capsys.readouterr().err
    gone = _checkpoint(tmp_path, str(tmp_path / "moved" / "data.yaml"))
    with pytest.raises(ConfigError, match=r"training data .*data\.yaml is not found from"):
        YOLO(str(gone)).val(verbose=False)
