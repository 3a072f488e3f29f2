"""The GPU check's newer rows (bench/gpu_check.py imports them): the CUDA-graph predictor against the
references, host synchronisations per training step, and a shortened side-by-side trainer bench.

Each function takes the check's ``Plan`` and returns rows ``(check, item, status, detail)``; speed and
memory targets read PASS or MISS on CUDA and INFO in the CPU dry run (tiny sizes prove nothing).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def _judge(plan, met: bool) -> str:
    if plan.device != "cuda":
        return "INFO"
    return "PASS" if met else "MISS"


def check_predict(plan, row) -> list:
    """bench/gpu_predict.py's table as rows: CUDA graph / reference <= 0.5 at batch 1, <= 0.9 at batch 32."""
    from gpu_predict import measure

    rows = []
    batches = plan.predict_batches
    dtypes = ("fp32", "fp16") if plan.device == "cuda" else ("fp32",)
    results = measure(plan.predict_models, dtypes, batches, plan.latency_size, plan.latency_runs, plan.device)
    for r in results:
        item = f"{r['model']} {plan.latency_size} {r['dtype']} b{r['batch']}"
        ours = r.get("graph", r["eager"])
        kind = "graph" if "graph" in r else "eager"
        if r.get("graph_fell_back"):
            kind = "graph (capture failed: eager)"
        if "reference" not in r:
            rows.append(row("predict", item, "INFO", f"yolotr {kind} {ours:.2f} ms; no reference installed"))
            continue
        ratio = ours / r["reference"]
        goal = 0.5 if r["batch"] == 1 else 0.9
        rows.append(
            row(
                "predict",
                item,
                _judge(plan, ratio <= goal),
                f"yolotr {kind} {ours:.2f} ms (eager {r['eager']:.2f}), {r['ref']} eager fused {r['reference']:.2f} "
                f"ms, ratio {ratio:.2f} (target <= {goal})",
            )
        )
    return rows + check_predict_api(plan, row)


def check_predict_api(plan, row) -> list:
    """``YOLO.predict`` on the sample photos, through the backend it picks on the device (on CUDA the CUDA
    graph), per model and dtype: a user's path end to end (decode, candidates, NMS, scaling), which the
    latency rows above skip. ``conf`` 1e-6: random weights score about 1e-5, so boxes reach NMS. PASS: one
    ``Results`` per photo, boxes on some, all finite; FAIL: anything else, or any error."""
    from shared_data import shared_root

    from yolotr import YOLO

    photos = sorted((shared_root() / "images").glob("*.jpg"))
    if not photos:
        return [row("predict-api", "-", "SKIP", f"no photos in {shared_root() / 'images'}")]
    rows = []
    for name in plan.predict_models:
        for half in (False, True) if plan.device == "cuda" else (False,):
            item = f"{name} {'fp16' if half else 'fp32'} YOLO.predict"
            try:
                t = time.perf_counter()
                model = YOLO(f"{name}.yaml", verbose=False)
                kw = dict(device=plan.device, half=half, imgsz=plan.latency_size, conf=1e-6, verbose=False)
                results = model.predict([str(p) for p in photos], **kw)
                ms = (time.perf_counter() - t) * 1000
                boxes = [r.boxes.xyxy for r in results]
                ok = len(results) == len(photos) and any(len(b) for b in boxes)
                ok = ok and all(torch.isfinite(b).all() for b in boxes)
                detail = f"{len(photos)} photos, {sum(len(b) for b in boxes)} boxes (random weights), {ms:.0f} ms"
                rows.append(row("predict-api", item, "PASS" if ok else "FAIL", detail))
            except Exception as e:  # noqa: BLE001 - a row says what broke; the check goes on
                rows.append(row("predict-api", item, "FAIL", f"{type(e).__name__}: {str(e)[:160]}"))
    return rows


