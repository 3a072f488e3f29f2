"""``yolotr compare``: is model B better than model A on my data, given the seed-to-seed noise?

Every model is trained with every seed under identical settings; each run is an ordinary run
directory ``<project>/<name>/<model stem>-seed<k>/`` (inspect, validate or resume it on its own).
Then one table: parameters, GFLOPs and CPU latency at the training size, mAP50 and mAP50-95 as
mean ± standard deviation over the seeds, and each model's difference to the first (the baseline)
with a 95% t-interval from the per-seed *paired* differences. Pairing is what makes few seeds
enough: with the same seed both models see the same images in the same order with the same
augmentation (the sampler's order is seeded by ``seed + epoch`` and each sample's augmentation by
``(seed, epoch, index)``, neither depends on the model), so the data noise they share cancels in
the difference.

The comparison's settings are stored in ``<name>/compare.yaml``. Running the same command again
skips finished runs and resumes interrupted ones from their last checkpoint, so a killed comparison
loses at most the work since the last checkpoint of the runs in flight; the same name with other
settings is refused. Runs execute as local processes or as Ray tasks
(:mod:`yolotr.engine.compare_runs`); both return the same records and make the same table.

Files written next to the runs: ``compare.yaml``, ``runs.csv`` (one row per run), ``compare.csv``
(the table in numbers), ``compare.md`` (the table as printed, in Markdown), ``compare_map.png``
(mAP per seed, box and points, a line joining each seed's results) and ``compare_curves.png``
(mean training losses and mAP50-95 per epoch with a ±1 sd band); the statistics, the table and the
plots are :mod:`yolotr.engine.compare_report`'s.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from yolotr.engine.compare_report import FOOTNOTE, format_table, paired_interval, summarize, t_quantile, write_outputs
from yolotr.engine.compare_runs import LocalRunner, RayRunner, failed_record, read_record, run_state
from yolotr.errors import CheckpointError, ConfigError, YolotrError

__all__ = ["Comparison", "compare", "format_table", "paired_interval", "plan_runs", "summarize", "t_quantile"]
LOGGER = logging.getLogger("yolotr")
RESERVED = ("model", "seed", "project", "name", "exist_ok")  # set by the comparison for each run
RUNTIME_KEYS = ("workers", "device", "cache_ram")  # change where and how fast a run trains, not its result

# ------------------------------------------------------------------------------------------ results


@dataclass
class Comparison:
    """What :func:`compare` returns.

    Attributes:
        save_dir: ``<project>/<name>``.
        records: one dict per run (see :mod:`yolotr.engine.compare_runs`), models in order, seeds ascending.
        rows: one dict per model (see :func:`summarize`).
        table: the table as printed; ``markdown``: the same in Markdown.
        report: the header, the table and the footnote, as logged (or printed by ``yolotr compare``).
    """

    save_dir: Path
    records: list[dict]
    rows: list[dict]
    table: str
    markdown: str
    failed: list[dict] = field(default_factory=list)
    report: str = ""

    def __str__(self) -> str:
        return self.table


def _resolve_file(model: str) -> Path | None:
    """The file behind a model argument: a path, or the shipped YAML of that name (None if neither)."""
    if Path(model).is_file():
        return Path(model).resolve()
    from yolotr.models.detection import find_model_yaml

    try:
        return Path(find_model_yaml(model)).resolve()
    except (YolotrError, OSError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_for_info(model: str, nc: int):
    """The model as the trainer builds it for ``nc`` classes (raises ``ConfigError`` for a bad YAML)."""
    from yolotr.models.detection import DetectionModel, load_model_yaml
    from yolotr.models.loading import load_model

    if str(model).endswith((".yaml", ".yml")) or not Path(str(model)).is_file():
        cfg = load_model_yaml(model)
    else:
        cfg = dict(load_model(model).yaml)
    return DetectionModel({**cfg, "nc": nc})  # nc set here: the trainer logs the override, not the table


def cpu_latency_ms(models: list, imgsz: int, runs: int = 30, threads: int = 2) -> list[float]:
    """Median milliseconds of one forward pass per model: fp32, batch 1, ``(1, 3, imgsz, imgsz)``, fused,
    eval, ``channels_last`` (as the predictor runs), ``threads`` torch threads, after 3 warm-up passes;
    the models take turns, so background load hits them alike (as ``bench/latency.py`` measures)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ready = [m.fuse().eval().to(memory_format=torch.channels_last) for m in models]
        x = torch.rand(1, 3, imgsz, imgsz).to(memory_format=torch.channels_last)
        times: list[list[float]] = [[] for _ in ready]
        with torch.inference_mode():
            for m in ready:
                for _ in range(3):
                    m(x)
            for _ in range(runs):
                for i, m in enumerate(ready):
                    t = time.perf_counter()
                    m(x)
                    times[i].append((time.perf_counter() - t) * 1000)
    finally:
        torch.set_num_threads(previous)
    return [statistics.median(t) for t in times]


