"""What the CLI shows, a Python user sees: the ``yolotr`` logger's handler, ``verbose=False``, no doubles.

Logging configuration is global to a process, so each case runs a small script in a fresh one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from tests.conftest import shared_path
from tests.test_cli_errors import run_cli
from yolotr.logs import get_logger, verbosity

SUMMARY = "summary: 270 layers, 1,767,976 parameters"  # yolov5n.yaml at 3 classes


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )


def test_info_reaches_a_python_user_and_verbose_false_silences(tmp_path):
    proc = run_python(
        """
        from yolotr import YOLO

        model = YOLO("yolov5n.yaml", nc=3)
        print("-- quiet --", flush=True)
        table = YOLO("yolov5n.yaml", nc=3, verbose=False).info(imgsz=128, verbose=False)["table"]
        assert "Detect" in table
        print("-- loud --", flush=True)
        model.info(imgsz=128)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["-- quiet --", "-- loud --"]
    lines = proc.stderr.splitlines()
    assert lines[0] == "overriding model.yaml nc=80 with nc=3"  # plain format: the message only
    assert lines.count("overriding model.yaml nc=80 with nc=3") == 1  # the quiet YOLO(...) said nothing
    assert sum(SUMMARY in line for line in lines) == 1
    assert any(" Detect " in line for line in lines)


def test_imported_checkpoint_message_reaches_a_python_user(tmp_path):
    weights = shared_path("weights", "yolov5n.pt")
    proc = run_python(f"from yolotr import YOLO; YOLO({str(weights)!r})", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"{weights}: imported official YOLOv5 checkpoint (349 tensors, 80 classes)"]


def test_an_application_that_configured_logging_gets_no_extra_handler(tmp_path):
    proc = run_python(
        """
        import logging

        logging.basicConfig(level=logging.INFO, format="APP %(name)s: %(message)s")
        from yolotr import YOLO

        YOLO("yolov5n.yaml", nc=3).info(imgsz=128)
        print(len(logging.getLogger("yolotr").handlers), logging.getLogger("yolotr").propagate)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]
    lines = proc.stderr.splitlines()
    assert lines[0] == "APP yolotr: overriding model.yaml nc=80 with nc=3"
    assert sum(SUMMARY in line for line in lines) == 1


def test_logging_configured_after_first_use_does_not_double(tmp_path):
    proc = run_python(
        """
        import logging
        from yolotr import YOLO

        model = YOLO("yolov5n.yaml", nc=3)
        logging.basicConfig(level=logging.INFO, format="APP %(message)s")
        model.info(imgsz=128)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sum(SUMMARY in line for line in proc.stderr.splitlines()) == 1


def test_set_verbosity_silences_info_but_not_warnings(tmp_path):
    proc = run_python(
        """
        import logging
        import yolotr
        from yolotr import YOLO

        yolotr.set_verbosity(False)
        YOLO("yolov5n.yaml", nc=3).info(imgsz=128)
        logging.getLogger("yolotr").warning("still shown")
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["still shown"]


def test_cli_shows_each_message_once(tmp_path):
    proc = run_cli("info", "--model", "yolov5n.yaml", "--nc", "3", "--imgsz", "128", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["overriding model.yaml nc=80 with nc=3"]
    assert sum(SUMMARY in line for line in proc.stdout.splitlines()) == 1


def test_verbosity_restores_the_level():
    logger = get_logger()
    before = logger.level
    with verbosity(False):
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
        with verbosity(logging.DEBUG):
            assert logger.isEnabledFor(logging.DEBUG)
        assert not logger.isEnabledFor(logging.INFO)
    assert logger.level == before
