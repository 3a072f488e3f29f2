"""The ``yolotr`` command as a user of the ``yolo`` command types it: ``key=value`` arguments, ``--device`` on
predict/val/export, the sub-command's usage and a "did you mean" for an unknown flag, setting or model name,
and a missing ``.pt`` that says where weights come from (issue 26, item 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolotr.cli import build_parser, main
from yolotr.cli_args import expand_key_values
from yolotr.errors import CheckpointError
from yolotr.models.detection import DetectionModel
from yolotr.models.model_names import shipped_model_names


def parse(argv: list[str]):
    parser = build_parser()
    return parser.parse_args(expand_key_values(parser, argv))


def test_key_value_arguments_as_the_yolo_command_takes_them():
    args = parse(
        ["train", "model=yolov8n.yaml", "data=my.yaml", "epochs=50", "close_mosaic=3", "val=False", "amp=True"]
    )
    assert (args.model, args.data, args.epochs, args.val, args.amp) == ("yolov8n.yaml", "my.yaml", 50, False, "on")
    assert args.set == ["close_mosaic=3"]
    mixed = parse(
        ["train", "--set", "lr0=0.02", "mosaic=0.5", "--epochs", "3", "patience=7", "--weights-rename", "a=b"]
    )
    assert mixed.set == ["lr0=0.02", "mosaic=0.5", "patience=7"] and mixed.weights_rename == ["a=b"]
    assert mixed.epochs == 3
    args = parse(
        ["predict", "model=best.pt", "source=img/", "save=True", "save_txt=False", "classes=[0,2]", "conf=0.4"]
    )
    assert (args.model, args.source, args.save, args.save_txt, args.classes, args.conf) == (
        "best.pt", "img/", True, False, [0, 2], 0.4,
    )  # fmt: skip
    assert parse(["val", "model=a.pt", "data=d.yaml", "device=cpu", "batch=4"]).device == "cpu"


def test_optimizer_name_in_any_case_as_the_yaml_setting(capsys):
    assert parse(["train", "--optimizer", "musgd"]).optimizer == "MuSGD"
    assert parse(["train", "optimizer=adamw"]).optimizer == "AdamW"
    assert parse(["compare", "--optimizer", "AUTO", "--models", "a.yaml"]).optimizer == "auto"
    assert parse(["train", "--optimizer", "rmsprop"]).optimizer == "RMSprop"  # the package's other choices
    err = _usage_error(["train", "--optimizer", "lion"], capsys)
    assert "invalid choice: 'lion'" in err


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_unknown_flag_prints_the_sub_command_usage_and_the_nearest(capsys):
    err = _usage_error(["predict", "--model", "m.pt", "--source", "s", "--conff", "0.3"], capsys)
    assert err.startswith("usage: yolotr predict") and "unrecognized arguments: --conff 0.3" in err
    assert "did you mean --conf" in err  # (or --save-conf, as near)
    err = _usage_error(["train", "--patiense", "3"], capsys)
    assert err.startswith("usage: yolotr train") and "did you mean --set patience=VALUE?" in err
    err = _usage_error(["train", "lr=0.1"], capsys)
    assert "unknown argument 'lr=0.1'; did you mean lr0" in err
    err = _usage_error(["val", "model=m.pt", "data=d.yaml", "epochs=3"], capsys)
    assert err.startswith("usage: yolotr val") and "unknown argument 'epochs=3'" in err


def test_unknown_setting_names_the_nearest_key_and_default_yaml(capsys):
    assert main(["train", "--set", "lr=0.1", "--data", "shapes"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'lr'; did you mean lr0" in err and "yolotr/cfg/default.yaml" in err


def test_device_on_predict_val_and_export(tmp_path, capsys):
    import cv2

    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.full((64, 64, 3), 90, np.uint8))
    assert main(["predict", "model=yolov5n.yaml", f"source={image}", "device=cpu", "imgsz=64"]) == 0
    assert "1 images" in capsys.readouterr().out
    for command in (["val", "--data", "shapes"], ["export"], ["predict", "--source", str(image)]):
        assert parse([command[0], "--model", "m.pt", *command[1:], "--device", "0"]).device == "0"
    if not torch.cuda.is_available():
        assert main(["predict", "--model", "yolov5n.yaml", "--source", str(image), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert main(["export", "--model", "yolov5n.yaml", "--device", "cuda:0", "--output", str(tmp_path)]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_model_names_did_you_mean_and_scaled_forms(capsys):
    names = shipped_model_names()
    assert {"yolo11n.yaml", "yolo11x.yaml", "yolov8s.yaml", "yolov8n-p2.yaml", "yolov5n.yaml"} <= set(names)
    assert "yolo11.yaml" not in names  # listed by its scales, as a user writes them
    assert main(["info", "--model", "yolov11n.yaml"]) == 2
    err = capsys.readouterr().err
    assert "did you mean yolo11n.yaml" in err and "yolo11n.yaml, yolo11s.yaml" in err


def test_a_missing_official_pt_is_a_checkpoint_that_is_not_downloaded(tmp_path, capsys):
    missing = tmp_path / "yolov5n.pt"
    with pytest.raises(CheckpointError, match="does not download weights") as error:
        DetectionModel(str(missing))  # what `yolotr train --model yolov5n.pt` builds from
    assert "no such model YAML" not in str(error.value) and "github.com/ultralytics/yolov5/releases" in str(error.value)
    assert "to start from untrained weights use yolov5n.yaml" in str(error.value)
    assert main(["predict", "--model", str(missing), "--source", "x.jpg"]) == 2
    assert "does not download weights" in capsys.readouterr().err


def test_val_table_on_stdout_logs_on_stderr(tmp_path, capsys):
    from yolotr.data.synthetic import make_shapes_dataset
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    data = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=4, imgsz=64, seed=1)
    model = DetectionModel("yolov5n.yaml", nc=3)
    weights = save_checkpoint(model_checkpoint(model), tmp_path / "m.pt")
    assert main(["val", "--model", str(weights), "--data", str(data), "--imgsz", "64", "--workers", "0"]) == 0
    captured = capsys.readouterr()
    header = [line for line in captured.out.splitlines() if line.strip().startswith("Class")]
    assert len(header) == 1 and header[0].rstrip().endswith("mAP50-95") and "\nall" not in captured.err
    assert any(line.split()[:1] == ["all"] for line in captured.out.splitlines())
    err = [line.strip() for line in captured.err.replace("\r", "\n").splitlines()]
    assert not any(line.startswith("Class") and line.endswith("mAP50-95") for line in err)  # the bar is not the table


def test_compare_table_shows_small_values_with_enough_digits():
    from yolotr.engine.compare_report import _difference, _mean_sd

    row = {"mAP50_mean": 0.00042, "mAP50_sd": 0.00011, "mAP50_diff": -0.0031, "mAP50_low": -0.009, "mAP50_high": 0.0028}
    assert _mean_sd(row, "mAP50") == "0.00042 ± 0.00011"
    assert _difference(row, "mAP50", False) == "-0.0031 [-0.009, +0.0028]"
    row.update(mAP50_mean=0.512, mAP50_sd=0.0)
    assert _mean_sd(row, "mAP50") == "0.512 ± 0.000"


def test_one_class_is_singular(tmp_path, capsys):
    from yolotr.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=2, imgsz=64, seed=1)
    text = data.read_text().replace("names:", "names_old:")
    data.write_text(text + "\nnames: [shape]\n")
    main(["check-data", "--data", str(data)])
    out = capsys.readouterr().out
    assert "1 class," in out and "1 classes" not in out


def test_the_packages_nms_setting_points_to_end2end(capsys):
    from yolotr.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--model", "yolov5n.yaml", "--source", "x.jpg", "nms=False"])
    assert "nms=False (an end-to-end head's own output) is end2end=True here" in capsys.readouterr().err
