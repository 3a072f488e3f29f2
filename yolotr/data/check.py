"""``yolotr check-data``: every label problem of a dataset and a per-class count table."""

from __future__ import annotations

import os

import numpy as np

from yolotr.data.sources import DatasetConfig, load_dataset_config, load_records
from yolotr.errors import DataError


def check_data(data: str | os.PathLike | dict | DatasetConfig, cache: bool = True) -> str:
    """Validate every split of a dataset; return the printable report.

    The report lists each problem as ``file:line: severity: message``, a headline per split and a
    table of images and boxes per class and split. A split without any usable image is reported
    (not raised); a YAML that cannot be read raises :class:`~yolotr.errors.DataError`.
    """
    config = load_dataset_config(data)
    out = [f"dataset {config.source} ({config.format}, {config.nc} classes, root {config.root})"]
    table: dict[str, tuple[list[int], list[int], int]] = {}
    for split in config.splits:
        try:
            records, report = load_records(config, split, cache=cache)
        except DataError as exc:
            out += [str(exc), ""]
            continue
        out += [report.summary(), ""]
        images = np.zeros(config.nc, np.int64)
        for r in records:
            images[np.unique(r.classes)] += 1
        table[split] = (images.tolist(), report.class_counts, report.n_usable)
    if table:
        out.append(_table(config.names, table))
    return "\n".join(out).rstrip() + "\n"


def _table(names: list[str], table: dict[str, tuple[list[int], list[int], int]]) -> str:
    """Images and boxes per class and split; the last row counts all usable images and boxes."""
    header = ["class"] + [f"{split} {what}" for split in table for what in ("images", "boxes")]
    rows = [[name] + [str(v[k][i]) for v in table.values() for k in (0, 1)] for i, name in enumerate(names)]
    rows.append(["all"] + [str(x) for v in table.values() for x in (v[2], sum(v[1]))])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if c == 0 else f"{{:>{w}}}" for c, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])
