"""Optimizer parameter groups and the learning-rate / momentum schedule (warmup, then cosine or linear)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from yolotr.engine.config import ADAM_LIKE, OPTIMIZER_NAMES
from yolotr.engine.musgd import MuSGD
from yolotr.nn.attention import TransformerBlock, TransformerC3Layer
from yolotr.nn.deform_attn import MSDeformAttn
from yolotr.nn.detr import DeformableTransformerDecoderLayer, TransformerEncoderLayer
from yolotr.nn.head_af import DFL
from yolotr.nn.psa import ABlock, AreaAttention, PSAAttention, PSABlock
from yolotr.nn.swin import SwinV2Block, SwinV2Layer

LOGGER = logging.getLogger("yolotr")

# Modules whose parameters (all of them: attention, MLP, norms) train at ``lr_transformer_scale``.
# YOLO11's PSABlock (in C2PSA, and in C3k2 with attn=True) and YOLO12's ABlock (in A2C2f) count as
# Transformer layers; their attention modules are listed too for a model that uses them bare. RT-DETR's encoder
# layer (AIFI) and decoder layers (self-attention, deformable cross-attention, FFN) count too (its head's
# ``train_defaults`` keep them at scale 1, the ultralytics package's recipe).
TRANSFORMER_MODULES: tuple[type[nn.Module], ...] = (
    TransformerEncoderLayer,
    DeformableTransformerDecoderLayer,
    MSDeformAttn,
    TransformerBlock,
    TransformerC3Layer,
    SwinV2Layer,
    SwinV2Block,
    PSABlock,
    PSAAttention,
    ABlock,
    AreaAttention,
    nn.MultiheadAttention,
    nn.LayerNorm,
)
NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.SyncBatchNorm)
# Modules whose parameters are constants, never optimized even if ``requires_grad`` was switched back on
# (``model.requires_grad_(True)``): the anchor-free head's DFL bin values ``0 .. reg_max - 1``.
CONSTANT_MODULES: tuple[type[nn.Module], ...] = (DFL,)


def parameter_groups(model: nn.Module, weight_decay: float, transformer_scale: float) -> list[dict]:
    """Split trainable parameters into groups.

    ``decay`` (conv/linear weights, with weight decay), ``no_decay`` (norm weights, and what a module names
    in its ``no_weight_decay()``, timm's convention: Swin V2's logit scale and position-bias MLP; no decay) and
    ``bias`` (no decay; warmed up from ``warmup_bias_lr``), each once for CNN parameters
    (``lr_scale`` 1) and once for parameters inside Transformer/Swin modules (``lr_scale =
    transformer_scale``). Empty groups are dropped. Frozen parameters (``requires_grad`` False) and
    those of :data:`CONSTANT_MODULES` are in no group.
    """
    inside_transformer: set[int] = set()
    seen: set[int] = set()
    kept_from_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, TRANSFORMER_MODULES):
            inside_transformer.update(id(p) for p in module.parameters())
        if callable(getattr(module, "no_weight_decay", None)):
            own = dict(module.named_parameters())
            kept_from_decay.update(id(own[name]) for name in module.no_weight_decay())
        if isinstance(module, CONSTANT_MODULES):
            seen.update(id(p) for p in module.parameters())
    groups = {(kind, tr): [] for kind in ("decay", "no_decay", "bias") for tr in (False, True)}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("bias"):
                kind = "bias"
            elif isinstance(module, NORMS) or p.ndim <= 1 or id(p) in kept_from_decay:
                kind = "no_decay"
            else:
                kind = "decay"
            groups[(kind, id(p) in inside_transformer)].append(p)
    out = []
    for (kind, tr), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "weight_decay": weight_decay if kind == "decay" else 0.0,
                    "lr_scale": transformer_scale if tr else 1.0,
                    "is_bias": kind == "bias",
                    "name": f"{kind}{'/transformer' if tr else ''}",
                }
            )
    return out


AUTO_MUSGD_ITERATIONS = 10_000  # the ultralytics package's threshold for optimizer: auto


def resolve_auto_optimizer(cfg: dict, n_images: int, nc: int, world: int = 1) -> str:
    """``optimizer: auto`` as the ``ultralytics`` package (8.4) decides it, written into ``cfg`` (so that
    ``args.yaml`` and a resumed run hold the choice): over 10,000 optimizer steps of the nominal batch
    (``ceil(n_images / max(batch * world, nbs)) * epochs``) MuSGD with ``lr0`` 0.01, else AdamW with
    ``lr0 = round(0.002 * 5 / (4 + nc), 6)``; both with ``momentum`` 0.9 and ``warmup_bias_lr`` 0. The
    settings' ``lr0`` and ``momentum`` are replaced (logged). Returns the optimizer's name; ``cfg`` with
    another optimizer is left alone."""
    if str(cfg.get("optimizer", "")).lower() != "auto":
        return str(cfg.get("optimizer"))
    iterations = math.ceil(n_images / max(int(cfg["batch"]) * world, int(cfg["nbs"]))) * int(cfg["epochs"])
    if iterations > AUTO_MUSGD_ITERATIONS:
        name, lr = "MuSGD", 0.01
    else:
        name, lr = "AdamW", round(0.002 * 5 / (4 + nc), 6)
    LOGGER.info(
        "optimizer: auto -> %s (lr0=%g, momentum=0.9, warmup_bias_lr=0; %d nominal-batch iterations %s %d), "
        "replacing lr0=%s, momentum=%s", name, lr, iterations, ">" if name == "MuSGD" else "<=",
        AUTO_MUSGD_ITERATIONS, cfg.get("lr0"), cfg.get("momentum"),
    )  # fmt: skip
    cfg.update(optimizer=name, lr0=lr, momentum=0.9, warmup_bias_lr=0.0)
    return name


def resolve_train_settings(cfg: dict, model: nn.Module, given, n_images: int, world: int = 1) -> dict:
    """The settings that depend on the model and the data, written into ``cfg`` before the optimizer is built
    (so ``args.yaml`` and a resumed run hold them): first the head's ``train_defaults`` (e.g. RT-DETR's: the
    ``ultralytics`` package's recipe for it) for every key not in ``given`` (the keys the user set), then
    ``optimizer: auto`` (:func:`resolve_auto_optimizer`) and ``lr_transformer_scale: auto``
    (:func:`auto_transformer_scale`). Returns the head defaults applied."""
    layers = getattr(getattr(model, "module", model), "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential | nn.ModuleList) and len(layers) else None
    applied = {k: v for k, v in (getattr(head, "train_defaults", None) or {}).items() if k not in set(given)}
    if applied:
        LOGGER.info(
            "%s's training defaults: %s", type(head).__name__, ", ".join(f"{k}={v}" for k, v in applied.items())
        )
        cfg.update(applied)
    resolve_auto_optimizer(cfg, n_images, int(getattr(model, "nc", 80)), world)
    if cfg.get("lr_transformer_scale") == "auto":
        cfg["lr_transformer_scale"] = auto_transformer_scale(model)
    return applied


# The Transformer layers yolotr adds to the reference designs (TransformerC3, YOLOv5's C3TR, Swin V2): their
# learning rate is damped under ``lr_transformer_scale: auto`` (bench/stability.py measured them there).
DAMPED_MODULES: tuple[type[nn.Module], ...] = (TransformerBlock, TransformerC3Layer, SwinV2Layer, SwinV2Block)
AUTO_DAMPED_SCALE = 0.2


def auto_transformer_scale(model: nn.Module) -> float:
    """``lr_transformer_scale: auto``: 0.2 for a model with one of :data:`DAMPED_MODULES`, else 1.0, the
    learning rate at which the reference packages train their own attention (YOLO11's C2PSA, YOLO12's A2C2f,
    YOLO26, RT-DETR); logged. With MuSGD, yolo26n at 0.2 reached 0.83x the package's mAP50-95 on the shapes
    bench and at 1.0 its level (the closing note of issue 27)."""
    damped = sorted({type(m).__name__ for m in model.modules() if isinstance(m, DAMPED_MODULES)})
    scale = AUTO_DAMPED_SCALE if damped else 1.0
    reason = f"the model has {', '.join(damped)}" if damped else "no TransformerC3, C3TR or Swin V2 layer"
    LOGGER.info("lr_transformer_scale: auto -> %g (%s)", scale, reason)
    return scale


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    transformer_scale: float,
    nesterov: bool = True,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), AdamW or MuSGD over :func:`parameter_groups`; or, as the ``ultralytics``
    package builds them (its ``optimizer`` choices), Adam, Adamax, NAdam and RAdam with ``betas=(momentum,
    0.999)`` (``weight_decay`` of the decayed group as their L2 term) and RMSprop with ``momentum``.

    ``fused``: SGD as one fused kernel (``torch.optim.SGD(fused=True)``): bit for bit the for-loop's
    update, in 2.4 ms instead of 4.1 for yolov8n on a 2-core Xeon; for steps that ``GradScaler`` does not
    take (it would run a fused optimizer on non-finite gradients and only mask the update).

    MuSGD (:class:`yolotr.engine.musgd.MuSGD`, YOLO26's optimizer in the ``ultralytics`` package) gives the
    weight-decayed groups (conv and linear weights, 2-D or 4-D) Muon's orthogonalised update (gain 0.2)
    plus SGD, and the others plain SGD; as the package's trainer does, the class branches of the head
    (``cv3`` and an end-to-end head's ``one2one_cv3``) train at 3x the learning rate (their own groups,
    ``lr_scale`` x 3, named ``.../cls3x``). ``auto`` must be resolved first (:func:`resolve_auto_optimizer`)."""
    groups = parameter_groups(model, weight_decay, transformer_scale)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    if name.lower() == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, fused=fused or None)
    if name.lower() == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    adam_like = {n.lower(): n for n in ADAM_LIKE}
    if name.lower() in adam_like:  # coupled (L2) decay in the decayed group, as the package builds them
        return getattr(torch.optim, adam_like[name.lower()])(groups, lr=lr, betas=(momentum, 0.999))
    if name.lower() == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    if name.lower() == "musgd":
        groups = _muon_groups(_boost_class_branches(model, groups, lr))
        return MuSGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name.lower() == "auto":
        raise ValueError("optimizer 'auto' depends on the data: resolve it first (resolve_auto_optimizer)")
    raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZER_NAMES)}")


