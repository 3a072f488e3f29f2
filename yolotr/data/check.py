"""``yolotr check-data``: every label problem of a dataset and a per-class count table.

Exit codes of the command (:attr:`DataCheck.exit_code`): 0 when no split has an error (warnings
only, or nothing), 1 when some image is left out or a label file is ignored because of an error,
3 when a split has no usable image at all (training or validating on it stops). A dataset YAML
that cannot be read raises :class:`~yolotr.errors.DataError`, which the CLI turns into exit 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from yolotr.data.report import DataReport
from yolotr.data.sources import DatasetConfig, load_dataset_config, no_box_warning, scan_split
from yolotr.errors import DataError

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_NO_USABLE_IMAGE = 3


@dataclass
class DataCheck:
    """The outcome of :func:`check_data`.

    Attributes:
        text: the printable report (``str(check)`` gives it too).
        reports: the report of each split that could be listed.
        unusable: split -> why it has no usable image (no image passed, or its entries could not
            be listed).
    """

    text: str
    reports: dict[str, DataReport] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 clean or warnings only, 1 errors, 3 a split without a usable image."""
        if self.unusable:
            return EXIT_NO_USABLE_IMAGE
        if any(r.errors for r in self.reports.values()):
            return EXIT_ERRORS
        return EXIT_OK

    def __str__(self) -> str:
        return self.text


def check_data(data: str | os.PathLike | dict | DatasetConfig, cache: bool = True) -> DataCheck:
    """Validate every split of a dataset; return the printable report and its exit code.

    Per split the report gives its headline (images usable and left out, and why), then each of
    its problems once, as ``file:line: severity: message``; then a table of images and boxes per
    class and split, and one line per split without a usable image. Nothing is logged.

    Raises:
        DataError: the dataset YAML cannot be read.
    """
    config = load_dataset_config(data)
    classes = f"{config.nc} class{'es' if config.nc != 1 else ''}"
    out = [f"dataset {config.source} ({config.format}, {classes}, root {config.root})", ""]
    check = DataCheck("")
    table: dict[str, tuple[list[int], list[int], int]] = {}
    for split in config.splits:
        try:
            records, report = scan_split(config, split, cache=cache)
        except DataError as exc:
            out += [f"{split}: cannot be read: {exc}", ""]
            check.unusable[split] = str(exc)
            continue
        check.reports[split] = report
        out += [report.summary(), ""]
        if not records:
            check.unusable[split] = "no image passed validation"
        elif report.n_boxes == 0:
            out += [f"warning: {no_box_warning(config, split, len(records))}", ""]
        images = np.zeros(config.nc, np.int64)
        for r in records:
            images[np.unique(r.classes)] += 1
        table[split] = (images.tolist(), report.class_counts, report.n_usable)
    if table:
        out += [_table(config.names, table), ""]
    for split, why in check.unusable.items():
        out.append(f"error: split '{split}' has no usable image ({why}): training or validating on it stops")
    check.text = "\n".join(out).rstrip() + "\n"
    return check


def _table(names: list[str], table: dict[str, tuple[list[int], list[int], int]]) -> str:
    """Images and boxes per class and split; the last row counts all usable images and boxes."""
    header = ["class"] + [f"{split} {what}" for split in table for what in ("images", "boxes")]
    rows = [[name] + [str(v[k][i]) for v in table.values() for k in (0, 1)] for i, name in enumerate(names)]
    rows.append(["all"] + [str(x) for v in table.values() for x in (v[2], sum(v[1]))])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if c == 0 else f"{{:>{w}}}" for c, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])
