"""The numbers and pictures of a comparison: paired t-intervals, the table, its files and plots.

:func:`summarize` turns run records into one row per model (mean ± sd over the seeds, the paired
difference to the baseline with its 95% t-interval); :func:`format_table` and
:func:`format_markdown` print it; :func:`write_outputs` writes ``runs.csv``, ``compare.csv``,
``compare.md`` and the plots ``compare_map.png`` and ``compare_curves.png``.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from pathlib import Path

LOGGER = logging.getLogger("yolotr")
METRICS = ("mAP50", "mAP50-95")

# two-sided 95% quantiles of Student's t (scipy.stats.t.ppf(0.975, df)), used when scipy is absent;
# between tabulated degrees of freedom the smaller one is taken, which makes the interval a bit wider
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the 95% two-sided interval)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy.stats import t
    except ImportError:
        known = [k for k in _T975 if k <= df]
        return _T975[max(known)] if df <= 120 else 1.960
    return float(t.ppf(0.975, df))


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean of the per-seed differences and its 95% t-interval ``(mean, low, high)``.

    ``mean ± t(0.975, n - 1) · sd / √n`` with the sample standard deviation; ``low`` and ``high``
    are NaN for fewer than two differences.
    """
    n = len(differences)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = t_quantile(n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def summarize(records: list[dict], models: list[dict]) -> list[dict]:
    """One row per model, from the run records (failed runs left out).

    Args:
        records: run records (``stem``, ``seed``, ``status``, ``metrics``).
        models: ``{"stem", "model", "params", "gflops", "latency_ms"}`` per model; the first is the baseline.

    Returns:
        Per model: ``model``, ``source``, ``params``, ``gflops``, ``latency_ms``, ``seeds`` (finished
        seeds, ascending), and for each metric ``m`` of ``mAP50`` and ``mAP50-95``: ``m`` (values in
        seed order), ``m_mean``, ``m_sd`` (NaN for one seed), and ``m_diff``, ``m_low``, ``m_high``,
        ``m_pairs`` (difference to the baseline over the seeds both finished; NaN and 0 for the baseline).
    """
    done = [r for r in records if r["status"] != "failed"]
    by_model = {m["stem"]: {r["seed"]: r["metrics"] for r in done if r["stem"] == m["stem"]} for m in models}
    baseline = by_model[models[0]["stem"]]
    rows = []
    for k, m in enumerate(models):
        runs = by_model[m["stem"]]
        seeds = sorted(runs)
        row = {
            "model": m["stem"],
            "source": m["model"],
            "params": m["params"],
            "gflops": m["gflops"],
            "latency_ms": m.get("latency_ms", math.nan),
            "seeds": seeds,
        }
        for metric in METRICS:
            values = [float(runs[s][metric]) for s in seeds]
            row[metric] = values
            row[f"{metric}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else math.nan
            paired = [s for s in seeds if s in baseline]
            diffs = [float(runs[s][metric]) - float(baseline[s][metric]) for s in paired] if k else []
            mean, low, high = paired_interval(diffs)
            row.update({f"{metric}_diff": mean, f"{metric}_low": low, f"{metric}_high": high})
            row[f"{metric}_pairs"] = len(diffs)
        rows.append(row)
    return rows


def _n(x: float, sign: str = "") -> str:
    """Three decimals, or two significant digits for a value below 0.01 (``0.00042``, not ``0.000``), so that
    the small values of short runs can be told apart; ``sign="+"`` always shows the sign."""
    return f"{x:{sign}.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:{sign}.2g}"


def _mean_sd(row: dict, metric: str) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if math.isnan(mean):
        return "-"
    return _n(mean) if math.isnan(sd) else f"{_n(mean)} ± {_n(sd)}"


def _difference(row: dict, metric: str, baseline: bool) -> str:
    if baseline:
        return "baseline"
    diff, low, high = row[f"{metric}_diff"], row[f"{metric}_low"], row[f"{metric}_high"]
    if math.isnan(diff):
        return "-"
    if math.isnan(low):
        return f"{_n(diff, '+')} (1 seed: no interval)"
    sure = " *" if low > 0 or high < 0 else ""
    return f"{_n(diff, '+')} [{_n(low, '+')}, {_n(high, '+')}]{sure}"


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the table (one list per model); no ``CPU ms`` column when no model was timed
    (``latency_runs`` 0)."""
    timed = any(not math.isnan(row["latency_ms"]) for row in rows)
    header = [
        "model", "params", "GFLOPs", *(["CPU ms"] if timed else []), "seeds",
        "mAP50", "Δ mAP50 (95% CI)", "mAP50-95", "Δ mAP50-95 (95% CI)",
    ]  # fmt: skip
    cells = []
    for k, row in enumerate(rows):
        latency = row["latency_ms"]
        cells.append(
            [
                row["model"],
                f"{row['params']:,}",
                f"{row['gflops']:.3g}",
                *(["-" if math.isnan(latency) else f"{latency:.1f}"] if timed else []),
                str(len(row["seeds"])),
                _mean_sd(row, "mAP50"),
                _difference(row, "mAP50", k == 0),
                _mean_sd(row, "mAP50-95"),
                _difference(row, "mAP50-95", k == 0),
            ]
        )
    return header, cells


def format_table(rows: list[dict]) -> str:
    """The table as text, columns aligned (names left, numbers right)."""
    header, cells = table_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = []
    for line in [header, *cells]:
        parts = [line[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(line[1:], widths[1:]))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_markdown(rows: list[dict]) -> str:
    header, cells = table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--", *["--:"] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


FOOTNOTE = (
    "mean ± sd over seeds; Δ = model - baseline, mean of the per-seed differences with its 95% t-interval; "
    "* the interval excludes 0"
)


def write_outputs(save_dir: Path, records: list[dict], rows: list[dict], header: str) -> tuple[str, str]:
    """``runs.csv``, ``compare.csv``, ``compare.md`` and the two plots; returns (text table, Markdown table)."""
    with open(save_dir / "runs.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "seed", "status", "mAP50", "mAP50-95", "precision", "recall", "seconds", "run_dir"])
        for r in records:
            values = [r["metrics"].get(k, "") for k in ("mAP50", "mAP50-95", "precision", "recall")]
            writer.writerow([r["stem"], r["seed"], r["status"], *values, r["seconds"], r["run_dir"]])
    numeric = ["model", "params", "gflops", "latency_ms", "seeds"]
    for metric in METRICS:
        numeric += [f"{metric}_{s}" for s in ("mean", "sd", "diff", "low", "high", "pairs")]
    with open(save_dir / "compare.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(numeric)
        for row in rows:
            writer.writerow([len(row["seeds"]) if k == "seeds" else row[k] for k in numeric])
    text, markdown = format_table(rows), format_markdown(rows)
    (save_dir / "compare.md").write_text(f"{header}\n\n{markdown}\n\n{FOOTNOTE}\n", encoding="utf-8")
    try:
        plot_map(rows, save_dir / "compare_map.png")
        plot_curves(records, [r["model"] for r in rows], save_dir / "compare_curves.png")
    except ImportError:  # matplotlib is a dependency, but a broken install should not lose the table
        LOGGER.warning("matplotlib is not importable: no comparison plots")
    return text, markdown


def plot_map(rows: list[dict], path: Path) -> Path:
    """mAP50-95 and mAP50 per model: a box over the seeds, a point per seed, each seed's points joined."""
    from yolotr.plotting import _figure

    fig, axes = _figure((max(4.0, 1.6 * len(rows) + 2), 3.8), 1, 2)
    seeds = sorted({s for row in rows for s in row["seeds"]})
    for ax, metric in zip(axes[0], ("mAP50-95", "mAP50")):
        ax.boxplot(
            [row[metric] or [math.nan] for row in rows], widths=0.5, showfliers=False, medianprops={"color": "black"}
        )
        for k, seed in enumerate(seeds):
            xs = [i + 1 for i, row in enumerate(rows) if seed in row["seeds"]]
            ys = [row[metric][row["seeds"].index(seed)] for row in rows if seed in row["seeds"]]
            ax.plot(xs, ys, marker="o", linewidth=0.8, alpha=0.7, label=f"seed {seed}", color=f"C{k % 10}")
        ax.set_xticks(range(1, len(rows) + 1), [row["model"] for row in rows], rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 1].legend(fontsize=8)
    fig.savefig(path, dpi=130)
    return path


def plot_curves(records: list[dict], models: list[str], path: Path) -> Path:
    """Per epoch, for each training loss and mAP50-95: each model's mean over seeds with a ±1 sd band."""
    import numpy as np

    from yolotr.plotting import _figure

    done = [r for r in records if r["status"] != "failed" and r["curves"].get("epoch")]
    keys = sorted({k for r in done for k in r["curves"] if k.startswith("train/")}) + ["metrics/mAP50-95"]
    fig, axes = _figure((3.4 * len(keys), 3.0), 1, len(keys))
    for ax, key in zip(axes[0], keys):
        for k, model in enumerate(models):
            curves = [r["curves"] for r in done if r["stem"] == model and key in r["curves"]]
            if not curves:
                continue
            n = min(len(c[key]) for c in curves)
            values = np.array([c[key][:n] for c in curves], dtype=np.float64)
            epochs = np.array(curves[0]["epoch"][:n])
            keep = ~np.isnan(values).any(0)
            mean, sd = values.mean(0)[keep], values.std(0, ddof=1)[keep] if len(values) > 1 else 0 * values[0][keep]
            ax.plot(epochs[keep], mean, marker=".", color=f"C{k % 10}", label=model)
            ax.fill_between(epochs[keep], mean - sd, mean + sd, color=f"C{k % 10}", alpha=0.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.savefig(path, dpi=130)
    return path


# --------------------------------------------------------------------------------------------- models
