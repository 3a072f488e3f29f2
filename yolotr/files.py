"""Files written whole or not at all: a temporary file in the target's folder, fsync, then a rename.

Checkpoints (:mod:`yolotr.models.weights`), ``results.csv`` and the label cache (:mod:`yolotr.data.label_cache`)
are written so: a kill or a full disk leaves the file as it was before, never half written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` with ``write(binary file)``: a temporary file in the same folder (:func:`remove_partial_writes`
    finds those a kill left), fsync, then rename, so the file is whole or as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide the weights from the user's group
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_partial_writes(folder: Path) -> None:
    """Delete the temporary files that :func:`write_atomically` left in ``folder`` when its process was killed."""
    for partial in Path(folder).glob(".*.tmp"):
        partial.unlink(missing_ok=True)
