"""``bench/train.py --family rtdetr``: the width-reduced RT-DETR-l both sides train (``bench/rtdetr-l-w25.yaml``)
builds alike in yolotr and the ``ultralytics`` package, and the comparison's dry run goes through every child
(both trainers, the package's validator on yolotr's weights, yolotr's on the package's) to the bars."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from yolotr.models.detection import DetectionModel

MODEL = REPO / "bench" / "rtdetr-l-w25.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_bench_model_is_the_packages_model() -> None:
    """Same parameters (count, names, shapes) and, on the package's weights, the same detections."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import RTDETRDetectionModel

    with contextlib.redirect_stdout(io.StringIO()):
        theirs = RTDETRDetectionModel(str(MODEL), nc=3, verbose=False).eval()
    ours = DetectionModel(MODEL, nc=3).eval()
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters()) and count == 1_929_524
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.model[-1].num_queries == 100 and ours.model[-1].hidden_dim == 64
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x)[0], theirs(x)[0]
    assert a.shape == b.shape == (2, 100, 6)  # top-k (query, class) pairs: no NMS on either side
    torch.testing.assert_close(a[..., 4], b[..., 4], atol=1e-5, rtol=1e-4)  # the scores (ours: xyxy pixels)


@pytest.mark.timeout(240)  # ~40 s on a busy 2-core machine
def test_dry_run_compares_both_trainers(tmp_path) -> None:
    pytest.importorskip("ultralytics")
    cmd = [sys.executable, str(REPO / "bench" / "train.py"), "--family", "rtdetr", "--dry-run"]
    cmd += ["--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=220, cwd=tmp_path, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "train rtdetr-l-w25.yaml from scratch on shapes" in proc.stdout and "auto (AdamW)" in proc.stdout
    for row in ("images/s median epoch", "peak RSS main (MiB)", "mAP50-95 package val", "mAP50-95 yolotr val"):
        assert row in proc.stdout, row
    assert "bar: images/s (median epoch) >= 1.0x" in proc.stdout
    # optimizer auto: the same choice on both sides (AdamW, lr0 0.002 x 5 / (4 + 3 classes), no bias warmup)
    ours = (tmp_path / "rtdetr-yolotr-seed0.log").read_text()
    assert "optimizer: auto -> AdamW (lr0=0.001429, momentum=0.9, warmup_bias_lr=0" in ours
    theirs = (tmp_path / "rtdetr-ultralytics-seed0.log").read_text()
    assert "AdamW(lr=0.001429, momentum=0.9)" in theirs
