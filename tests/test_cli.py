"""The ``yolotr`` command: predictions written to disk, clear one-line errors with the file name."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert len(lines) == len(bus["detections"]) and all(len(line.split()) == 6 for line in lines)


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
    assert "broken.jpg: not a readable image" in capsys.readouterr().err