def check_syncs(plan, data, workdir: Path, train_cfg, row) -> list:
    """Host synchronisations per training step, from step 3 on (after the first steps' calibration).

    On CUDA: ``torch.cuda.set_sync_debug_mode("warn")`` names every synchronising call; on the CPU (dry
    run) nothing synchronises, so the row only proves the code path. Target: none beyond GradScaler's one
    per optimizer step, outside the logging interval (every 10th batch) and the epoch's end.
    """
    from yolotr.engine.progress import LOG_EVERY
    from yolotr.engine.trainer import Trainer

    rows = []
    for config in plan.sync_models:
        trainer = Trainer(train_cfg(plan, data, config, workdir / "sync", Path(config).stem, plan.sync_epochs))
        marks: dict[int, int] = {}
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")

            def start(t, marks=marks, recorded=recorded):
                marks[t.step] = len(recorded)
                if t.step == 3 and plan.device == "cuda":
                    torch.cuda.set_sync_debug_mode("warn")

            trainer.add_callback("on_batch_start", start)
            try:
                trainer.train()
            finally:
                if plan.device == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
        steps = sorted(s for s in marks if s >= 3)
        per_step = {
            a: [f"{Path(w.filename).name}:{w.lineno}" for w in recorded[marks[a] : marks[b]]
                if "synchroniz" in str(w.message).lower()]
            for a, b in zip(steps, steps[1:])
        }  # fmt: skip
        quiet = {s: v for s, v in per_step.items() if s % LOG_EVERY != 0}
        counts = [len(v) for v in quiet.values()]
        sites: dict[str, int] = {}
        for v in quiet.values():
            for site in v:
                sites[site] = sites.get(site, 0) + 1
        top = ", ".join(f"{k} x{n}" for k, n in sorted(sites.items(), key=lambda kv: -kv[1])[:4]) or "none"
        mean = statistics.mean(counts) if counts else float("nan")
        rows.append(
            row(
                "syncs",
                config,
                _judge(plan, mean <= 1.0),
                f"{mean:.1f} per step over {len(counts)} steps "
                f"outside logging (target <= 1: GradScaler's); sites: {top}",
            )  # fmt: skip
        )
        del trainer
    return rows


def check_trainer_bench(plan, workdir: Path, row) -> list:
    """bench/train.py --device cuda, shortened (``plan.bench_epochs``), both families; rows from its JSON."""
    out = workdir / "trainbench"
    command = [sys.executable, str(BENCH / "train.py"), "--device", plan.device, "--family", plan.bench_family,
               "--workdir", str(out), *plan.bench_args]  # fmt: skip
    t0 = time.time()
    returncode, stderr = _run_group(command, plan.bench_timeout_s, workdir / "trainbench.log")
    timed_out = returncode is None
    if not timed_out and returncode != 0:
        tail = (stderr.strip().splitlines() or ["?"])[-1][:200]
        return [row("trainer", plan.bench_family, "FAIL", f"bench/train.py exit {returncode}: {tail}")]
    rows = []
    for path in sorted(out.glob("results-*.json")):
        family = path.stem.removeprefix("results-")
        results = json.loads(path.read_text())
        ours = results.get("yolotr") or []
        reference = next((v for k, v in results.items() if k != "yolotr" and v), None)
        if not ours:
            continue
        speed = statistics.mean(r["images_per_s"] for r in ours)
        syncs = statistics.mean(r.get("syncs_per_step") or 0.0 for r in ours)
        peak = ours[0].get("gpu_peak_mib")
        if reference is None:
            rows.append(row("trainer", family, "INFO", f"yolotr {speed:.1f} images/s, {syncs:.1f} syncs/step; "
                            "no reference side"))  # fmt: skip
            continue
        ref_speed = statistics.mean(r["images_per_s"] for r in reference)
        ref_peak = reference[0].get("gpu_peak_mib")
        ratio = speed / ref_speed
        memory = f", GPU peak {peak:.0f} vs {ref_peak:.0f} MiB ({peak / ref_peak:.2f}x)" if peak and ref_peak else ""
        met = ratio >= 1.2 and (not peak or not ref_peak or peak <= 0.9 * ref_peak)
        rows.append(
            row("trainer", family, _judge(plan, met), f"images/s {speed:.1f} vs {ref_speed:.1f} ({ratio:.2f}x; "
                f"target 1.2x){memory}; {syncs:.1f} syncs/step; {time.time() - t0:.0f} s (shortened: mAP not judged)")
        )  # fmt: skip
    if timed_out:  # the check's time ran out, not the code: the families it finished stand
        rows.append(row("trainer", plan.bench_family, _judge(plan, False), f"bench/train.py stopped after "
                        f"{plan.bench_timeout_s:.0f} s (the check's budget); its log: trainbench.log"))  # fmt: skip
    return rows or [row("trainer", plan.bench_family, "FAIL", "bench/train.py wrote no results")]


def _run_group(command: list[str], timeout: float, log: Path) -> tuple[int | None, str]:
    """Run ``command`` in a process group of its own (bench/train.py starts one process per side), output to
    ``log``; ``(exit status, stderr)``, the status None when ``timeout`` seconds ran out. On a timeout or an
    interrupt the whole group is killed, so no side goes on holding the GPU after the check."""
    with (
        log.open("w") as out,
        subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True, start_new_session=True) as proc,
    ):
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except BaseException as e:  # TimeoutExpired, or the check's own SIGINT (gpu_check.sh's limit)
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            out.write(stderr)
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            return None, stderr
        out.write(stderr)
        return proc.returncode, stderr
