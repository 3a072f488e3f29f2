"""Files that are not checkpoints: one ``error:`` line naming the file and what it looks like, exit 2.

``write_bad_checkpoint`` makes each kind of unreadable file; ``tests/models/test_weights.py`` uses
it for the Python side (``YOLO(path)`` raises ``CheckpointError``).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

# kind -> (file name, a phrase the message must contain)
BAD_CHECKPOINTS = {
    "text": ("notes.pt", "it looks like a text file (first line: 'my training notes')"),
    "html": ("download.pt", "it looks like an HTML page"),
    "random": ("noise.pt", "it looks like random/binary data"),
    "zip": ("bundle.pt", "a zip archive that is not a PyTorch checkpoint (contains foo.txt, bar.txt)"),
    "empty": ("empty.pt", "it looks like an empty file"),
    "truncated": ("cut.pt", "it looks like a PyTorch checkpoint cut short"),
    "pickle_int": ("int.pt", "it looks like a pickle of a plain int"),
    "pickle_str": ("str.pt", "it looks like a pickle of a plain str"),
    "torch_int": ("saved_int.pt", "a PyTorch file holding a plain int"),
}


def write_bad_checkpoint(kind: str, folder: Path) -> tuple[Path, str]:
    """Write one kind of unreadable checkpoint into ``folder``; returns its path and the expected phrase."""
    name, phrase = BAD_CHECKPOINTS[kind]
    path = folder / name
    if kind == "text":
        path.write_text("my training notes\nlr 0.01 worked best\n")
    elif kind == "html":
        path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("foo.txt", "a")
            archive.writestr("bar.txt", "b")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        full = folder / "full.pt"
        torch.save({"format": "yolotr", "state_dict": {"w": torch.zeros(64, 64)}}, full)
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "pickle_int":
        path.write_bytes(pickle.dumps(5))
    elif kind == "pickle_str":
        path.write_bytes(pickle.dumps("weights"))
    elif kind == "torch_int":
        torch.save(5, path)
    return path, phrase


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m yolotr ARGS`` in a fresh process, run in ``cwd``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "yolotr", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def run_cli_here(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``yolotr ARGS`` through ``yolotr.cli.main`` in this process, run in ``cwd``: its exit status and what it
    printed, as :func:`run_cli` gives them, without a fresh process's 1.5 s of imports. An exception that
    ``main`` lets through (a traceback, in a process) fails the test."""
    from yolotr.cli import main

    out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(map(str, args)))
            except SystemExit as e:  # argparse's refusals
                code = e.code
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_cli_names_the_bad_checkpoint_in_one_line(kind, tmp_path):
    path, phrase = write_bad_checkpoint(kind, tmp_path)
    proc = run_cli_here("info", "--model", path, cwd=tmp_path)  # a fresh process: the predict test below
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: ")
    assert phrase in lines[0]
    assert proc.stdout == ""


def test_cli_predict_with_a_text_file_as_model(tmp_path):
    path, phrase = write_bad_checkpoint("text", tmp_path)
    image = tmp_path / "x.jpg"
    image.write_bytes(b"")  # never read: the model fails first
    proc = run_cli("predict", "--model", path, "--source", image, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {path}: not a checkpoint: {phrase}"]


@pytest.mark.parametrize(
    "content, phrase",
    [(None, "cannot read configuration"), ("- epochs: 3\n", "must be a mapping"), ("epoch: 3\n", "epoch")],
)
def test_cli_train_names_a_bad_cfg_file(content, phrase, tmp_path):
    cfg = tmp_path / "settings.yaml"
    if content is not None:
        cfg.write_text(content)
    proc = run_cli_here("train", "--model", "yolov5n.yaml", "--data", "shapes", "--cfg", cfg, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {cfg}") and phrase in proc.stderr, proc.stderr
