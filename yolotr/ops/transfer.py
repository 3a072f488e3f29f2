"""Small host values onto the device without draining its stream."""

from __future__ import annotations

import torch


def device_tensor(values, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` (numbers, or nested lists of them) as a tensor of ``dtype`` on ``device``.

    ``torch.tensor(values, device="cuda")`` copies and then waits for everything queued on the stream (a host
    synchronisation in the middle of a training step); here the values are put in pinned memory and copied
    without waiting. On the CPU it is ``torch.tensor(values, dtype=dtype)``.
    """
    host = torch.tensor(values, dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
