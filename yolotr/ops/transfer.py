"""Host tensors and values onto the device without draining its stream."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; from the host to CUDA through pinned memory with a non-blocking copy.

    A plain ``.to("cuda")`` of a host tensor waits for everything queued on the stream (a host
    synchronisation in the middle of a training step), and a non-blocking one from pageable memory may
    still stall on its staging copy. Anything else (already there, the CPU, another device) is ``.to``.
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def device_tensor(values, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``values`` (numbers, or nested lists of them) as a tensor of ``dtype`` on ``device``, by :func:`to_device`
    (``torch.tensor(values, device="cuda")`` copies and then drains the stream)."""
    return to_device(torch.tensor(values, dtype=dtype), device)