def describe_groups(optimizer: torch.optim.Optimizer) -> str:
    """One line naming the optimizer and its parameter groups in order, as ``results.csv``'s ``lr/pg<i>`` columns
    and TensorBoard's ``lr/pg<i>`` tags number them, e.g. ``SGD(lr=0.01, momentum=0.937): pg0 decay (57 tensors,
    weight_decay 0.0005), pg1 no_decay (57, 0), pg2 bias (63, 0)``."""
    first = optimizer.defaults
    momentum = first.get("momentum", first.get("betas", (None,))[0])
    groups = ", ".join(
        f"pg{i} {g.get('name', 'params')} ({len(g['params'])} tensors, weight_decay {g['weight_decay']:g})"
        for i, g in enumerate(optimizer.param_groups)
    )
    return f"{type(optimizer).__name__}(lr={first['lr']:g}, momentum={momentum:g}): {groups}"


def _muon_groups(groups: list[dict]) -> list[dict]:
    """``use_muon`` on the decayed matrices and convolution kernels (2-D and 4-D, as the package's rule: Muon
    orthogonalises those only); a decayed parameter of another shape (a 3-D or 5-D kernel) moves to a plain SGD
    group of the same settings, named ``.../sgd``."""
    out = []
    for g in groups:
        if not g["name"].startswith("decay"):
            out.append({**g, "use_muon": False})
            continue
        matrices = [p for p in g["params"] if p.ndim in (2, 4)]
        others = [p for p in g["params"] if p.ndim not in (2, 4)]
        if matrices:
            out.append({**g, "params": matrices, "use_muon": True})
        if others:
            out.append({**g, "params": others, "use_muon": False, "name": f"{g['name']}/sgd"})
    return out


