"""``YOLO("last.pt").train()``, as with the ``ultralytics`` package: the checkpoint's dataset and image size
when none are given, ``resume=True`` to continue its run, and a finished run refused as nothing to resume."""

from __future__ import annotations

import pytest
import yaml

from tests.engine.conftest import tiny_train_cfg
from yolotr import YOLO
from yolotr.engine.trainer import Trainer
from yolotr.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def finished_run(tiny_shapes, tmp_path_factory):
    project = tmp_path_factory.mktemp("runs")
    Trainer(tiny_train_cfg(tiny_shapes, project, epochs=1, imgsz=96, name="first")).train()
    return project / "first"


def test_train_without_data_uses_the_checkpoints_data_and_size(finished_run, tiny_shapes, tmp_path):
    model = YOLO(str(finished_run / "weights" / "last.pt"))
    result = model.train(epochs=1, batch=4, nbs=4, workers=0, val=False, project=str(tmp_path), name="again")
    args = yaml.safe_load((tmp_path / "again" / "args.yaml").read_text())
    assert args["data"] == str(tiny_shapes) and args["imgsz"] == 96  # shapes at 640 before
    assert result["save_dir"] == str(tmp_path / "again")


def test_settings_given_to_a_resume_are_checked_as_in_a_new_run(finished_run):
    """A bad value or an unknown key given with resume is refused as a new run refuses it (it was a raw
    ValueError for epochs=abc, "finished" for epochs=0, and a warning for a misspelt key)."""
    with pytest.raises(ConfigError, match=r"epochs"):
        Trainer.resume(finished_run, epochs="abc")
    with pytest.raises(ConfigError, match=r"epochs"):
        Trainer.resume(finished_run, epochs=0)
    with pytest.raises(ConfigError, match=r"lr00.*did you mean lr0"):
        Trainer.resume(finished_run, epochs=3, lr00=1)


def test_resume_true_continues_the_run_and_a_finished_run_is_refused(finished_run, tmp_path):
    last = finished_run / "weights" / "last.pt"
    with pytest.raises(CheckpointError, match=r"training to 1 epochs is finished; nothing to resume"):
        YOLO(str(last)).train(resume=True)
    with pytest.raises(CheckpointError, match=r"no run to resume \(no \*/weights/last.pt under it\)"):
        YOLO("yolov5n.yaml").train(resume=True, project=str(tmp_path))  # not loaded from one: the latest run
    with pytest.raises(ConfigError, match=r"resume must be True, False or a run folder"):
        YOLO(str(last)).train(resume=3)
    rows_before = (finished_run / "results.csv").read_text().count("\n")
    YOLO(str(last)).train(resume=True, epochs=2)  # a larger epoch count continues the same run
    assert (finished_run / "results.csv").read_text().count("\n") == rows_before + 1


def test_a_resume_follows_a_moved_dataset(tiny_shapes, tmp_path, caplog):
    """The run's dataset moved (another mount, a renamed folder): the resume could not be pointed at it."""
    import logging
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(tiny_shapes.parent, copy)
    moved_yaml = copy / tiny_shapes.name
    moved_yaml.write_text(tiny_shapes.read_text().replace(str(tiny_shapes.parent), str(copy)))
    Trainer(tiny_train_cfg(moved_yaml, tmp_path, epochs=1, name="run")).train()
    text = moved_yaml.read_text()
    shutil.move(copy, tmp_path / "elsewhere")
    new_yaml = tmp_path / "elsewhere" / tiny_shapes.name
    new_yaml.write_text(text.replace(str(copy), str(tmp_path / "elsewhere")))
    with caplog.at_level(logging.WARNING, logger="yolotr"):
        Trainer.resume(tmp_path / "run", epochs=2, data=str(new_yaml), lr0=0.5).train()
    assert "ignoring lr0" in caplog.text and "data" not in caplog.text.split("ignoring")[1].split("(")[0]
    args = yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())
    assert args["data"] == str(new_yaml) and (tmp_path / "run" / "results.csv").read_text().count("\n") == 3


def test_a_bare_resume_continues_the_latest_run_of_the_project(finished_run, tmp_path, capsys):
    """``yolotr train --resume`` without a run folder, as YOLOv5's and the package's bare ``resume``: the
    ``last.pt`` written last under ``--project`` (it needed a path: argparse refused the bare flag)."""
    import os
    import shutil

    from yolotr.cli import main

    project = tmp_path / "runs"
    for name, mtime in (("older", 1_000_000), ("newer", 2_000_000), ("oldest", 500_000)):
        shutil.copytree(finished_run, project / name)
        os.utime(project / name / "weights" / "last.pt", (mtime, mtime))
    rows = {n: (project / n / "results.csv").read_text().count("\n") for n in ("older", "newer", "oldest")}
    epochs = rows["newer"]  # the rows are a header and one per epoch done (an earlier test may have added one)
    assert main(["train", "--resume", "--project", str(project), "--epochs", str(epochs)]) == 0
    after = {n: (project / n / "results.csv").read_text().count("\n") for n in rows}
    assert after == {**rows, "newer": rows["newer"] + 1}
    assert main(["train", "--resume", "--project", str(tmp_path / "none")]) == 2
    assert "none: no run to resume" in capsys.readouterr().err
