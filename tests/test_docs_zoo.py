"""README's model zoo says what ``yolotr info`` counts: every row's parameters at 80 classes and GFLOPs at 640."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from yolotr import YOLO

LARGE = 20_000_000  # rows of larger models take 1-2 s each to build and count: in the slow set


def _zoo_rows() -> list[tuple[str, int, float]]:
    """``(config, params, gflops)`` per model of the table; ``a / b`` cells split, ``yolov5n-hwd / s`` read as
    yolov5n-hwd and yolov5s-hwd."""
    table = README.split("## Model zoo")[1].split("\n\n")[2]
    rows = []
    for line in table.splitlines()[2:]:
        names, _, params, gflops = (cell.strip() for cell in line.strip("|").split(" | "))
        names = [n.strip() for n in names.split("/")]
        names = [re.sub(r"^(yolov?\d+)n", r"\g<1>s", names[0], count=1) if n == "s" else n for n in names]
        counts = [int(p.replace(",", "")) for p in params.split("/")]
        flops = [float(g) for g in gflops.split("/")]
        rows += list(zip(names, counts, flops, strict=True))
    return rows


README = (REPO / "README.md").read_text(encoding="utf-8")
ROWS = _zoo_rows()


def test_the_table_is_read_whole():
    names = [name for name, *_ in ROWS]
    assert len(names) == len(set(names)) >= 40
    assert {"yolov5s-transformerc3", "yolo26s-hwd", "rtdetr-resnet50", "yolov4-s"} <= set(names)


@pytest.mark.parametrize(
    ("config", "params", "gflops"),
    [pytest.param(*row, marks=pytest.mark.slow) if row[1] > LARGE else row for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_zoo_row_is_what_info_counts(config, params, gflops):
    info = YOLO(f"{config}.yaml", verbose=False).info(imgsz=640, verbose=False)
    assert (info["params"], round(info["gflops"], 1)) == (params, gflops)
