"""One run of a comparison, and the two runners that execute many: local processes or Ray tasks.

A *job* is a plain dict (it crosses process and machine boundaries as JSON or a Ray argument):
``model``, ``stem``, ``seed``, ``run_dir`` (absolute), ``overrides`` (the training settings of
``cfg/default.yaml``), ``threads`` (torch intra-op threads), ``parent_pid`` (local runs stop when the
comparison process is gone) and ``log_file`` (Ray tasks write their output there).

:func:`execute_run` takes a job and returns a *record*, also a plain dict: ``model``, ``stem``,
``seed``, ``run_dir``, ``status`` (``trained``, ``resumed``, ``skipped`` or ``failed``),
``resumed_from`` (``[epoch, batch]`` of the checkpoint a resumed run continued), ``seconds``,
``metrics`` (``mAP50``, ``mAP50-95``, ``precision``, ``recall`` of the last epoch), ``curves``
(``results.csv`` as ``{column: [value per epoch]}``) and ``error``. Both runners call it, so they
return the same records: :class:`LocalRunner` in one ``python`` subprocess per run, ``parallel`` at a
time; :class:`RayRunner` as one Ray task per run (``ray`` is imported only there).

A run is an ordinary run directory. Its state is read from ``weights/last.pt``: none (new), a
checkpoint before the end of the last epoch (interrupted: :meth:`Trainer.resume` continues it
exactly), or one written after the last epoch (finished: nothing to do).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from yolotr.engine.results_csv import read_curves
from yolotr.errors import CheckpointError, ConfigError, YolotrError

LOGGER = logging.getLogger("yolotr")
METRIC_COLUMNS = {
    "precision": "metrics/precision",
    "recall": "metrics/recall",
    "mAP50": "metrics/mAP50",
    "mAP50-95": "metrics/mAP50-95",
}
LOG_NAME = "train.log"


@dataclass(frozen=True)
class RunState:
    """What ``weights/last.pt`` says: ``kind`` is ``new``, ``interrupted`` or ``finished``; ``epoch``
    and ``batch`` are where training continues; ``epochs`` is the run's length."""

    kind: str
    epoch: int = 0
    batch: int = 0
    epochs: int = 0


def run_state(run_dir: str | Path) -> RunState:
    """The state of a run directory (see :class:`RunState`).

    The trainer saves ``last.pt`` with ``train_state`` ``epoch = e + 1, batch = 0`` after epoch ``e``
    and ``epoch = e, batch = b`` mid-epoch (``save_period_steps``); the run is finished when the epoch
    count of its own settings (``train_state["cfg"]["epochs"]``, which a time limit may have fitted) is
    reached at a batch boundary, or when early stopping ended it (a resume would refuse it).

    Raises:
        CheckpointError: ``last.pt`` cannot be read or is not a training checkpoint.
    """
    last = Path(run_dir) / "weights" / "last.pt"
    if not last.is_file():
        return RunState("new")
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{last}: cannot read ({e}); delete {run_dir} to train this run again") from None
    state = checkpoint.get("train_state") if isinstance(checkpoint, dict) else None
    if not state:
        raise CheckpointError(f"{last}: not a resumable training checkpoint; delete {run_dir} to train it again")
    epoch, batch, epochs = int(state["epoch"]), int(state["batch"]), int(state["cfg"]["epochs"])
    stopped = (state.get("early_stop") or {}).get("stopped_epoch") is not None  # patience ended it: finished too
    kind = "finished" if batch == 0 and (epoch >= epochs or stopped) else "interrupted"
    return RunState(kind, epoch, batch, epochs)


def read_record(job: dict, status: str, seconds: float, resumed_from: list[int] | None = None) -> dict:
    """The record of a finished run: metrics of its last epoch from ``results.csv`` (or, when that row
    is missing, a validation of ``weights/last.pt`` with the run's settings) and its curves."""
    run_dir = Path(job["run_dir"])
    curves = read_curves(run_dir / "results.csv")
    state = run_state(run_dir)
    epochs = curves.get("epoch", [])
    if epochs and int(epochs[-1]) == state.epochs and not math.isnan(curves.get("metrics/mAP50-95", [math.nan])[-1]):
        metrics = {name: curves[column][-1] for name, column in METRIC_COLUMNS.items()}
    else:
        metrics = _validate_last(run_dir)
    return {
        **_identity(job),
        "status": status,
        "resumed_from": resumed_from,
        "seconds": round(seconds, 1),
        "epochs": state.epochs,
        "metrics": metrics,
        "curves": curves,
        "error": None,
    }


