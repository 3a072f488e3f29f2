"""Model summaries: layer table, parameter counts and GFLOPs (``torch.utils.flop_counter``)."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

LOGGER = logging.getLogger("yolotr")


def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, channels: int = 3) -> float:
    """FLOPs (multiply and add counted separately) of one eval forward of a ``(1, C, H, W)`` zero image."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, h, w, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def model_summary(model: nn.Module, imgsz: int = 640, verbose: bool = True) -> dict:
    """Layer table (index, from, n, params, module, args), total params and GFLOPs at ``imgsz``.

    Returns a dict with ``layers`` (int), ``params``, ``gradients`` and ``gflops``; logs a table when
    ``verbose``.
    """
    params = sum(p.numel() for p in model.parameters())
    gradients = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gflops = count_flops(model, imgsz) / 1e9
    lines = [f"{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<24}{'arguments'}"]
    for row in getattr(model, "rows", []):
        lines.append(f"{row.index:>3}{str(row.source):>18}{row.number:>3}{row.params:10,}  {row.module:<24}{row.args}")
    n_layers = len(list(model.modules()))
    lines.append(
        f"summary: {n_layers} layers, {params:,} parameters, {gradients:,} gradients, "
        f"{gflops:.1f} GFLOPs at {imgsz}x{imgsz}"
    )
    if verbose:
        LOGGER.info("\n".join(lines))
    return {
        "layers": n_layers,
        "params": params,
        "gradients": gradients,
        "gflops": gflops,
        "table": "\n".join(lines),
    }
