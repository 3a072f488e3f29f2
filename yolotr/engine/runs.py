"""Where a training run happens: its device and its output folder (shared by the detection and captioning trainers)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from yolotr.errors import ConfigError


def select_device(device: str = "auto", local_rank: int = -1) -> torch.device:
    """``auto`` (or empty) -> the local CUDA device when there is one, else CPU; ``cpu``, ``cuda``,
    ``cuda:N``, or a bare GPU index ``N`` as YOLOv5 and Ultralytics take it (``0`` -> ``cuda:0``).

    Raises:
        ConfigError: a device string that is none of these, or a CUDA device where CUDA is not available.
    """
    device = str(device).strip().lower()
    if device in ("auto", ""):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.isdigit():
        device = f"cuda:{device}"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ConfigError(f"device {device!r}: use auto, cpu, cuda, cuda:N or a GPU index N (one device per process)")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for, but CUDA is not available")
        if local_rank >= 0:  # a DDP rank: its GPU becomes the current one (pinning threads, NCCL, new tensors)
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        index, count = torch.device(device).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise ConfigError(f"device '{device}': this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device(device)


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """``project/name``, or ``name2``, ``name3``, ... when it exists (unless ``exist_ok``); checked to be a
    folder that can be made (:func:`check_output_dir`), before any work is done."""
    base = check_output_dir(Path(project) / name)
    if exist_ok or not base.exists():
        return base
    n = 2
    while (base.parent / f"{name}{n}").exists():
        n += 1
    return base.parent / f"{name}{n}"


def check_output_dir(path: str | Path) -> Path:
    """``path`` back when it is a folder, or one can be made there: its nearest existing ancestor is a
    writable folder. Nothing is created.

    Raises:
        ConfigError: naming the file in the way or the folder that cannot be written.
    """
    path = Path(path)
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{path}: cannot make this output folder: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot make this output folder: {ancestor} is not writable")
    return path
