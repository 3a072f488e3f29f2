"""A training run's ``results.csv`` (a row per epoch) and its plot ``results.png``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from yolotr.files import write_atomically

CSV_METRICS = ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95")


def trim_results_rows(save_dir: Path, epochs_done: int) -> None:
    """Drop the rows of ``save_dir/results.csv`` after epoch ``epochs_done`` (1-based ``epoch`` column): a
    resume from a checkpoint that a kill kept from being replaced writes those epochs again."""
    path = Path(save_dir) / "results.csv"
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def kept(line: str) -> bool:
        first = line.split(",", 1)[0].strip()
        return not first.isdigit() or int(first) <= epochs_done

    rows = lines[:1] + [line for line in lines[1:] if kept(line)]
    if rows != lines:
        write_atomically(path, lambda f: f.write("".join(rows).encode()))


def append_results_row(
    save_dir: Path,
    epoch: int,
    loss_names: list[str],
    mean_loss: list[float],
    metrics: dict,
    lrs: list[float],
    elapsed: float,
    amp: dict,
) -> None:
    """Append epoch ``epoch`` (0-based) to ``save_dir/results.csv``, writing the header first in a new file.

    Columns: ``epoch``, ``train/<item>_loss`` per loss item, the validation metrics, ``val/<item>_loss`` (the
    same loss on the validation split, as the ``ultralytics`` package writes it; both NaN on epochs without
    validation), ``lr`` (first parameter group), ``lr/pg0``, ``lr/pg1``, ... (every parameter group's, in the
    optimizer's order, as the package's ``results.csv`` and our TensorBoard tags number them), ``time`` (seconds
    since the start), then ``amp/...``
    (``overflow_steps``: optimizer steps GradScaler skipped in this epoch as fp16 overflows;
    ``loss_scale``: the loss scale at its end, 1 without fp16 loss scaling). A file begun by an earlier
    version keeps its own header: the row fills those columns (a resumed run stays one readable table).
    """
    path = Path(save_dir) / "results.csv"
    val_losses = [f"val/{n}_loss" for n in loss_names]
    header = [
        "epoch",
        *(f"train/{n}_loss" for n in loss_names),
        *CSV_METRICS,
        *val_losses,
        "lr",
        *(f"lr/pg{i}" for i in range(len(lrs))),
        "time",
        *amp,
    ]
    row = [
        epoch + 1,
        *(round(v, 6) for v in mean_loss),
        *(round(float(metrics.get(k, math.nan)), 6) for k in (*CSV_METRICS, *val_losses)),
        round(lrs[0], 8),
        *(round(lr, 8) for lr in lrs),
        round(elapsed, 1),
        *amp.values(),
    ]
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            existing = next(csv.reader(f), header)
        with path.open("rb+") as f:  # an edited file may end without its newline: the row would join the last
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
        values = dict(zip(header, row))
        header, row = existing, [values.get(k, math.nan) for k in existing]
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerow(row)


def plot_results(save_dir: Path) -> None:
    """``results.png`` from ``results.csv`` (nothing without matplotlib or the CSV)."""
    try:
        from yolotr.plotting import plot_results_csv
    except ImportError:
        return
    csv_path = Path(save_dir) / "results.csv"
    if csv_path.exists():
        plot_results_csv(csv_path, Path(save_dir) / "results.png")


def read_curves(csv_path: Path) -> dict[str, list[float]]:
    """``results.csv`` -> ``{column: [value per epoch]}`` (one row per epoch; a repeated epoch keeps its
    last row); empty when the file does not exist."""
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = {}
        for row in csv.DictReader(f):
            try:
                rows[int(float(row["epoch"]))] = row
            except (KeyError, TypeError, ValueError):
                continue
    columns: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            try:
                columns.setdefault(key.strip(), []).append(float(value))
            except (AttributeError, TypeError, ValueError):
                columns.setdefault(key.strip(), []).append(math.nan)
    return columns
