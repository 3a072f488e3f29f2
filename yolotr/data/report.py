"""What a scan of one dataset split found: usable images, boxes per class, problems, images left out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from yolotr.data.label_cache import CachedSplit
from yolotr.data.validation import Problem


@dataclass
class DataReport:
    """Everything :func:`scan_split` found about one split.

    ``n_images`` counts every image the split names; ``n_usable`` of them are used and the rest
    are in ``left_out`` as ``(image path, kind of its first error)``.
    """

    split: str
    names: list[str]
    n_images: int = 0
    n_usable: int = 0
    n_boxes: int = 0
    n_background: int = 0
    problems: list[Problem] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def reasons(self) -> dict[str, int]:
        """Images left out per reason, most frequent first."""
        counts = Counter(reason for _, reason in self.left_out)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def headline(self) -> str:
        """``train: 8/20 images usable, 12 left out (5 class out of range, ...), 9 boxes, ...``."""
        out = f"{self.split}: {self.n_usable}/{self.n_images} images usable"
        if self.left_out:
            why = ", ".join(f"{n} {reason}" for reason, n in self.reasons().items())
            out += f", {len(self.left_out)} left out ({why})"
        return (
            f"{out}, {self.n_boxes} boxes, {self.n_background} backgrounds, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )

    def summary(self, max_problems: int | None = None, source: str | None = None) -> str:
        """The headline, then the problems indented, one per line (``file:line: severity: message``).

        With ``max_problems``, the rest is one line pointing to ``yolotr check-data --data source``.
        """
        shown = self.problems if max_problems is None else self.problems[:max_problems]
        lines = [self.headline(), *(f"  {p}" for p in shown)]
        if len(shown) < len(self.problems):
            how = f"`yolotr check-data --data {source}`" if source and source != "<dict>" else "`yolotr check-data`"
            lines.append(f"  ... and {len(self.problems) - len(shown)} more: {how} lists them all")
        return "\n".join(lines)


def split_report(split: str, names: list[str], found: CachedSplit, problems: list[Problem]) -> DataReport:
    """The report of one scanned split: ``found``'s records counted per class (``len(names)`` classes)."""
    records = found.records
    nc = len(names)
    counts = np.bincount(
        np.concatenate([r.classes for r in records]) if records else np.zeros(0, np.int64), minlength=nc
    )
    return DataReport(
        split=split,
        names=list(names),
        n_images=found.n_images,
        n_usable=len(records),
        n_boxes=int(counts.sum()),
        n_background=sum(len(r.classes) == 0 for r in records),
        problems=list(problems),
        class_counts=[int(c) for c in counts[:nc]],
        left_out=list(found.left_out),
    )