# ------------------------------------------------------------------------------------------- settings


def _plain(value):
    """YAML-round-tripped value, so stored and new settings compare alike (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(value))


def check_settings(path: Path, settings: dict, write: bool = True) -> None:
    """Check that ``compare.yaml`` holds the same settings; write it when there is none (and ``write``).

    Raises:
        ConfigError: the comparison was started with other settings (naming what differs).
    """
    settings = _plain(settings)
    if not path.is_file():
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        return
    try:
        stored = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the comparison's settings ({e})") from None
    if stored == settings:
        return
    stored = stored if isinstance(stored, dict) else {}
    differences = []
    for key in ("models", "data", "seeds"):
        if stored.get(key) != settings.get(key):
            differences.append(f"{key}: {stored.get(key)} -> {settings.get(key)}")
    old, new = stored.get("train") or {}, settings.get("train") or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            differences.append(f"{key}: {old.get(key, '(default)')} -> {new.get(key, '(default)')}")
    raise ConfigError(
        f"{path}: this comparison was started with other settings ({'; '.join(differences)}); run it with the "
        f"settings stored there to resume it, or give the new one another name (--name)"
    )


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct and not empty, got {list(seeds)}")
    return out


def _absolute(value):
    """A file that exists, made absolute (runs may execute in another directory); anything else as is."""
    if isinstance(value, str) and value and Path(value).is_file():
        return str(Path(value).resolve())
    return value


# -------------------------------------------------------------------------------------------- compare


def plan_runs(models: list[str], data: str, seeds: list[int], save_dir: Path, settings: dict) -> list[dict]:
    """The jobs of a comparison, models in order and seeds ascending: run ``save_dir/<stem>-seed<k>`` trains
    with ``settings`` plus its model, data and seed (paths made absolute, since runs may execute elsewhere)."""
    common = {k: _absolute(v) if k == "weights" else v for k, v in settings.items()}
    jobs = []
    for model in models:
        stem = Path(model).stem
        for seed in seeds:
            run_dir = (Path(save_dir) / f"{stem}-seed{seed}").resolve()
            overrides = {
                **common,
                "model": _absolute(model),
                "data": _absolute(str(data)),
                "seed": seed,
                "project": str(run_dir.parent),
                "name": run_dir.name,
                "exist_ok": True,
                "val": True,
            }
            jobs.append({"model": model, "stem": stem, "seed": seed, "run_dir": str(run_dir), "overrides": overrides})
    return jobs


def _earlier_runs(path: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """``(stem, seed) -> (status, seconds)`` from an earlier ``runs.csv`` of this comparison (empty without one)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {(r["model"], r["seed"]): (r["status"], float(r["seconds"])) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError):
        return {}


