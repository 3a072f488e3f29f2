"""`yolotr check-data` as a user runs it: each problem once per split, no traceback, exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_cli_errors import run_cli_here
from yolotr.cli import main

GOOD = "0 0.5 0.5 0.5 0.5\n"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOTR_CACHE", str(tmp_path / "cache"))


def _dataset(root: Path, labels: dict[str, str | None]) -> Path:
    """A YOLO set of 64x48 PNGs whose train and val are the same folder; returns its YAML."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem, text in labels.items():
        Image.new("RGB", (64, 48), (40, 90, 160)).save(root / "images" / f"{stem}.png")
        if text is not None:
            (root / "labels" / f"{stem}.txt").write_text(text)
    yaml_file = root / "data.yaml"
    yaml_file.write_text(f"path: {root}\ntrain: images\nval: images\nnames: [a, b]\n")
    return yaml_file


def _check_data(yaml_file: Path) -> subprocess.CompletedProcess:
    return run_cli_here("check-data", "--data", yaml_file, cwd=yaml_file.parent)


def test_each_problem_once_per_split(tmp_path):
    yaml_file = _dataset(
        tmp_path,
        {
            "good": GOOD,
            "background": None,
            "cls": GOOD + "7 0.5 0.5 0.2 0.2\n",
            "nan": "1 nan 0.5 0.2 0.2\n",
            "cols": "0 0.5 0.5 0.2\n",
            "dup": GOOD + GOOD,
        },
    )
    proc = _check_data(yaml_file)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    problems = [
        f"{tmp_path}/labels/cls.txt:2: error: class 7 out of range 0..1",
        f"{tmp_path}/labels/nan.txt:1: error: NaN or inf in '1 nan 0.5 0.2 0.2'",
        f"{tmp_path}/labels/cols.txt:1: error: 4 columns; expected 5 (class cx cy w h) or a polygon",
        f"{tmp_path}/labels/dup.txt:2: warning: duplicate box dropped",
    ]
    lines = proc.stdout.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(("train: ", "val: "))]
    assert [lines[i].split(":")[0] for i in heads] == ["train", "val"]
    headline = (
        "3/6 images usable, 3 left out (1 NaN or inf, 1 class out of range, 1 malformed line), "
        "2 boxes, 1 backgrounds, 3 errors, 1 warnings"
    )
    assert [lines[i] for i in heads] == [f"train: {headline}", f"val: {headline}"]
    train_block, val_block = lines[heads[0] : heads[1]], lines[heads[1] :]
    for problem in problems:
        assert [line.strip() for line in train_block].count(problem) == 1, problem
        assert [line.strip() for line in val_block].count(problem) == 1, problem
        assert sum(problem in line for line in lines) == 2, problem
        assert problem not in proc.stderr
    assert "dataset problems" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "code", "last_line"),
    [
        ({"good": GOOD, "background": None}, 0, "all"),
        ({"good": GOOD, "dup": GOOD + GOOD}, 0, "all"),
        ({"cls": "4 0.5 0.5 0.2 0.2\n", "outside": "0 1.9 0.5 0.2 0.2\n"}, 3, "error: split 'val' has no usable"),
    ],
    ids=["clean", "warnings-only", "no-usable-image"],
)
def test_exit_codes(tmp_path, labels, code, last_line):
    proc = _check_data(_dataset(tmp_path, labels))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1].startswith(last_line)
    if code == 3:
        assert "error: split 'train' has no usable image" in proc.stdout
        assert "train: 0/2 images usable, 2 left out (1 box outside the image, 1 class out of range)" in proc.stdout


def test_unreadable_yaml_exits_2_and_help_lists_the_codes(tmp_path, capsys):
    assert main(["check-data", "--data", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: dataset YAML not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["check-data", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 no errors", "1 errors", "2 the dataset YAML cannot be read", "3 a split has no usable image"):
        assert code in text, code