def _validate_last(run_dir: Path) -> dict[str, float]:
    from yolotr.engine.validator import validate
    from yolotr.models.loading import load_model

    last = run_dir / "weights" / "last.pt"
    cfg = torch.load(last, map_location="cpu", weights_only=True)["train_state"]["cfg"]
    LOGGER.info("%s: the last epoch has no row in results.csv; validating weights/last.pt", run_dir)
    result = validate(load_model(last), cfg["data"], imgsz=cfg["imgsz"], batch_size=cfg["batch"], verbose=False)
    return {"precision": result.precision, "recall": result.recall, "mAP50": result.map50, "mAP50-95": result.map50_95}


def _identity(job: dict) -> dict:
    return {k: job[k] for k in ("model", "stem", "seed", "run_dir")}


def failed_record(job: dict, error: str, seconds: float = 0.0) -> dict:
    """The record of a run that raised or whose process died: ``status`` ``failed`` and the ``error``."""
    return {
        **_identity(job),
        "status": "failed",
        "resumed_from": None,
        "seconds": round(seconds, 1),
        "epochs": None,
        "metrics": {},
        "curves": {},
        "error": error,
    }


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Hold an exclusive lock on ``run_dir/.lock`` (POSIX) so two comparisons never train one run at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; running one comparison at a time is up to the user
        yield
        return
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{run_dir}: another process is training this run (a second `yolotr compare` with the same name?)"
            ) from None
        yield


