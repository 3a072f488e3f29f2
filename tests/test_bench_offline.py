"""bench/train.py's reference sides on a machine with only the reference packages (the GPU machine:
``gpu-pack`` carries the ``yolov5`` and ``ultralytics`` wheels, not the ``roboflow`` package YOLOv5's
``train.py`` imports nor the ``polars`` the ultralytics trainer reads results.csv with)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

# a meta path finder that makes roboflow (and what only it needs) unimportable, as on the GPU machine
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"roboflow", "dotenv", "filetype", "pillow_avif", "requests_toolbelt"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


@pytest.mark.skipif(importlib.util.find_spec("yolov5") is None, reason="the yolov5 package is not installed")
def test_the_official_trainer_imports_without_roboflow():
    check = BLOCK + "\n".join(
        [
            f"sys.path.insert(0, {str(REPO / 'bench')!r})",
            "try:\n    import yolov5.train\nexcept ModuleNotFoundError as e:\n    print('without:', e.name)",
            "from train_official import stand_in_for_roboflow",
            "assert stand_in_for_roboflow()",
            "import yolov5.train",
            "from roboflow import Roboflow",
            "try:\n    Roboflow()\nexcept RuntimeError as e:\n    print('use:', e)",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "without: roboflow" in proc.stdout  # the failure the GPU machine would meet
    assert "use: roboflow is not installed" in proc.stdout


def test_results_csv_without_polars_reads_what_polars_reads(tmp_path, monkeypatch):
    """The ultralytics side's stand-in for ``read_results_csv`` (every checkpoint it saves calls it) gives the
    columns polars gives, on a results.csv written as the package's ``save_metrics`` writes it."""
    pl = pytest.importorskip("polars")
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from train_ultralytics import results_columns

    keys = ["epoch", "time", "train/box_loss", "metrics/mAP50-95(B)", "lr/pg0"]
    rows = [[1, 12.5, 3.25, 0.0, 0.0033], [2, 24.75, 2.875, 0.0125, 0.0066]]
    path = tmp_path / "results.csv"
    path.write_text(",".join(keys) + "\n" + "".join(",".join(f"{v:.6g}" for v in r) + "\n" for r in rows))
    expected = pl.read_csv(path.read_bytes(), infer_schema_length=None).to_dict(as_series=False)
    assert results_columns(path) == expected and list(expected) == keys
    assert results_columns(tmp_path / "missing.csv") == {}
