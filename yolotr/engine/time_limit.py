"""``time_limit``: the number of epochs that fits a training run into a given number of minutes."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

LOGGER = logging.getLogger("yolotr")


def fitted_epochs(minutes: float, epoch_seconds: float, batches: int, epochs_done: int, device, main: bool) -> int:
    """Epochs that fit ``minutes`` at ``epoch_seconds`` an epoch (training and validation), at least
    ``epochs_done``; under DDP the first process's answer. Warns when one batch is already longer."""
    limit_seconds = float(minutes) * 60
    if main and limit_seconds < epoch_seconds / max(batches, 1):
        LOGGER.warning(
            "time_limit %g min (%.1f s) is shorter than one batch (%.1f s); time_limit is in minutes "
            "(--set time_limit=5 = five minutes). Training the one epoch already done.",
            minutes, limit_seconds, epoch_seconds / max(batches, 1),
        )  # fmt: skip
    fitted = max(int(limit_seconds / max(epoch_seconds, 1e-3)), epochs_done)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = torch.tensor([fitted], device=device)
        dist.broadcast(value, 0)
        fitted = int(value.item())
    if main:
        LOGGER.info("time limit %.1f min: %d epochs (%.1f s per epoch)", minutes, fitted, epoch_seconds)
    return fitted