@contextlib.contextmanager
def _output_to(log_file: str | None):
    """Send stdout, stderr (tqdm) and the ``yolotr`` logger to ``log_file`` for the duration (Ray tasks)."""
    if not log_file:
        yield
        return
    logger = logging.getLogger("yolotr")
    saved = logger.handlers[:], logger.propagate, logger.level
    with open(log_file, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.handlers, logger.propagate = saved[0], saved[1]
            logger.setLevel(saved[2])


def execute_run(job: dict) -> dict:
    """Train, resume or skip one run (see the module docstring for ``job`` and the record returned).

    Never raises for a failed run (a :class:`YolotrError` or any exception from training): the record
    says ``failed`` and why, and the traceback goes to the run's log.
    """
    from yolotr.engine.trainer import Trainer

    torch.set_num_threads(max(int(job.get("threads") or 1), 1))
    run_dir = Path(job["run_dir"])
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    with _output_to(job.get("log_file")):
        try:
            with _run_lock(run_dir):
                state = run_state(run_dir)
                if state.kind == "finished":
                    return read_record(job, "skipped", 0.0)
                if state.kind == "interrupted":
                    trainer, status = Trainer.resume(run_dir), "resumed"
                else:
                    (run_dir / "results.csv").unlink(missing_ok=True)  # rows of an attempt that saved no checkpoint
                    trainer, status = Trainer(job["overrides"]), "trained"
                parent = job.get("parent_pid")
                if parent:
                    trainer.add_callback("on_batch_start", lambda _: _stop_if_orphaned(parent))
                trainer.train()
                resumed_from = [state.epoch, state.batch] if status == "resumed" else None
                return read_record(job, status, time.time() - t0, resumed_from)
        except Exception as e:  # noqa: BLE001 - a failed run is reported in its record, the others go on
            if not isinstance(e, YolotrError):
                LOGGER.exception("%s failed", run_dir)
            return failed_record(job, f"{type(e).__name__}: {e}", time.time() - t0)


def _stop_if_orphaned(parent_pid: int) -> None:
    """End a local run whose comparison process died (its last checkpoint stays for the next attempt)."""
    if os.getppid() != parent_pid:
        raise SystemExit("the comparison process is gone; stopping (the run resumes from its last checkpoint)")


def worker_main(argv: list[str]) -> int:
    """``python -c ... JOB.json RECORD.json``: one local run in its own process."""
    from yolotr.logs import get_logger

    job_path, record_path = argv
    get_logger()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    record = execute_run(job)
    Path(record_path).write_text(json.dumps(record), encoding="utf-8")
    return 0


_WORKER = "import sys; from yolotr.engine.compare_runs import worker_main; sys.exit(worker_main(sys.argv[1:]))"


class LocalRunner:
    """Runs jobs as ``python`` subprocesses, ``parallel`` at a time, each with ``threads`` torch threads.

    A run's output goes to ``<run_dir>/train.log``. A subprocess ends itself when the comparison
    process is gone; when the comparison is interrupted (Ctrl-C) the runs in flight are stopped and
    keep their last checkpoint.
    """

    def __init__(self, parallel: int = 1, threads: int = 1):
        if parallel < 1:
            raise ConfigError(f"parallel must be at least 1, got {parallel}")
        self.parallel, self.threads = parallel, max(threads, 1)

    def describe(self) -> str:
        return f"{self.parallel} at a time, torch threads per run: {self.threads}"

    def run(self, jobs: list[dict], on_record: Callable[[dict], None]) -> list[dict]:
        pending, running, records = list(jobs), [], []
        folder = Path(tempfile.mkdtemp(prefix="yolotr-compare-"))
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            while pending or running:
                while pending and len(running) < self.parallel:
                    running.append(self._start(pending.pop(0), folder, len(records) + len(running), env))
                time.sleep(0.2)
                for entry in [e for e in running if e[0].poll() is not None]:
                    running.remove(entry)
                    record = self._collect(*entry)
                    records.append(record)
                    on_record(record)
        finally:
            for proc, *_ in running:
                proc.terminate()
            for proc, _, _, log, _ in running:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
        return records

    def _start(self, job: dict, folder: Path, index: int, env: dict):
        job = {**job, "threads": self.threads, "parent_pid": os.getpid()}
        job_path, record_path = folder / f"job{index}.json", folder / f"record{index}.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
        log = open(Path(job["run_dir"]) / LOG_NAME, "a", encoding="utf-8")  # closed in _collect, or by run()
        cmd = [sys.executable, "-c", _WORKER, str(job_path), str(record_path)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return proc, job, record_path, log, time.time()

    @staticmethod
    def _collect(proc, job: dict, record_path: Path, log, started: float) -> dict:
        log.close()
        if proc.returncode == 0 and record_path.is_file():
            return json.loads(record_path.read_text(encoding="utf-8"))
        log_path = Path(job["run_dir"]) / LOG_NAME
        lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip()[-300:] if lines else ""
        return failed_record(job, f"process exited with {proc.returncode} ({log_path}: {last})", time.time() - started)


class RayRunner:
    """Runs each job as a Ray task with ``num_cpus=cpus`` (also its torch threads) and ``num_gpus=gpus``.

    Args:
        address: ``auto`` (the running cluster), ``local`` (start one on this machine), ``ray://host:port``
            or ``host:port``. When the process is already connected (``ray.init`` was called), that
            connection is used and left open.

    Every node needs yolotr installed; the run directories are the absolute paths of this machine, so
    a cluster should share that filesystem for runs to be resumable from anywhere (the records, and so
    the table, come back through Ray either way).
    """

    def __init__(self, address: str = "auto", cpus: int = 1, gpus: float = 0.0):
        self.address, self.cpus, self.gpus = address, max(int(cpus), 1), float(gpus)

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"Ray tasks of {self.cpus} CPU{gpus}"

    def run(self, jobs: list[dict], on_record: Callable[[dict], None]) -> list[dict]:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs the ray package: pip install 'yolotr[ray]'") from None
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except ConnectionError as e:
                raise ConfigError(
                    f"--ray {self.address}: no Ray cluster to connect to ({e}); start one with `ray start --head` "
                    "or use --ray local"
                ) from None
        try:
            self._check_resources(ray.cluster_resources())
            task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(execute_run)
            futures = {}
            for job in jobs:
                job = {**job, "threads": self.cpus, "log_file": str(Path(job["run_dir"]) / LOG_NAME)}
                if not self.gpus and job["overrides"].get("device", "auto") == "auto":
                    job["overrides"] = {**job["overrides"], "device": "cpu"}  # no GPU was asked for this task
                futures[task.remote(job)] = job
            records = []
            while futures:
                (done,), _ = ray.wait(list(futures), num_returns=1)
                job = futures.pop(done)
                try:
                    record = ray.get(done)
                except Exception as e:  # noqa: BLE001 - a dead worker or a lost node fails that run only
                    record = failed_record(job, f"Ray task failed: {type(e).__name__}: {str(e)[:300]}")
                records.append(record)
                on_record(record)
            return records
        finally:
            if started:
                ray.shutdown()

    def _check_resources(self, resources: dict) -> None:
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        if cpus < self.cpus or gpus < self.gpus:
            raise ConfigError(
                f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs; a run asks for {self.cpus} CPUs and "
                f"{self.gpus:g} GPUs (--cpus-per-run, --gpus-per-run)"
            )