def _boost_class_branches(model: nn.Module, groups: list[dict], lr: float, gain: float = 3.0) -> list[dict]:
    """Each group split in two: the parameters of the head's class branches (``cv3``, ``one2one_cv3``) in a
    group of ``gain`` times the learning rate, the rest as they were (the package's MuSGD groups)."""
    layers = getattr(model, "module", model)  # DDP
    layers = getattr(layers, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential | nn.ModuleList) and len(layers) else None
    branches = [getattr(head, k, None) for k in ("cv3", "one2one_cv3")]
    boosted = {id(p) for m in branches if isinstance(m, nn.Module) for p in m.parameters()}
    if not boosted:
        return groups
    out = []
    for g in groups:
        fast = [p for p in g["params"] if id(p) in boosted]
        rest = [p for p in g["params"] if id(p) not in boosted]
        if rest:
            out.append({**g, "params": rest})
        if fast:
            scale = g["lr_scale"] * gain  # the bias warmup starts at 3x warmup_bias_lr too (docs/yaml.md: measured)
            out.append({**g, "params": fast, "lr_scale": scale, "lr": lr * scale, "name": f"{g['name']}/cls3x"})
    return out


def lr_factor(epoch: float, epochs: int, lrf: float, cosine: bool) -> float:
    """Decay factor at ``epoch``: cosine or linear from 1 to ``lrf`` over ``epochs``."""
    if cosine:
        return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return (1 - epoch / epochs) * (1.0 - lrf) + lrf


def apply_schedule(
    optimizer: torch.optim.Optimizer,
    cfg: dict,
    epoch: int,
    iteration: int,
    warmup_iters: int,
    lr_multiplier: float = 1.0,
) -> None:
    """Set every group's lr (and momentum) for a global ``iteration`` of ``epoch``.

    Warmup (YOLOv5's): biases fall from ``warmup_bias_lr``, other groups rise from 0, SGD's momentum
    rises from ``warmup_momentum``; afterwards the per-epoch decay. A pure function of
    ``(epoch, iteration)``, so a resumed run continues on the same curve. AdamW's betas are left as built
    (``(momentum, 0.999)``), as YOLOv5 and the package leave them: only a group with a ``momentum`` is warmed.
    """
    base = cfg["lr0"] * lr_factor(epoch, cfg["epochs"], cfg["lrf"], cfg["cos_lr"]) * lr_multiplier
    for g in optimizer.param_groups:
        target = base * g.get("lr_scale", 1.0)
        if iteration < warmup_iters:
            start = cfg["warmup_bias_lr"] * lr_multiplier * g.get("lr_scale", 1.0) if g.get("is_bias") else 0.0
            g["lr"] = float(np.interp(iteration, [0, warmup_iters], [start, target]))
            momentum = float(np.interp(iteration, [0, warmup_iters], [cfg["warmup_momentum"], cfg["momentum"]]))
        else:
            g["lr"] = target
            momentum = cfg["momentum"]
        if "momentum" in g:
            g["momentum"] = momentum
