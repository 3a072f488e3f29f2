"""The feature maps a detection model's head receives, for tests that compare models up to the head (the
heads' top-k selections would turn a near-tie into a different output)."""

from __future__ import annotations

import torch


def head_inputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` on ``x`` and return the list its last layer (the head) was called with."""
    seen = []
    handle = model.model[-1].register_forward_pre_hook(lambda module, inputs: seen.extend(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen
