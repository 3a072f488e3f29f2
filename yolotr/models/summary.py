"""Model summaries: layer table, parameter counts and GFLOPs (``torch.utils.flop_counter``)."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

LOGGER = logging.getLogger("yolotr")


ATTENTION_PRODUCTS = ("bmm", "scaled_dot_product")  # attention's matrix products, by torch op name


def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, channels: int = 3) -> float:
    """FLOPs (multiply and add counted separately) of one eval forward of a ``(1, C, H, W)`` zero image."""
    return flop_counts(model, imgsz, channels)[0]


def flop_counts(model: nn.Module, imgsz: int | tuple[int, int] = 640, channels: int = 3) -> tuple[float, float]:
    """``(total, attention)`` FLOPs of one eval forward of a ``(1, C, H, W)`` zero image: every op that
    ``torch.utils.flop_counter`` counts, and of them the batched matrix products of attention (``bmm`` and
    the fused scaled-dot-product kernels), which counts made with ``thop`` (the ``ultralytics`` package's, its
    YAML comments') leave out: yolo12n is 7.5 GFLOPs at 640 here and 6.7 there, 1.0 of the 7.5 in attention."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, h, w, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in by_op.items() if any(name in str(op) for name in ATTENTION_PRODUCTS))
    return float(counter.get_total_flops()), float(attention)


def parameter_rows(model: nn.Module) -> list[str]:
    """One line per parameter tensor: index, name, whether it trains, count, shape, mean, std and dtype."""
    lines = [f"{'':>5} {'name':<48} {'trained':>7} {'params':>9} {'shape':<20} {'mu':>10} {'sigma':>10} dtype"]
    for i, (name, p) in enumerate(model.named_parameters()):
        values = p.detach().float()
        sigma = float(values.std()) if p.numel() > 1 else 0.0
        lines.append(
            f"{i:>5} {name:<48} {p.requires_grad!s:>7} {p.numel():>9,} {str(list(p.shape)):<20} "
            f"{float(values.mean()):>10.3g} {sigma:>10.3g} {str(p.dtype).removeprefix('torch.')}"
        )
    return lines


def model_summary(model: nn.Module, imgsz: int = 640, verbose: bool = True, detailed: bool = False) -> dict:
    """Layer table (index, from, n, params, module, args), total params and GFLOPs at ``imgsz``.

    Returns a dict with ``layers`` (int), ``params``, ``gradients``, ``gflops`` and ``attention_gflops`` (the
    part in attention's matrix products: :func:`flop_counts`); logs a table when ``verbose``, after a row per
    parameter tensor (:func:`parameter_rows`) when ``detailed``.
    """
    params = sum(p.numel() for p in model.parameters())
    gradients = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops, attention = flop_counts(model, imgsz)
    gflops, attention_gflops = flops / 1e9, attention / 1e9
    lines = parameter_rows(model) if detailed else []
    lines.append(f"{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<24}{'arguments'}")
    for row in getattr(model, "rows", []):
        lines.append(f"{row.index:>3}{str(row.source):>18}{row.number:>3}{row.params:10,}  {row.module:<24}{row.args}")
    n_layers = len(list(model.modules()))
    in_attention = (
        f" ({attention_gflops:.1f} of them in attention's matrix products, which the ultralytics package's count "
        "leaves out)"
        if attention_gflops >= 0.05
        else ""
    )
    lines.append(
        f"summary: {n_layers} layers, {params:,} parameters, {gradients:,} gradients, "
        f"{gflops:.1f} GFLOPs at {imgsz}x{imgsz}{in_attention}"
    )
    if verbose:
        LOGGER.info("\n".join(lines))
    return {
        "layers": n_layers,
        "params": params,
        "gradients": gradients,
        "gflops": gflops,
        "attention_gflops": attention_gflops,
        "table": "\n".join(lines),
    }
