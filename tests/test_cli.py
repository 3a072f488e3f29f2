"""The ``yolotr`` command: predictions written to disk, clear one-line errors with the file name."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import shared_path
from yolotr.cli import main


def test_predict_writes_images_and_json(tmp_path, capsys):
    source = shared_path("images")
    code = main(
        [
            "predict",
            "--model",
            str(shared_path("weights", "yolov5n.pt")),
            "--source",
            str(source),
            "--save",
            "--save-txt",
            "--project",
            str(tmp_path),
            "--name",
            "p",
        ]
    )
    assert code == 0
    out = tmp_path / "p"
    assert (out / "bus.jpg").is_file() and (out / "zidane.jpg").is_file()
    records = json.loads((out / "predictions.json").read_text())
    bus = next(r for r in records if r["image"].endswith("bus.jpg"))
    assert sum(d["name"] == "person" for d in bus["detections"]) >= 3
    lines = (out / "labels" / "bus.txt").read_text().splitlines()
    assert len(lines) == len(bus["detections"]) and all(len(line.split()) == 5 for line in lines)  # no --save-conf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "--model", "nothing-here.yaml"], "nothing-here.yaml: no such model YAML"),
        (["predict", "--model", "yolov5n.yaml", "--source", "missing-dir/"], "missing-dir/: no such file"),
    ],
)
def test_errors_are_one_line_with_the_name(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_unknown_module_yaml_via_subprocess(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 2\nanchors: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, C3TRR, [32]]\nhead: []\n")
    proc = subprocess.run([sys.executable, "-m", "yolotr", "info", "--model", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.yaml: layer 1" in proc.stderr and "unknown module 'C3TRR'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_image_is_named(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["predict", "--model", "yolov5n.yaml", "--source", str(broken), "--imgsz", "128"]) == 2
    assert "broken.jpg: truncated JPEG (no end marker)" in capsys.readouterr().err  # a JPEG start, no end


def test_video_is_predicted_frame_by_frame_and_written_back(tmp_path):
    import cv2

    from yolotr.data.images import read_image

    frame = cv2.resize(cv2.cvtColor(read_image(shared_path("images", "bus.jpg")), cv2.COLOR_RGB2BGR), (240, 320))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (240, 320))
    for _ in range(4):
        writer.write(frame)
    writer.release()
    code = main(
        [
            "predict",
            "--model",
            str(shared_path("weights", "yolov5n.pt")),
            "--source",
            str(video),
            "--imgsz",
            "320",
            "--save",
            "--save-json",
            "--project",
            str(tmp_path),
            "--name",
            "v",
        ]
    )
    assert code == 0
    written = cv2.VideoCapture(str(tmp_path / "v" / "clip.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    written.release()
    records = json.loads((tmp_path / "v" / "predictions.json").read_text())
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    coco = json.loads((tmp_path / "v" / "predictions_coco.json").read_text())
    assert coco and {"image_id", "category_id", "bbox", "score"} == set(coco[0])
    assert {c["image_id"] for c in coco} <= {"clip_1", "clip_2", "clip_3", "clip_4"}


def test_val_prints_its_table_once(tmp_path):
    """``yolotr val`` on a YOLOv8 model of the built-in shapes set: the table reaches the user exactly once."""
    from yolotr.data.synthetic import make_shapes_dataset
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    data = make_shapes_dataset(tmp_path / "shapes", n_train=2, n_val=4, imgsz=64, seed=1)
    model = DetectionModel("yolov8n.yaml", nc=3)
    model.names = ["circle", "square", "triangle"]
    weights = save_checkpoint(model_checkpoint(model), tmp_path / "m.pt")
    proc = subprocess.run(
        [sys.executable, "-m", "yolotr", "val", "--model", str(weights), "--data", str(data), "--imgsz", "64"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
    assert "Traceback" not in text
    assert sum(line.startswith("Class") and line.endswith("mAP50-95") for line in lines) == 1  # not the bar
    assert sum(line.split()[:1] == ["all"] for line in lines) == 1


def test_a_video_without_frames_is_an_error_alone_and_skipped_among_others(tmp_path, capsys):
    """A video that opens but yields no frame: one alone is a DataError (exit 2, as an unreadable image),
    not "0 images" and an empty run folder; in a folder with a readable image it is skipped with a warning."""
    import cv2

    cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64)).release()
    args = ["predict", "--model", "yolov5n.yaml", "--imgsz", "64", "--backend", "torch"]
    assert main([*args, "--source", str(tmp_path / "empty.avi")]) == 2
    assert "empty.avi: the video opens but no frame can be read" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "one.jpg"), np.zeros((64, 64, 3), np.uint8))
    assert main([*args, "--source", str(tmp_path)]) == 0
    assert "1 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [("--gpus-per-run", "-1", ">= 0"), ("--cpus-per-run", "0", ">= 1"), ("--latency-runs", "-2", ">= 0")],
)
def test_compare_refuses_out_of_range_resources(flag, value, rule, capsys):
    """A negative GPU share was a traceback from inside Ray; 0 CPUs and negative latency runs were replaced
    or dropped silently."""
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--models", "yolov5n.yaml", "--seeds", "1", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be {rule}, got '{value}'" in capsys.readouterr().err


def test_info_of_a_checkpoint_defaults_to_its_training_size(tmp_path, capsys):
    """``export`` and ``predict`` used the checkpoint's size, ``info`` 640."""
    from yolotr.models.detection import DetectionModel
    from yolotr.models.weights import model_checkpoint, save_checkpoint

    model = DetectionModel("yolov5n.yaml", nc=2)
    path = save_checkpoint(model_checkpoint(model, imgsz=96), tmp_path / "small.pt")
    assert main(["info", "--model", str(path)]) == 0
    assert "GFLOPs at 96x96" in capsys.readouterr().out
    assert main(["info", "--model", str(path), "--imgsz", "128"]) == 0
    assert "GFLOPs at 128x128" in capsys.readouterr().out


def test_predict_exist_ok_writes_into_the_named_folder_again(tmp_path):
    """Without ``--exist-ok`` a second run goes to ``exp2``; with it, into ``exp`` again (YOLOv5's detect.py flag)."""
    import cv2

    cv2.imwrite(str(tmp_path / "one.jpg"), np.zeros((64, 64, 3), np.uint8))
    args = ["predict", "--model", "yolov5n.yaml", "--imgsz", "64", "--backend", "torch", "--save"]
    args += ["--source", str(tmp_path / "one.jpg"), "--project", str(tmp_path / "runs")]
    assert main(args) == 0 and main([*args, "--exist-ok"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp"]
    assert main(args) == 0 and (tmp_path / "runs" / "exp2" / "one.jpg").is_file()


def test_the_parser_needs_no_torch_and_a_model_no_torchvision():
    """``yolotr --help`` answers without importing torch (2 s); loading a model (``yolotr info``, and every command
    refused for a bad checkpoint) imports no torchvision (1 s more: it loads ``torch._dynamo``) until NMS runs."""
    steps = [
        "import sys",
        "from yolotr.cli import build_parser",
        "build_parser()",
        "assert 'torch' not in sys.modules, 'torch'",
        "import yolotr.models.loading, yolotr.engine.predictor, yolotr.engine.validator",
        "assert 'torchvision' not in sys.modules, 'torchvision'",
    ]
    proc = subprocess.run([sys.executable, "-c", "\n".join(steps)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
