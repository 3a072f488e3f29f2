"""bench/gpu_check.sh --dry-run: the GPU check's steps run on the CPU with tiny sizes and print one table,
so the script is known to work before a GPU runs it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, shared_path
from yolotr.models.detection import CFG_DIR

GLOBS = ("*-c3tr.yaml", "*-transformerc3.yaml", "*-swinv2.yaml", "*-swinv2-aifi.yaml", "*-hwd.yaml")
CONFIGS = sorted({p.name for pattern in GLOBS for p in CFG_DIR.glob(pattern)})


def _rows(table: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``(check, item) -> (status, detail)`` for every row of the printed table."""
    rows = {}
    for line in table.splitlines():
        match = re.match(
            r"^(train|resume|ddp|latency|swin|predict-api|predict|syncs|trainer)\s+(.+?)\s+"
            r"(PASS|FAIL|MISS|SKIP|INFO)\s+(.*)$",
            line,
        )
        if match:
            rows[(match[1], match[2])] = (match[3], match[4])
    return rows


@pytest.mark.timeout(1000)  # a few minutes on an idle 2-core machine; more when it is shared
def test_dry_run_runs_every_step_and_prints_one_table(tmp_path):
    shared_path("data", "raccoon")
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=960, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("yolotr GPU check: CPU dry run")
    rows = _rows(proc.stdout)

    trained = {item: v for (check, item), v in rows.items() if check == "train"}
    assert len(trained) == len(CONFIGS) >= 12  # each shipped Transformer config, unified ones at scale n
    for item, (status, detail) in trained.items():  # fp16 with loss scaling on the CPU: the guard never acts
        assert status == "PASS" and "steps fp16, 0 faults, 0 roll backs" in detail, (item, detail)
    assert "yolov8n-hwd.yaml" in trained and "yolo11n-transformerc3.yaml" in trained

    status, detail = rows[("resume", "yolov5n-swinv2.yaml")]
    assert status == "PASS" and "max |resumed - straight| 0.00e+00" in detail and "bitwise" in detail

    status, detail = rows[("ddp", "yolov5n-transformerc3.yaml")]
    assert status == "PASS" and detail.startswith("gloo x2") and "0 skipped" in detail

    predict = {item: v for (check, item), v in rows.items() if check == "predict"}
    assert set(predict) == {f"{m} 64 fp32 b1" for m in ("yolov5n", "yolov8n")}
    references = importlib.util.find_spec("yolov5") is not None and importlib.util.find_spec("ultralytics")
    for item, (status, detail) in predict.items():
        assert status == "INFO" and "yolotr eager" in detail, item
        if references:
            assert re.search(r"(YOLOv5|ultralytics) eager fused [\d.]+ ms, ratio [\d.]+", detail), detail

    api = {item: v for (check, item), v in rows.items() if check == "predict-api"}
    assert set(api) == {f"{m} fp32 YOLO.predict" for m in ("yolov5n", "yolov8n")}
    assert all(status == "PASS" and re.match(r"\d+ photos, [1-9]\d* boxes", detail) for status, detail in api.values())

    status, detail = rows[("syncs", "yolov5n.yaml")]
    assert status == "INFO" and "per step over" in detail
    status, detail = rows[("trainer", "anchor-free")]
    assert status == "INFO" and "images/s" in detail, detail

    swin = [v for (check, _), v in rows.items() if check == "swin"]
    assert len(swin) == 2 and all(status == "INFO" and "x faster" in detail for status, detail in swin)
    assert not any(status == "FAIL" for status, _ in rows.values()), proc.stdout


def test_without_cuda_the_check_asks_for_the_dry_run():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--only", "swin"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no CUDA device: run with --dry-run for the CPU rehearsal" in proc.stderr


def test_a_timed_out_trainer_bench_leaves_no_process_behind(tmp_path, monkeypatch):
    """bench/train.py starts one process per side: a timeout kills the whole group, so nothing goes on
    holding the GPU after the check, and the check's row says the time ran out (not a FAIL)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from gpu_rows import _run_group

    side = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {side!r}]); time.sleep(60)"
    log = tmp_path / "trainbench.log"
    started = time.monotonic()
    status, _ = _run_group([sys.executable, "-c", script], 3.0, log)
    assert status is None and time.monotonic() - started < 20  # not held until the side's own end (60 s)
    side_pid = int(log.read_text().split()[0])
    for _ in range(50):
        try:
            os.kill(side_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the side process {side_pid} outlived the timeout")
    assert _run_group([sys.executable, "-c", "import sys; sys.exit(3)"], 30.0, log)[0] == 3