def _earlier_latency(path: Path) -> dict[str, float]:
    """``model -> latency_ms`` measured by an earlier run of this comparison (``compare.csv``), when it has them."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = {r["model"]: float(r["latency_ms"]) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError):
        return {}
    return {m: v for m, v in rows.items() if math.isfinite(v)}


def compare(
    models: list[str],
    data: str = "shapes",
    seeds: int | list[int] = 3,
    *,
    name: str = "exp",
    project: str | Path = "runs/compare",
    parallel: int = 1,
    workers_per_run: int | None = None,
    cpus_per_run: int | None = None,
    ray: str | None = None,
    gpus_per_run: float = 0,
    latency_runs: int = 30,
    latency_threads: int = 2,
    log_table: bool = True,
    **settings,
) -> Comparison:
    """Train every model with every seed under the same settings and compare them (see the module docstring).

    Args:
        models: model YAMLs (shipped names or paths) or checkpoints; the first is the baseline.
        data: dataset YAML, or ``"shapes"``.
        seeds: how many seeds (``0 .. seeds - 1``) or the seeds themselves.
        name, project: the comparison lives in ``project/name``; the same name resumes it.
        parallel: local runs at once (ignored with ``ray``).
        workers_per_run: DataLoader workers of each run (default: the ``workers`` setting).
        cpus_per_run: torch threads of each run (and a Ray task's ``num_cpus``); default: the CPU
            count divided by ``parallel`` locally, 1 with Ray.
        ray: a Ray address (``auto``, ``local``, ``ray://host:port``): each run is a Ray task.
        gpus_per_run: GPUs per Ray task.
        latency_runs: timed forward passes for the CPU latency column (0: no latency column).
        log_table: log the table (``yolotr compare`` prints it on stdout instead, as ``report``).
        latency_threads: torch threads for the latency measurement.
        **settings: training settings of ``cfg/default.yaml`` (``epochs``, ``imgsz``, ``batch``, ...),
            the same for every run.

    Returns:
        :class:`Comparison`.

    Raises:
        ConfigError: unknown or reserved settings, a model that does not build, the name already used
            with other settings. ``YolotrError`` after the table is written when some runs failed.
    """
    from yolotr.data.sources import load_dataset_config
    from yolotr.engine.config import resolve_config

    if isinstance(models, str) or not models:
        raise ConfigError("compare needs a list of models (the first is the baseline)")
    models = [str(m) for m in models]
    stems = [Path(m).stem for m in models]
    duplicate = sorted({s for s in stems if stems.count(s) > 1})
    if duplicate:
        raise ConfigError(f"models with the same file name ({', '.join(duplicate)}): their run directories would clash")
    reserved = sorted(k for k in settings if k in RESERVED)
    if reserved:
        raise ConfigError(f"compare sets {', '.join(reserved)} itself for each run; leave them out of the settings")
    if settings.get("val") is False:
        raise ConfigError("compare needs validation (val: false was given): the table is made of validation mAP")
    settings = {k: v for k, v in settings.items() if v is not None}
    if workers_per_run is not None:
        settings["workers"] = int(workers_per_run)
    cfg = resolve_config({**settings, "data": data})  # unknown keys fail here, before any training
    seed_list = _seed_list(seeds)
    save_dir = Path(project) / name
    files = [_resolve_file(m) for m in models]
    identity = {
        "models": [{"model": m, "sha256": _sha256(f) if f else None} for m, f in zip(models, files)],
        "data": str(data),
        "seeds": seed_list,
        "train": {k: v for k, v in sorted(settings.items()) if k not in RUNTIME_KEYS},
    }
    check_settings(save_dir / "compare.yaml", identity, write=False)  # refuse early; written once the models build

    dataset = load_dataset_config(data)
    nc, imgsz = 1 if cfg["single_cls"] else len(dataset.names), int(cfg["imgsz"])  # as the runs train
    infos = []
    for model, stem in zip(models, stems):
        built = build_for_info(model, nc)
        info = built.info(imgsz, verbose=False)
        infos.append({"model": model, "stem": stem, "params": info["params"], "gflops": info["gflops"], "net": built})
    check_settings(save_dir / "compare.yaml", identity)

    jobs = plan_runs(models, data, seed_list, save_dir, settings)
    if ray:
        runner = RayRunner(ray, cpus_per_run or 1, gpus_per_run)
    else:
        runner = LocalRunner(parallel, cpus_per_run or max((os.cpu_count() or 1) // max(parallel, 1), 1))
    records: list[dict] = []
    todo = []
    earlier = _earlier_runs(save_dir / "runs.csv")  # a re-run keeps each finished run's status and seconds
    for job in jobs:
        try:
            state = run_state(job["run_dir"])
        except CheckpointError as e:  # one unreadable last.pt is that run's failure, not the comparison's
            records.append(failed_record(job, str(e)))
            continue
        if state.kind == "finished":
            records.append(read_record(job, *earlier.get((job["stem"], str(job["seed"])), ("skipped", 0.0))))
        else:
            todo.append(job)
    resuming = sum(run_state(j["run_dir"]).kind == "interrupted" for j in todo)
    LOGGER.info(
        "comparison %s: %d models x %d seeds; %d runs finished, %d to resume, %d to train (%s)",
        save_dir, len(models), len(seed_list), len(records), resuming, len(todo) - resuming, runner.describe(),
    )  # fmt: skip
    total = len(jobs)

    def report(record: dict) -> None:
        records.append(record)
        where = f"{len(records)}/{total} {record['stem']}-seed{record['seed']}"
        if record["status"] == "failed":
            LOGGER.error("%s failed: %s", where, record["error"])
        else:
            m = record["metrics"]
            LOGGER.info(
                "%s %s in %.0f s: mAP50 %.3f, mAP50-95 %.3f",
                where, record["status"], record["seconds"], m["mAP50"], m["mAP50-95"],
            )  # fmt: skip

    if todo:
        runner.run(todo, report)
    order = {(j["stem"], j["seed"]): k for k, j in enumerate(jobs)}
    records.sort(key=lambda r: order[(r["stem"], r["seed"])])

    kept = _earlier_latency(save_dir / "compare.csv") if not todo else {}  # nothing trained: nothing re-measured
    if latency_runs > 0 and all(i["stem"] in kept for i in infos):
        latencies = [kept[i["stem"]] for i in infos]
        LOGGER.info("CPU latency kept from the first run of this comparison (compare.csv)")
    elif latency_runs > 0:
        latencies = cpu_latency_ms([i["net"] for i in infos], imgsz, latency_runs, latency_threads)
    if latency_runs > 0:
        for info, ms in zip(infos, latencies):
            info["latency_ms"] = ms
    rows = summarize(records, infos)
    header = (
        f"{save_dir}: {len(models)} models x {len(seed_list)} seeds on {data}, imgsz {imgsz}, epochs {cfg['epochs']}, "
        f"batch {cfg['batch']}"
        + (f"; CPU ms: batch 1, fp32, fused, {latency_threads} threads" if latency_runs > 0 else "")
    )
    text, markdown = write_outputs(save_dir, records, rows, header)
    report = f"{header}\n{text}\n{FOOTNOTE}"
    failed = [r for r in records if r["status"] == "failed"]
    if log_table or failed:  # the CLI prints it on stdout instead (yolotr compare ... > out.txt holds the table)
        LOGGER.info("%s", report)
    result = Comparison(save_dir, records, rows, text, markdown, failed, report)
    if failed:
        listing = "; ".join(f"{r['stem']}-seed{r['seed']}: {r['error']}" for r in failed)
        raise YolotrError(
            f"{len(failed)} of {total} runs failed ({listing}); the table in {save_dir} leaves them out, and the "
            "same command retries them"
        )
    return result
