"""Drawing and plotting: boxes on images (OpenCV), curves (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

PALETTE = [
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
]  # fmt: skip


def class_color(index: int) -> tuple[int, int, int]:
    """A stable RGB colour for a class index."""
    return PALETTE[int(index) % len(PALETTE)]


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    classes: np.ndarray,
    names: list[str],
    line_width: int | None = None,
    labels: bool = True,
) -> np.ndarray:
    """Draw labelled boxes on a copy of an RGB ``(H, W, 3)`` uint8 image.

    Args:
        boxes: ``(N, 4)`` xyxy pixels. scores: ``(N,)`` or None (ground truth, or no scores in the labels).
        classes: ``(N,)`` ints. line_width: box line width in pixels (None: 0.3 % of the image's mean side).
        labels: write the class name (and score) above each box.
    """
    canvas = np.ascontiguousarray(image.copy())
    h, w = canvas.shape[:2]
    thickness = int(line_width) if line_width else max(round((h + w) / 2 * 0.003), 1)
    font_scale = max(thickness / 3, 0.4)
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = class_color(int(cls))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if not labels:
            continue
        name = names[int(cls)] if int(cls) < len(names) else str(int(cls))
        label = name if scores is None else f"{name} {float(scores[i]):.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(thickness - 1, 1))
        top = y1 - th - 4 >= 0
        y_text = y1 - 2 if top else y1 + th + 2
        cv2.rectangle(canvas, (x1, y1 - th - 4 if top else y1), (x1 + tw + 2, y1 if top else y1 + th + 4), color, -1)
        cv2.putText(
            canvas, label, (x1 + 1, y_text), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
            max(thickness - 1, 1), cv2.LINE_AA,
        )  # fmt: skip
    return canvas


def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, layout: str | None = "tight"):
    """A matplotlib ``Figure`` drawn by the Agg backend and its ``(nrows, ncols)`` axes array.

    pyplot is not used, so the caller's matplotlib backend and figure list are left alone and there
    is nothing to close. matplotlib is imported on first use. ``layout=None``: the caller places the axes
    (``tight`` measures every tick label of every panel, half the time of a grid of 20 small panels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def plot_pr_curve(
    recall: np.ndarray, precision: np.ndarray, names: list[str], path: str | Path, ap50: np.ndarray | None = None
) -> Path:
    """Precision-recall curves per class and their mean, saved as an image.

    Args:
        recall: ``(R,)`` float recall points (COCO: 101 points in ``[0, 1]``).
        precision: ``(nc, R)`` float precision at those points; rows of NaN (no ground truth) are skipped.
        names: class names. path: output image file.
        ap50: ``(nc,)`` AP50 per class for the legend (NaN entries skipped); the mean is shown too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    precision = np.asarray(precision, np.float64).reshape(len(names), -1)
    rows = [c for c in range(len(names)) if not np.isnan(precision[c]).all()]
    fig, axes = _figure((9, 6))
    ax = axes[0, 0]
    per_class_legend = len(rows) < 21
    for c in rows:
        label = None
        if per_class_legend:
            label = names[c] if ap50 is None else f"{names[c]} {float(ap50[c]):.3f}"
        ax.plot(recall, precision[c], linewidth=1, label=label, color="grey" if not per_class_legend else None)
    if rows:
        mean_label = "all classes"
        if ap50 is not None:
            mean_label += f" {float(np.nanmean(np.asarray(ap50, np.float64)[rows])):.3f} mAP@0.5"
        ax.plot(recall, precision[rows].mean(0), linewidth=3, color="blue", label=mean_label)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("Precision-Recall curve (IoU 0.50)")
    if rows:
        ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    fig.savefig(path, dpi=200)
    return path


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: str | Path, normalize: bool = True) -> Path:
    """A confusion matrix heat map with a background row and column, saved as an image.

    Args:
        matrix: ``(nc + 1, nc + 1)`` counts, ``matrix[predicted, true]``; index ``nc`` is background.
        names: the ``nc`` class names.
        path: output image file.
        normalize: divide each column (true class) by its sum.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = np.asarray(matrix, np.float64)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(0, keepdims=True), 1)
    labels = [*names, "background"]
    n = len(labels)
    size = min(max(6.0, 0.35 * n + 3), 24.0)
    fig, axes = _figure((size, size * 0.8))
    ax = axes[0, 0]
    shown = np.where(matrix > 0.005 if normalize else matrix > 0, matrix, np.nan)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ticks = np.arange(n)
        ax.set_xticks(ticks, labels, rotation=90)
        ax.set_yticks(ticks, labels)
        for i in range(n):
            for j in range(n):
                if not np.isnan(shown[i, j]):
                    text = f"{shown[i, j]:.2f}" if normalize else f"{int(shown[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion matrix" + (" (normalized by true class)" if normalize else ""))
    fig.savefig(path, dpi=200)
    return path


def plot_results_csv(csv_path: str | Path, path: str | Path | None = None) -> Path:
    """Loss and metric curves of a ``results.csv`` (one row per epoch), one panel per column.

    The first column named ``epoch`` (if any) is the x axis; every other numeric column becomes a
    panel. Returns the image path (default: ``results.png`` beside the CSV).
    """
    import csv

    csv_path = Path(csv_path)
    path = Path(path) if path is not None else csv_path.with_name("results.png")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
    columns: dict[str, np.ndarray] = {}
    for key in rows[0] if rows else []:
        try:
            column = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
        except ValueError:
            continue
        if key == "epoch" or not np.isnan(column).all():  # a column with no value yet (no validation) has no panel
            columns[key] = column
    x = columns.pop("epoch", np.arange(len(rows), dtype=np.float64))
    n = max(len(columns), 1)
    ncols = min(5, n)
    nrows = (n + ncols - 1) // ncols
    width, height = 3.2 * ncols, 2.8 * nrows  # inches
    fig, axes = _figure((width, height), nrows, ncols, layout=None)
    # fixed margins (in inches, as each panel's size is): what tight_layout finds for these panels, at half the cost
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.35 / height,
                        wspace=0.35, hspace=0.55)  # fmt: skip
    for ax, (key, y) in zip(axes.ravel(), columns.items()):
        ax.plot(x, y, marker=".", linewidth=1.5, markersize=6)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[len(columns) :]:
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
