"""Exponential moving average of model weights (YOLOv5's ModelEMA: decay ramps up over ``tau`` updates)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` for floating-point tensors, ``d = decay * (1 - exp(-updates / tau))``.

    The EMA model is a deep copy in eval mode without gradients; integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.decay, self.tau, self.updates = decay, tau, updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)
            else:
                value.copy_(source[key])

    def state_dict(self) -> dict:
        return {"state_dict": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel/DataParallel wrapper, or the model itself."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
