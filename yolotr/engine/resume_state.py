"""What a resumed run starts from: its ``last.pt`` read and checked, and the settings it continues with."""

from __future__ import annotations

import logging
from pathlib import Path

from yolotr.engine.config import resolve_config
from yolotr.errors import CheckpointError
from yolotr.models.weights import read_checkpoint

LOGGER = logging.getLogger("yolotr")
# what a resume may change, as the package's resume allows it: more epochs, the dataset's place (moved or
# mounted elsewhere: the same classes, which the model checks), where and how fast it runs, and when it stops
RESUME_SETTINGS = ("epochs", "data", "device", "workers", "patience", "time_limit")


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
    run_dir = Path(run_dir)
    last = run_dir / "weights" / "last.pt" if run_dir.is_dir() else run_dir
    if not last.is_file():
        raise CheckpointError(f"{last}: no checkpoint to resume from")
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
    if int(state["batch"]) == 0 and int(state["epoch"]) >= int(cfg["epochs"]):
        raise CheckpointError(
            f"{last}: training to {cfg['epochs']} epochs is finished; nothing to resume. Give a larger "
            f"epochs to train on (--epochs N), or start a new run from its weights (--weights {last})"
        )
    state["run_dir"] = str(last.parent.parent)
    state["checkpoint"] = checkpoint
    return cfg, state
