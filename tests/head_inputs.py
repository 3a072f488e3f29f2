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


def calibrate_batch_norm(model: torch.nn.Module, x: torch.Tensor, min_var: float = 0.0) -> torch.nn.Module:
    """Set every BatchNorm's running statistics to those of ``x`` (one training-mode forward, cumulative
    average), each variance at least ``min_var``, then put ``model`` in eval mode; returns it.

    A freshly built model in eval mode divides by running variances of 1 that its features do not have: each
    layer shrinks them by about 3x, so the deep levels of a large model reach 1e-9 and an absolute tolerance
    compares nothing there. After calibration every level is of order 1, as in a trained model. Channels that
    barely vary on ``x`` are then scaled up many times, which makes a deep random model ill-conditioned
    (yolov5x: float32 6 px from float64); ``min_var=0.5`` keeps every level of order 0.1-1 with float32 within
    1e-4 px of float64, for comparisons of two runtimes.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
        norm.running_var.clamp_(min=min_var)
    return model.eval()
