"""What a resumed run starts from: its ``last.pt`` read and checked, and the settings it continues with."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from yolotr.engine.config import default_config, resolve_config
from yolotr.engine.results_csv import read_curves
from yolotr.errors import CheckpointError
from yolotr.metrics.detection import selection_fitness
from yolotr.models.weights import read_checkpoint

LOGGER = logging.getLogger("yolotr")
# what a resume may change, as the package's resume allows it: more epochs, the dataset's place (moved or
# mounted elsewhere: the same classes, which the model checks), where and how fast it runs, and when it stops
RESUME_SETTINGS = ("epochs", "data", "device", "workers", "patience", "time_limit", "plots")


def latest_checkpoint(project: str | Path | None = None) -> Path:
    """The ``weights/last.pt`` written last under ``project`` (at any depth; None: the default ``project``), which a
    bare ``--resume`` continues, as YOLOv5's and the package's ``resume`` without a path take their latest run.

    Raises:
        CheckpointError: ``project`` holds no ``weights/last.pt``.
    """
    project = project or default_config()["project"]
    found = [p for p in Path(project).glob("**/weights/last.pt") if p.is_file()]
    if not found:
        raise CheckpointError(
            f"{project}: no run to resume (no */weights/last.pt under it); give the run folder, e.g. "
            f"--resume {Path(project) / 'exp'}, or the project it is in with --project"
        )
    latest = max(found, key=lambda p: p.stat().st_mtime)
    LOGGER.info("resuming the latest run under %s: %s", project, latest.parent.parent)
    return latest


def resume_state(run_dir: str | Path, **overrides) -> tuple[dict, dict]:
    """``(cfg, state)`` to continue the run in ``run_dir`` (or a ``last.pt`` path): the run's own settings
    (:data:`RESUME_SETTINGS` may be given: more ``epochs``, a moved ``data`` ...; other overrides are ignored
    with a warning) and its checkpoint's
    ``train_state``, with ``run_dir`` and ``checkpoint`` added.

    Raises:
        ConfigError: an override that a new run would refuse (an unknown key, a bad value).
        CheckpointError: no ``last.pt``; a file that is not a yolotr training checkpoint (said what it is);
            a run already trained to its epoch count (nothing to resume).
    """
    run_dir = Path(run_dir).absolute()  # "last.pt" given inside RUN/weights: its folder is weights
    last = run_dir / "weights" / "last.pt" if run_dir.is_dir() else run_dir
    if not last.is_file():
        raise CheckpointError(f"{last}: no checkpoint to resume from")
    if last.parent.name != "weights":  # the run folder is the file's grandparent: another folder's would be written
        raise CheckpointError(
            f"{last}: a resume writes into the run folder its checkpoint sits in (RUN/weights/last.pt), and this "
            f"file is not in a weights folder; resume the run folder, or start a new run from it with --weights {last}"
        )
    kind, checkpoint = read_checkpoint(last)  # says what an unreadable or foreign file looks like
    state = checkpoint.get("train_state") if kind == "yolotr" else None
    if not state:
        what = "yolotr checkpoint without train_state" if kind == "yolotr" else f"{kind} file, not yolotr's"
        raise CheckpointError(
            f"{last}: not a resumable training checkpoint (a {what}); start a new run from its weights with "
            f"--weights {last}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    checked = resolve_config(given)  # an unknown key or a bad value is refused as in a new run, not ignored
    ignored = sorted(k for k in given if k not in RESUME_SETTINGS)
    if ignored:
        LOGGER.warning(
            "resume continues with the run's own settings; ignoring %s (a resume takes %s; start a new run from "
            "its weights to change the others)", ", ".join(ignored), ", ".join(RESUME_SETTINGS),
        )  # fmt: skip
    cfg = dict(state["cfg"], **{k: checked[k] for k in given if k in RESUME_SETTINGS})
    epoch = int(state["epoch"])  # epochs done (a mid-epoch checkpoint's: the 0-based epoch it is in)
    if epoch >= int(cfg["epochs"]):
        done = "is finished" if int(state["batch"]) == 0 else f"is in epoch {epoch + 1}"
        raise CheckpointError(
            f"{last}: training to {cfg['epochs']} epochs {done}; nothing to resume. Give a larger epochs to train "
            f"on (--epochs N, at least {epoch + 1}), or start a new run from its weights (--weights {last})"
        )
    _refuse_after_early_stop(last, state, cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(state.get("world", world)) != world:  # a batch index is another place in the epoch: images again or never
        raise CheckpointError(
            f"{last}: the run trained with {state['world']} process(es), this resume has {world}; resume it with "
            f"the same number (torchrun --nproc-per-node {state['world']} ... for more than one)"
        )
    if "time_limit" in given:  # the new limit is fitted again after the resumed run's first epoch
        state["epochs_fitted"] = False
    state["run_dir"] = str(last.parent.parent)
    state["checkpoint"] = checkpoint
    _rescore_best(state, checkpoint, last.parent.parent / "results.csv")
    return cfg, state


def _refuse_after_early_stop(last: Path, state: dict, cfg: dict) -> None:
    """A run that early stopping ended is finished, as the package says of it, unless the resume's ``patience``
    (0: off) reaches past the epochs since its best; it then goes on counting from that best."""
    stop = state.get("early_stop") or {}
    stopped = stop.get("stopped_epoch")
    if stopped is None:
        return
    patience = int(cfg["patience"])
    if patience and stopped - int(stop.get("best_epoch", 0)) >= patience:
        raise CheckpointError(
            f"{last}: early stopping ended the run after epoch {stopped} (patience {patience}, best epoch "
            f"{stop.get('best_epoch')}); nothing to resume. Give a larger patience to go on (--set patience=N, 0 "
            "turns it off)"
        )
    stop["stopped_epoch"] = None


def _rescore_best(state: dict, checkpoint: dict, results_csv: Path) -> None:
    """A run begun before fitness followed the model's reference scored its best by YOLOv5's rule: score the
    validated epochs of ``results_csv`` again by the model's (``best_fitness`` and the early-stop state), so that
    ``best.pt`` and the patience count compare like with like."""
    anchored = any(k.endswith(".anchors") for k in checkpoint.get("state_dict", {}))  # YOLOv5's / YOLOv4's Detect
    rule = "yolov5" if anchored else "ultralytics"
    if checkpoint.get("fitness_rule", "yolov5") == rule or not results_csv.is_file():
        return
    curves = read_curves(results_csv)
    epochs, map50, map50_95 = (curves.get(k, []) for k in ("epoch", "metrics/mAP50", "metrics/mAP50-95"))
    scored = [
        (selection_fitness(a, b, rule), int(e))
        for e, a, b in zip(epochs, map50, map50_95)
        if math.isfinite(a) and math.isfinite(b)  # epochs without validation hold NaN
    ]
    if scored:
        best, epoch = max(scored, key=lambda t: (t[0], -t[1]))  # the first epoch of the best, as the trainer
        state["best_fitness"] = best
        state["early_stop"] = {"best_fitness": best, "best_epoch": epoch}
        LOGGER.info("resume: the best fitness is scored again by the %s rule: %.5f (epoch %d)", rule, best, epoch)
