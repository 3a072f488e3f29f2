"""yolotr compare: models x seeds, the table and its paired intervals, resume and skip, the Ray runner.

One comparison (two shipped configs x 2 seeds, 1 epoch at 64 px on the tiny shapes set) runs once through
the CLI and serves the tests below; one of its runs is interrupted beforehand, mid-epoch, so the
comparison has to resume it. Every run uses 1 torch thread (``--cpus-per-run 1``), so CPU training is
bit-for-bit the same in any process and the Ray runs can be compared exactly with the local ones.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

import yolotr
from tests.engine.conftest import tiny_train_cfg
from yolotr.cli import main
from yolotr.engine.compare import plan_runs
from yolotr.engine.compare_report import format_table, paired_interval, summarize, t_quantile
from yolotr.engine.compare_runs import RunState, read_record, run_state
from yolotr.engine.trainer import Trainer
from yolotr.errors import ConfigError

MODELS = ["yolov5n.yaml", "yolov5n-hwd.yaml"]
# AutoAnchor off: it only costs time here; save_period_steps 1: a checkpoint after every step, to interrupt mid-epoch
SETTINGS = dict(
    epochs=1, imgsz=64, batch=4, nbs=4, workers=0, device="cpu", warmup_epochs=0.5, warmup_min_iters=2,
    mosaic=0.5, autoanchor=False, save_period_steps=1,
)  # fmt: skip
CLI_SETTINGS = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--noautoanchor", "--set"] + [
    f"{k}={SETTINGS[k]}" for k in ("nbs", "workers", "warmup_epochs", "warmup_min_iters", "mosaic", "save_period_steps")
]


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def local(tiny_shapes, tmp_path_factory):
    """The CLI comparison, after interrupting yolov5n-hwd seed 1 at step 2 of its only epoch."""
    project = tmp_path_factory.mktemp("compare")
    jobs = plan_runs(MODELS, str(tiny_shapes), [0, 1], project / "exp", SETTINGS)
    interrupted = next(j for j in jobs if j["stem"] == "yolov5n-hwd" and j["seed"] == 1)
    trainer = Trainer(interrupted["overrides"])

    def stop(t):
        if t.step == 2:
            raise Interrupt

    trainer.add_callback("on_batch_start", stop)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the comparison's own processes
    try:
        with pytest.raises(Interrupt):
            trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert run_state(interrupted["run_dir"]) == RunState("interrupted", 0, 2, 1)

    argv = ["compare", "--models", *MODELS, "--data", str(tiny_shapes), "--seeds", "2", "--project", str(project)]
    argv += ["--parallel", "2", "--cpus-per-run", "1", "--latency-runs", "3", *CLI_SETTINGS]
    assert main(argv) == 0
    return project / "exp", jobs


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_table_has_both_models_with_paired_intervals(local):
    save_dir, jobs = local
    runs = {(r["model"], int(r["seed"])): r for r in _csv(save_dir / "runs.csv")}
    assert len(runs) == 4
    table = _csv(save_dir / "compare.csv")
    assert [r["model"] for r in table] == ["yolov5n", "yolov5n-hwd"] and [r["seeds"] for r in table] == ["2", "2"]
    base, other = table
    for metric in ("mAP50", "mAP50-95"):
        assert math.isnan(float(base[f"{metric}_diff"])) and math.isnan(float(base[f"{metric}_low"]))
        diffs = [float(runs["yolov5n-hwd", s][metric]) - float(runs["yolov5n", s][metric]) for s in (0, 1)]
        half = 12.706 * abs(diffs[0] - diffs[1]) / 2  # t(0.975, 1) * sd / sqrt(2), sd = |d0 - d1| / sqrt(2)
        mean = sum(diffs) / 2
        assert float(other[f"{metric}_diff"]) == pytest.approx(mean, abs=1e-9)
        assert float(other[f"{metric}_low"]) == pytest.approx(mean - half, rel=1e-3, abs=1e-9)
        assert float(other[f"{metric}_high"]) == pytest.approx(mean + half, rel=1e-3, abs=1e-9)
        values = [float(runs["yolov5n", s][metric]) for s in (0, 1)]
        assert float(base[f"{metric}_mean"]) == pytest.approx(sum(values) / 2)
    assert float(base["params"]) > 0 and float(base["latency_ms"]) > 0 and float(other["gflops"]) > 0
    markdown = (save_dir / "compare.md").read_text(encoding="utf-8")
    assert "| yolov5n | " in markdown and "baseline" in markdown and "[" in markdown.split("yolov5n-hwd")[1]
    assert "| CPU ms |" in markdown and "CPU ms: batch 1" in markdown
    for plot in ("compare_map.png", "compare_curves.png"):
        assert (save_dir / plot).stat().st_size > 10_000
    for job in jobs:  # ordinary run directories, each finished
        run = save_dir / f"{job['stem']}-seed{job['seed']}"
        assert {"args.yaml", "results.csv", "weights"} <= {p.name for p in run.iterdir()}
        assert run_state(run).kind == "finished"


def test_interrupted_run_was_resumed_not_restarted(local):
    save_dir, _ = local
    status = {(r["model"], r["seed"]): r["status"] for r in _csv(save_dir / "runs.csv")}
    assert status == {
        ("yolov5n", "0"): "trained", ("yolov5n", "1"): "trained",
        ("yolov5n-hwd", "0"): "trained", ("yolov5n-hwd", "1"): "resumed",
    }  # fmt: skip
    run = save_dir / "yolov5n-hwd-seed1"
    assert "at epoch 0, batch 2" in (run / "train.log").read_text(encoding="utf-8")
    assert [r["epoch"] for r in _csv(run / "results.csv")] == ["1"]


def test_finished_comparison_rerun_trains_nothing_and_other_settings_are_refused(local, tiny_shapes):
    save_dir, jobs = local
    weights = {j["run_dir"]: (save_dir / f"{j['stem']}-seed{j['seed']}" / "weights" / "last.pt") for j in jobs}
    before = {k: p.stat().st_mtime_ns for k, p in weights.items()}
    first = _csv(save_dir / "compare.csv")
    earlier = {(r["model"], r["seed"]): (r["status"], float(r["seconds"])) for r in _csv(save_dir / "runs.csv")}
    result = yolotr.compare(
        MODELS, str(tiny_shapes), 2, project=save_dir.parent, name="exp", latency_runs=0, **SETTINGS
    )
    assert [r["status"] for r in result.records] == ["trained", "trained", "trained", "resumed"]  # the first run's
    assert [(r["status"], r["seconds"]) for r in result.records] == [
        earlier[r["stem"], str(r["seed"])] for r in result.records
    ]
    assert all(r["seconds"] > 0 for r in result.records)
    assert {k: p.stat().st_mtime_ns for k, p in weights.items()} == before
    assert [row["mAP50-95_mean"] for row in result.rows] == [float(r["mAP50-95_mean"]) for r in first]
    assert "CPU ms" not in result.report and "CPU ms" not in result.markdown  # latency_runs=0: no column
    assert result.table.splitlines()[0].split()[:4] == ["model", "params", "GFLOPs", "seeds"]
    with pytest.raises(ConfigError, match=r"compare\.yaml: .*epochs: 1 -> 2"):
        yolotr.compare(MODELS, str(tiny_shapes), 2, project=save_dir.parent, name="exp", **{**SETTINGS, "epochs": 2})


def test_ray_tasks_give_the_local_table(local, tiny_shapes):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'yolotr[ray]')")
    save_dir, jobs = local
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = yolotr.compare(
            MODELS, str(tiny_shapes), [0], project=save_dir.parent, name="ray", ray="auto", cpus_per_run=1,
            latency_runs=0, **SETTINGS,
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert [r["status"] for r in result.records] == ["trained", "trained"]
    for stem in ("yolov5n", "yolov5n-hwd"):
        assert run_state(save_dir.parent / "ray" / f"{stem}-seed0").kind == "finished"
    seed0 = [read_record(j, "skipped", 0.0) for j in jobs if j["seed"] == 0]
    models = [dict(stem=r["model"], model=r["source"], params=r["params"], gflops=r["gflops"]) for r in result.rows]
    local_rows = summarize(seed0, models)
    assert format_table(result.rows) == format_table(local_rows)  # the same printed table
    for ray_record, local_record in zip(result.records, seed0):
        assert ray_record["metrics"] == local_record["metrics"]  # bit-for-bit: same seed, same threads
        for key, values in local_record["curves"].items():
            if key != "time":
                assert ray_record["curves"][key] == values, key


def test_same_seed_same_batches_for_different_models(tiny_shapes, tmp_path):
    def first_batch(model, seed):
        trainer = Trainer(tiny_train_cfg(tiny_shapes, tmp_path, model=model, seed=seed, autoanchor=False))
        trainer._setup()
        trainer.sampler.set_epoch(0)
        images, targets, _, _ = next(iter(trainer.loader))
        return images, targets

    a, b, c = first_batch("yolov5n.yaml", 1), first_batch("yolov5n-hwd.yaml", 1), first_batch("yolov5n.yaml", 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same order, same augmentation
    assert not torch.equal(a[0], c[0])


def test_t_interval_and_bad_arguments(tiny_shapes):
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3) and t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    mean, low, high = paired_interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2) and high - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert math.isnan(paired_interval([0.5])[1])
    with pytest.raises(ConfigError, match="seed"):
        yolotr.compare(MODELS, str(tiny_shapes), 2, seed=3)
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        yolotr.compare(MODELS, str(tiny_shapes), 2, epoch=3)
    with pytest.raises(ConfigError, match="same file name"):
        yolotr.compare(["yolov5n.yaml", "other/yolov5n.yaml"], str(tiny_shapes), 2)


def test_single_cls_models_are_measured_with_one_class(tiny_shapes, tmp_path, monkeypatch):
    """The table's parameters and GFLOPs are of the model the runs train: with single_cls, one class (they were
    measured with the dataset's three, a larger head than any run had)."""
    import yolotr.engine.compare as compare_module
    from yolotr.data.sources import load_dataset_config

    original, built = compare_module.build_for_info, []

    def measured(model, nc):
        built.append(original(model, nc))
        raise Interrupt  # measured: the runs are not needed

    monkeypatch.setattr(compare_module, "build_for_info", measured)
    with pytest.raises(Interrupt):
        yolotr.compare(["yolov5n.yaml"], str(tiny_shapes), 2, project=tmp_path, single_cls=True, epochs=1)
    assert len(load_dataset_config(str(tiny_shapes)).names) > 1 and [m.nc for m in built] == [1]
