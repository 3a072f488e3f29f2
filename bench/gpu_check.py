"""The GPU check: what has to work on CUDA, run unattended in at most 8 minutes, printed as one table.

Steps (each one row or more; a step that raises becomes a FAIL row and the next step runs), in order:

- ``train``: fp16 AMP training (GradScaler) of every shipped Transformer config (``cfg/models/``
  ``*-c3tr``, ``*-transformerc3``, ``*-swinv2``, ``*-swinv2-aifi``, ``*-hwd``; unified files at scale n) on the
  raccoon set (``cache_ram``, imgsz 320, batch 16, no accumulation, no validation), each for ``--steps`` steps or
  ``config_budget_s`` seconds, whichever comes first: a budget per config, so that every config trains.
  PASS: the guard never acted (no fault, no roll back; GradScaler's calibration overflows are counted in the
  row, not faults) and the mean loss of the last steps is finite and below that of the first.
- ``resume``: a run stopped mid-epoch (after a step's checkpoint) and resumed, against the same run
  straight through, and that run again. PASS: the resumed weights (raw and EMA) equal the straight
  ones bit for bit when two straight runs are bitwise equal; otherwise (non-deterministic kernels
  left under ``torch.use_deterministic_algorithms(warn_only=True)``) when the resumed run is within
  3x of the straight-vs-straight difference.
- ``predict``: the CUDA-graph backend (``engine/cuda_graph.py``) against the references' eager fused models
  (official YOLOv5, the ``ultralytics`` package), 640, fp32 and fp16, batch 1 and 32, turns alternating
  (``bench/gpu_predict.py``). PASS: at most 0.5x at batch 1, 0.9x at batch 32. Then ``predict-api``:
  ``YOLO.predict`` on the sample photos with those models, fp32 and fp16, the user's path end to end.
- ``swin``: the Swin V2 layer (dim 128, 4 heads, window 8, shift 4, 40x40, batch 8) against the
  literal published code (``tests/nn/swin_oracle.py``, as in ``bench/blocks.py``), forward + backward
  in fp32 and fp16 autocast. PASS: at least 2x faster and less peak memory.
- ``syncs``: host synchronisations per training step (``torch.cuda.set_sync_debug_mode``), yolov5n and
  yolov8n. PASS: at most GradScaler's one per step outside the logging interval.
- ``trainer``: ``bench/train.py --device cuda --family both`` shortened (3 epochs a side): images/s and
  peak GPU memory against the ultralytics trainer and the official YOLOv5 trainer. PASS: 1.2x the images/s
  and at most 0.9x the memory (mAP is not judged on so short a run; the full bench is the command in its
  docstring).
- ``ddp``: one process per GPU (NCCL), the same run; PASS: every rank ends with the same parameters
  and no skipped steps. Skipped, with a note, with one GPU.
- ``latency`` (only with ``--only latency``; ``predict`` supersedes it): eager forward latency against the
  official YOLOv5 ``Model``, fp32 and fp16.

``--dry-run`` runs the same steps on the CPU with tiny sizes (2 steps, imgsz 64, 4 raccoon images,
fp16 autocast with GradScaler("cpu"), two gloo processes for DDP, the trainer bench's own dry run on one
side) in a few minutes: CI runs it
(``tests/test_gpu_check_dry_run.py``), so the script is known to work before a GPU is lent.

    bash bench/gpu_check.sh                 # on the GPU machine; the table on stdout
    python bench/gpu_check.py --dry-run     # on any machine

Progress goes to stderr, the logs of training to ``<workdir>/gpu_check.log``; the exit status is 1
when a row FAILs (MISS marks a speed or memory target not met).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_rows import check_predict, check_syncs, check_trainer_bench  # noqa: E402
from shared_data import raccoon_data  # noqa: E402

from yolotr.models.detection import CFG_DIR, DetectionModel  # noqa: E402

TRANSFORMER_GLOBS = ("*-c3tr.yaml", "*-transformerc3.yaml", "*-swinv2.yaml", "*-swinv2-aifi.yaml", "*-hwd.yaml")
LOGGER = logging.getLogger("yolotr")


@dataclass
class Row:
    check: str
    item: str
    status: str  # PASS, FAIL, MISS (a speed/memory target not met), SKIP, INFO
    detail: str


@dataclass
class Plan:
    """Sizes of one run of the check: the GPU plan or the CPU dry run."""

    device: str
    steps: int  # optimizer steps per config in the train step
    imgsz: int
    batch: int
    images: int | None  # raccoon training images used (None: all 160)
    workers: int
    amp_dtype: str
    resume_epochs: int
    latency_models: tuple[str, ...]
    latency_size: int
    latency_runs: int
    swin: tuple[int, int, int, int]  # dim, heads, side, batch
    swin_repeat: int
    budget_s: float  # no step starts after this many seconds
    config_budget_s: float  # each config trains for at most this many seconds (after its first step)
    predict_models: tuple[str, ...]
    predict_batches: tuple[int, ...]
    sync_models: tuple[str, ...]
    sync_epochs: int  # epochs of the syncs run (steps from the fourth on are counted)
    bench_family: str
    bench_args: tuple[str, ...]
    bench_timeout_s: float


GPU_PLAN = Plan(
    device="cuda", steps=150, imgsz=320, batch=16, images=None, workers=8, amp_dtype="fp16", resume_epochs=2,
    latency_models=("yolov5n", "yolov5s", "yolov5s-swinv2"), latency_size=640, latency_runs=20,
    swin=(128, 4, 40, 8), swin_repeat=20, budget_s=440.0, config_budget_s=7.0,
    predict_models=("yolov5n", "yolov5s", "yolov8n", "yolo11n"), predict_batches=(1, 32),
    sync_models=("yolov5n.yaml", "yolov8n.yaml"), sync_epochs=1, bench_family="both",
    bench_args=("--epochs", "3", "--train-images", "256", "--val-images", "64", "--markdown"), bench_timeout_s=150.0,
)  # fmt: skip
DRY_PLAN = Plan(
    device="cpu", steps=2, imgsz=64, batch=2, images=4, workers=0, amp_dtype="fp16", resume_epochs=2,
    latency_models=("yolov5n", "yolov5n-swinv2"), latency_size=64, latency_runs=3,
    swin=(32, 2, 16, 2), swin_repeat=1, budget_s=900.0, config_budget_s=60.0,
    predict_models=("yolov5n", "yolov8n"), predict_batches=(1,), sync_models=("yolov5n.yaml",), sync_epochs=4,
    bench_family="anchor-free", bench_args=("--dry-run", "--only", "yolotr"), bench_timeout_s=300.0,
)  # fmt: skip


def transformer_configs() -> list[str]:
    """Every shipped config with our Transformer (or wavelet) blocks; unified files at scale n."""
    names = sorted({p.name for pattern in TRANSFORMER_GLOBS for p in CFG_DIR.glob(pattern)})
    out = []
    for name in names:
        unified = "scales" in (yaml.safe_load((CFG_DIR / name).read_text()) or {})
        out.append(re.sub(r"^(yolov?\d+)-", r"\1n-", name) if unified else name)  # yolov8-hwd -> yolov8n-hwd
    return out


def dataset(plan: Plan, workdir: Path) -> dict:
    """The raccoon set; in the dry run, a list file of its first ``plan.images`` training stems."""
    data = raccoon_data()
    if plan.images is not None:
        stems = (Path(data["path"]) / data["train"]).read_text().split()[: plan.images]
        subset = workdir / "raccoon_subset.txt"
        subset.write_text("\n".join(stems) + "\n")
        data = {**data, "train": str(subset), "val": str(subset)}
    return data


def train_cfg(plan: Plan, data: dict, model: str, project: Path, name: str, epochs: int, **extra) -> dict:
    return dict(
        model=model,
        data=data,
        epochs=epochs,
        imgsz=plan.imgsz,
        batch=plan.batch,
        nbs=plan.batch,  # one optimizer step per batch
        workers=plan.workers,
        device=plan.device,
        amp=plan.amp_dtype,
        cache_ram=True,
        val=False,
        plots=False,  # the check reads results.csv and the logs; results.png: 0.5 s a config on a CPU
        project=str(project),
        name=name,
        exist_ok=True,
        seed=0,
        **extra,
    )


def batches_per_epoch(plan: Plan) -> int:
    data = raccoon_data()
    n = plan.images or len((Path(data["path"]) / data["train"]).read_text().split())
    return max(n // plan.batch, 1)


def fresh(project: Path, name: str) -> tuple[Path, str]:
    """``project``, ``name`` of a run directory that does not exist yet (a reused workdir is cleared)."""
    shutil.rmtree(project / name, ignore_errors=True)
    return project, name


class _Stop(Exception):
    """Raised by a callback to stop a run as a crash would (after its last checkpoint)."""


def check_train(plan: Plan, data: dict, workdir: Path, deadline: float) -> list[Row]:
    """Every Transformer config trains, each for ``plan.steps`` steps or ``plan.config_budget_s`` seconds."""
    rows = []
    nb = batches_per_epoch(plan)
    epochs = max(math.ceil(plan.steps / nb), 1)
    for config in transformer_configs():
        if time.time() > deadline:
            rows.append(Row("train", config, "SKIP", "time budget spent"))
            continue
        progress(f"train {config}")
        try:
            rows.append(train_one(plan, data, workdir, config, epochs))
        except Exception as e:  # noqa: BLE001 - one config's failure is its row; the others still run
            LOGGER.exception("train %s failed", config)
            rows.append(Row("train", config, "FAIL", error_text(e)))
        _free()
    return rows


class _RecordedLoss:
    """The trainer's loss function, keeping each batch's total (on the device) for the check."""

    def __init__(self, loss_fn):
        self.loss_fn, self.totals = loss_fn, []

    def __call__(self, raw, targets):
        loss, items = self.loss_fn(raw, targets)
        self.totals.append(items.detach().float().sum())
        return loss, items

    def __getattr__(self, name):
        return getattr(self.loss_fn, name)


def train_one(plan: Plan, data: dict, workdir: Path, config: str, epochs: int) -> Row:
    """Train one config for ``plan.steps`` steps or ``plan.config_budget_s`` seconds. PASS: the guard never
    acted (no fault, no roll back; GradScaler's calibration overflows are counted, not faults) and the mean
    loss of the last steps is finite and below that of the first."""
    from yolotr.engine.trainer import Trainer

    stamps: list[float] = []
    trainer = Trainer(train_cfg(plan, data, config, *fresh(workdir / "train", Path(config).stem), epochs))

    def on_batch(t):
        if not stamps:
            t.loss_fn = _RecordedLoss(t.loss_fn)
        stamps.append(time.perf_counter())
        if len(stamps) > plan.steps or stamps[-1] - stamps[0] > plan.config_budget_s:
            raise _Stop

    trainer.add_callback("on_batch_start", on_batch)
    with contextlib.suppress(_Stop):
        trainer.train()
    losses = [float(v) for v in getattr(trainer.loss_fn, "totals", [])]
    faults, rollbacks = len(trainer.guard.reports), trainer.guard.rollbacks
    overflows, scale = trainer.gate.overflows, trainer.gate.get_scale()
    del trainer
    k = max(min(10, len(losses) // 3), 1)
    first, last = (statistics.mean(losses[:k]), statistics.mean(losses[-k:])) if losses else (math.nan, math.nan)
    step_ms = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) * 1000 if len(stamps) > 1 else math.nan
    went_down = len(losses) < 4 or last < first
    ok = faults == 0 and rollbacks == 0 and math.isfinite(first) and math.isfinite(last) and went_down
    detail = (
        f"{len(losses)} steps {plan.amp_dtype}, {faults} faults, {rollbacks} roll backs, {overflows} fp16 overflows "
        f"(scale {scale:g}), loss {first:.3f} -> {last:.3f}, {step_ms:.0f} ms/step"
    )
    return Row("train", config, "PASS" if ok else "FAIL", detail)


def _loss_column(csv_path: Path) -> list[float]:
    """The summed training losses per epoch from ``results.csv``."""
    import csv

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    return [sum(float(v) for k, v in row.items() if k.startswith("train/")) for row in rows]


def _final_weights(run_dir: Path) -> tuple[dict, dict]:
    state = torch.load(run_dir / "weights" / "last.pt", map_location="cpu", weights_only=True)["train_state"]
    return state["model"], state["ema"] or {}


def _max_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between the floating-point tensors of two (nested) state dicts."""
    diffs = [0.0]
    for key, x in a.items():
        if isinstance(x, dict):
            diffs.append(_max_diff(x, b[key]))
        elif isinstance(x, torch.Tensor) and x.is_floating_point():
            diffs.append(float((x.double() - b[key].double()).abs().max()))
    return max(diffs)


def check_resume(plan: Plan, data: dict, workdir: Path, config: str) -> list[Row]:
    from yolotr.engine.trainer import Trainer

    progress(f"resume {config}")
    nb = batches_per_epoch(plan)
    stop_at = nb + max(nb // 2, 1)  # the middle of the second epoch
    for name in ("killed", "straight", "again"):
        fresh(workdir / "resume", name)
    cfg = train_cfg(plan, data, config, workdir / "resume", "killed", plan.resume_epochs, save_period_steps=1)
    trainer = Trainer(cfg)

    def stop(t):
        if t.step == stop_at:
            raise _Stop

    trainer.add_callback("on_batch_start", stop)
    try:
        trainer.train()
        return [Row("resume", config, "FAIL", f"the run did not reach step {stop_at}")]
    except _Stop:
        pass
    finally:
        del trainer
        _free()
    Trainer.resume(workdir / "resume" / "killed").train()
    _free()
    for name in ("straight", "again"):  # the same settings, checkpoints after every step included
        Trainer({**cfg, "name": name}).train()
        _free()
    resumed, straight, again = (_final_weights(workdir / "resume" / n) for n in ("killed", "straight", "again"))
    diff = max(_max_diff(straight[0], resumed[0]), _max_diff(straight[1], resumed[1]))
    noise = max(_max_diff(straight[0], again[0]), _max_diff(straight[1], again[1]))
    ok = diff == 0 if noise == 0 else diff <= 3 * noise
    kind = "bitwise" if noise == 0 else "within 3x run-to-run"
    detail = (
        f"stopped at step {stop_at}, resumed: max |resumed - straight| {diff:.2e} "
        f"(straight vs straight {noise:.2e}; bar: {kind})"
    )
    return [Row("resume", config, "PASS" if ok else "FAIL", detail)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(plan: Plan, data: dict, workdir: Path, config: str) -> list[Row]:
    world = torch.cuda.device_count() if plan.device == "cuda" else 2
    if world < 2:
        return [Row("ddp", config, "SKIP", f"{world} GPU: DDP with NCCL needs 2 or more")]
    progress(f"ddp {config} x{world}")
    backend = "nccl" if plan.device == "cuda" else "gloo"
    cfg = train_cfg(plan, data, config, *fresh(workdir / "ddp", "run"), 1)
    cfg_path = workdir / "ddp_cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    port = str(_free_port())
    procs = []
    with open(workdir / "gpu_check.log", "a") as log:
        for rank in range(world):
            env = dict(
                os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port, OMP_NUM_THREADS="1",
            )  # fmt: skip
            command = [sys.executable, __file__, "--ddp-child", str(cfg_path), "--workdir", str(workdir)]
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        codes = [p.wait(timeout=300) for p in procs]
    if any(codes):
        return [Row("ddp", config, "FAIL", f"{backend} x{world}: exit codes {codes} (see gpu_check.log)")]
    states = [torch.load(workdir / f"ddp_rank{r}.pt", weights_only=True) for r in range(world)]
    stats = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics stay per rank
    diff = max(
        _max_diff({k: v for k, v in states[0]["model"].items() if not k.endswith(stats)}, s["model"])
        for s in states[1:]
    )
    skipped = sum(s["skipped"] for s in states)
    ok = diff == 0 and skipped == 0
    detail = f"{backend} x{world}, {states[0]['steps']} steps: max |rank0 - rank k| {diff:.2e}, {skipped} skipped"
    return [Row("ddp", config, "PASS" if ok else "FAIL", detail)]


def ddp_child(cfg_path: Path, workdir: Path) -> None:
    """One DDP rank (environment from the parent): train, then save the weights and the skipped count."""
    from yolotr.engine.trainer import Trainer

    torch.set_num_threads(1)
    trainer = Trainer(json.loads(cfg_path.read_text()))
    steps = []
    trainer.add_callback("on_batch_start", lambda t: steps.append(t.step))
    result = trainer.train()
    state = {"model": trainer.model.state_dict(), "skipped": len(result["nan_reports"]), "steps": len(steps)}
    torch.save(state, workdir / f"ddp_rank{os.environ['RANK']}.pt")


def _median_ms(model, x: torch.Tensor, runs: int) -> float:
    device = x.device
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def check_latency(plan: Plan) -> list[Row]:
    from latency import official_model

    rows = []
    device = torch.device(plan.device)
    half = torch.float16 if plan.device == "cuda" else torch.bfloat16
    torch.use_deterministic_algorithms(False)  # as a fresh process (the trainer turned it on)
    for name in plan.latency_models:
        progress(f"latency {name}")
        ref = official_model(name)
        ours = DetectionModel(f"{name}.yaml").fuse().eval()
        for dtype in (torch.float32, half):
            label = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
            x = torch.rand(1, 3, plan.latency_size, plan.latency_size, device=device, dtype=dtype)
            ours_d = copy.deepcopy(ours).to(device, dtype).to(memory_format=torch.channels_last)
            t_ours = _median_ms(ours_d, x.to(memory_format=torch.channels_last), plan.latency_runs)
            item = f"{name} {plan.latency_size} {label}"
            if ref is None:
                why = "a yolotr block YOLOv5 lacks" if "-" in name else "official yolov5 package not installed"
                rows.append(Row("latency", item, "INFO", f"yolotr {t_ours:.2f} ms; no reference ({why})"))
                continue
            t_ref = _median_ms(copy.deepcopy(ref).to(device, dtype), x, plan.latency_runs)
            ratio = t_ours / t_ref
            rows.append(
                Row(
                    "latency",
                    item,
                    judge(plan, ratio <= 1.0),
                    f"yolotr {t_ours:.2f} ms, YOLOv5 {t_ref:.2f} ms, ratio {ratio:.2f} (target <= 1.00)",
                )
            )
        _free()
    return rows


def check_swin(plan: Plan) -> list[Row]:
    from blocks import time_swin_layer

    progress("swin")
    torch.use_deterministic_algorithms(False)  # as a fresh process (the trainer turned it on)
    dim, heads, side, batch = plan.swin
    device = torch.device(plan.device)
    torch.manual_seed(0)
    half = torch.float16 if plan.device == "cuda" else torch.bfloat16
    err, timings = time_swin_layer(dim, heads, side, batch, device, plan.swin_repeat, half)
    rows = []
    for label, t_ref, t_our, m_ref, m_our in timings:
        speed, memory = t_ref / t_our, m_ref / max(m_our, 1e-9)
        mem = f"{m_ref:.0f} -> {m_our:.0f} MiB peak ({memory:.2f}x less)" if device.type == "cuda" else "memory on CUDA"
        rows.append(
            Row(
                "swin",
                f"Swin V2 layer {label}",
                judge(plan, speed >= 2.0 and memory > 1.0),
                f"literal {t_ref * 1e3:.1f} ms, ours {t_our * 1e3:.1f} ms ({speed:.2f}x faster), {mem}; "
                f"target 2x and less memory; fp32 max diff {err:.1e}",
            )
        )
    return rows


def judge(plan: Plan, met: bool) -> str:
    """PASS or MISS for a speed or memory target; INFO in the dry run (tiny CPU sizes prove nothing)."""
    if plan.device != "cuda":
        return "INFO"
    return "PASS" if met else "MISS"


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def progress(message: str) -> None:
    """A progress line on the terminal (``sys.__stderr__``: the steps' own stderr goes to the log)."""
    print(f"[gpu_check] {message}", file=sys.__stderr__, flush=True)


def format_table(rows: list[Row], header: str) -> str:
    widths = [max(len(getattr(r, f)) for r in rows + [Row("check", "item", "status", "")]) for f in ("check", "item")]
    lines = [header, f"{'check':<{widths[0]}}  {'item':<{widths[1]}}  {'status':<6}  detail"]
    lines += [f"{r.check:<{widths[0]}}  {r.item:<{widths[1]}}  {r.status:<6}  {r.detail}" for r in rows]
    return "\n".join(lines)


def error_text(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters) for a FAIL row."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def run_step(rows: list[Row], check: str, fn, *args) -> None:
    """Run one step; an exception becomes a FAIL row naming it (the traceback goes to the log)."""
    try:
        rows.extend(fn(*args))
    except Exception as e:  # noqa: BLE001 - unattended: every step reports, whatever breaks
        LOGGER.exception("%s failed", check)
        rows.append(Row(check, "-", "FAIL", error_text(e)))
    _free()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes")
    parser.add_argument("--workdir", help="runs and the log go here (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, help="optimizer steps per config in the train step")
    parser.add_argument(
        "--only", nargs="+", choices=["train", "resume", "predict", "swin", "syncs", "trainer", "ddp", "latency"]
    )
    parser.add_argument("--ddp-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (resume), before CUDA starts
    if args.ddp_child:
        ddp_child(Path(args.ddp_child), Path(args.workdir))
        return 0
    plan = copy.copy(DRY_PLAN if args.dry_run else GPU_PLAN)
    if args.steps:
        plan.steps = args.steps
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if plan.device == "cpu":  # one thread: the dry run proves the steps work, and does not stall on a busy machine
        torch.set_num_threads(1)
    os.environ.setdefault("YOLOTR_CACHE", str(workdir / "cache"))
    log = logging.FileHandler(workdir / "gpu_check.log")
    log.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOGGER.addHandler(log)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False

    t0 = float(os.environ.get("GPU_CHECK_STARTED") or time.time())  # gpu_check.sh's start: imports count too
    deadline = t0 + plan.budget_s
    data = dataset(plan, workdir)
    steps = args.only or ["train", "resume", "predict", "swin", "syncs", "trainer", "ddp"]
    rows: list[Row] = []
    with open(workdir / "gpu_check.log", "a") as noise, contextlib.redirect_stderr(noise):  # progress bars
        for i, step in enumerate(steps):
            if time.time() > deadline:
                rows.append(Row(step, "-", "SKIP", "time budget spent"))
                continue
            progress(f"{step} ({time.time() - t0:.0f} s)")
            try:
                if step == "train":  # each config has its own budget (plan.config_budget_s)
                    run_step(rows, step, check_train, plan, data, workdir, deadline)
                elif step == "predict":
                    run_step(rows, step, check_predict, plan, Row)
                elif step == "syncs":
                    run_step(rows, step, check_syncs, plan, data, workdir, train_cfg, Row)
                elif step == "trainer":
                    timed = copy.copy(plan)
                    timed.bench_timeout_s = max(min(plan.bench_timeout_s, deadline + 30 - time.time()), 30)
                    run_step(rows, step, check_trainer_bench, timed, workdir, Row)
                elif step == "resume":
                    run_step(rows, step, check_resume, plan, data, workdir, "yolov5n-swinv2.yaml")
                elif step == "ddp":
                    run_step(rows, step, check_ddp, plan, data, workdir, "yolov5n-transformerc3.yaml")
                elif step == "latency":
                    run_step(rows, step, check_latency, plan)
                else:
                    run_step(rows, step, check_swin, plan)
            except KeyboardInterrupt:  # gpu_check.sh's timeout: report what was done
                rows += [Row(s, "-", "SKIP", "interrupted (time limit)") for s in steps[i:]]
                break

    if plan.device == "cuda":
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        where = f"{torch.cuda.device_count()} x {', '.join(names)}, CUDA {torch.version.cuda}"
    else:
        where = "CPU dry run (tiny sizes; fp16 with GradScaler('cpu'), gloo for NCCL)"
    header = (
        f"yolotr GPU check: {where}; torch {torch.__version__}; {time.time() - t0:.0f} s; "
        f"train: {plan.steps} steps, imgsz {plan.imgsz}, batch {plan.batch}; log {workdir / 'gpu_check.log'}"
    )
    print(format_table(rows, header))
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
