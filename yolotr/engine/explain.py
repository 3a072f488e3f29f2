"""What a layer looks at: attention maps of Transformer/Swin layers, Grad-CAM for convolutional layers.

``explain(model, image, layer)`` runs one letterboxed image through the model and returns a heatmap
on the original image, with a PNG overlay.

- **Attention layers** (a YAML layer that contains ``nn.MultiheadAttention`` as in YOLOv5's C3TR,
  ``MultiheadSelfAttention`` as in TransformerC3, Swin V2's ``WindowAttentionV2``, YOLO11's
  ``PSAAttention`` (in C2PSA's PSABlocks) or YOLO12's ``AreaAttention`` (in A2C2f's ABlocks)): a forward
  hook on the *last* attention module of that layer records its inputs; the attention probabilities
  ``softmax(q k^T / sqrt(d) [+ bias + mask])`` are then recomputed from them exactly as the module
  computes them (its code path is untouched: the fused ``scaled_dot_product_attention`` never returns
  the weights; PSA and area attention recompute them with their own ``attention_probs``).
  :meth:`AttentionCapture.reconstruct` multiplies them back by ``v`` and the output projection (for
  PSA and area attention: plus the depthwise position term ``pe(v)``, then ``proj``), which reproduces
  the module's output, and the tests check that it does. The map is the **attention each position
  receives**: probabilities averaged over heads, then over the queries that can attend to that
  position (for Swin: the queries of the same window, of the same region of a shifted window, and not
  in the zero padding; for area attention: the queries of the same area, ``h * w / area`` consecutive
  tokens in row-major order (a stripe of ``h / area`` rows when ``area`` divides ``h``), so every area's
  map sums to 1). Windows are put back in place by undoing the partition, the cyclic shift and the
  padding. It is not the attention rollout over several layers.
- **Other layers**: Grad-CAM. For an anchor-based head (YOLOv5, YOLOv4) the top detection is the argmax
  of ``objectness * class probability`` over the decoded output and the score ``S`` is its pre-sigmoid
  ``t_obj + t_cls`` (a confident detection's sigmoids round to 1.0 and would have no gradient). An
  anchor-free head (YOLOv8 / YOLO11 / YOLO12: no objectness, sigmoid class scores) ranks by the class
  score and ``S`` is that class logit ``t_cls``. The gradient of ``S`` with respect to the layer's output
  map ``A (C, h, w)`` gives channel weights ``alpha_c = mean_{h,w} dS/dA_c`` and the map
  ``ReLU(sum_c alpha_c A_c)``.

Either map ``(h, w)`` is upsampled bilinearly to the letterboxed input, the letterbox padding is cropped,
the rest is resized to the original image and scaled to ``[0, 1]`` (min-max).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from yolotr.data.images import read_image
from yolotr.data.imgsz import check_imgsz, largest_stride
from yolotr.data.transforms import fit_image
from yolotr.engine.explain_detr import explain_decoder
from yolotr.engine.explain_output import overlay_path
from yolotr.engine.head_mode import STRETCH, input_fit
from yolotr.engine.predictor import preprocess
from yolotr.errors import ConfigError
from yolotr.models.detection import DetectionModel
from yolotr.nn.attention import MultiheadSelfAttention
from yolotr.nn.psa import AreaAttention, PSAAttention
from yolotr.nn.swin import LOGIT_SCALE_MAX, SwinV2Layer, WindowAttentionV2, unit_vectors, window_partition

LOGGER = logging.getLogger("yolotr")

ATTENTION_TYPES = (nn.MultiheadAttention, MultiheadSelfAttention, WindowAttentionV2, PSAAttention, AreaAttention)


@dataclass
class AttentionCapture:
    """The attention of one module on one forward pass, recomputed from its hooked inputs.

    Attributes:
        module: the attention module.
        probs: float32 attention probabilities, ``(B, heads, L, L)`` for global attention (``L = h*w``
            tokens in row-major order; PSA too), ``(B, nW, heads, N, N)`` for Swin windows
            (``N = window**2``), ``(B * area, heads, L / area, L / area)`` for area attention (image ``b``'s
            areas are rows ``b * area .. (b + 1) * area - 1``, each ``L / area`` consecutive tokens).
        v: float32 values, ``(B, heads, L, d)``, ``(B, nW, heads, N, d)`` or ``(B * area, heads, L / area, d)``.
        output: the module's actual output, detached: ``(L, B, C)`` for ``nn.MultiheadAttention``
            (sequence first; ``(B, L, C)`` for a ``batch_first`` one, RT-DETR's AIFI), ``(B, C, h, w)`` for PSA
            and area attention, ``(B, L, C)`` or ``(B, nW, N, C)`` otherwise.
        mask: Swin's additive shift mask ``(nW, N, N)`` or None.
    """

    module: nn.Module
    probs: torch.Tensor
    v: torch.Tensor
    output: torch.Tensor
    mask: torch.Tensor | None = None

    def reconstruct(self) -> torch.Tensor:
        """``probs @ v`` through the output projection: the module's output, in the layout of ``output``."""
        m, mixed = self.module, self.probs @ self.v
        if isinstance(m, PSAAttention | AreaAttention):
            return _conv_attention_output(m, mixed, self.v, self.output.shape)
        if isinstance(m, nn.MultiheadAttention):
            b, heads, length, d = mixed.shape
            order = (0, 2, 1, 3) if m.batch_first else (2, 0, 1, 3)  # (B, L, C) or (L, B, C), as the module's
            tokens = mixed.permute(*order).reshape(*((b, length) if m.batch_first else (length, b)), heads * d)
            return F.linear(tokens, m.out_proj.weight.float(), _float(m.out_proj.bias))
        if isinstance(m, MultiheadSelfAttention):
            b, heads, length, d = mixed.shape
            tokens = mixed.transpose(1, 2).reshape(b, length, heads * d)
            return F.linear(tokens, m.out_proj.weight.float(), _float(m.out_proj.bias))
        b, nw, heads, n, d = mixed.shape
        tokens = mixed.transpose(2, 3).reshape(b, nw, n, heads * d)
        return F.linear(tokens, m.proj.weight.float(), _float(m.proj.bias))


def _float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def _conv_attention_output(m: nn.Module, mixed: torch.Tensor, v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``proj(map(probs @ v) + pe(map(v)))`` for PSA / area attention: float32 ``(B, C, h, w)``.

    ``mixed`` and ``v`` are ``(B, heads, L, d)`` (PSA) or ``(B * area, heads, L / area, d)`` (area attention);
    ``map`` puts tokens back as each module does, ``pe`` and ``proj`` are the module's own convolutions.
    """
    b, _, h, w = shape
    dtype = m.proj.conv.weight.dtype
    if isinstance(m, PSAAttention):

        def to_map(t: torch.Tensor) -> torch.Tensor:  # (B, heads, L, d) -> (B, heads * d, h, w), head-major
            return t.transpose(-2, -1).reshape(b, -1, h, w)

    else:

        def to_map(t: torch.Tensor) -> torch.Tensor:  # (B * area, heads, L / area, d) -> (B, heads * d, h, w)
            return t.permute(0, 2, 1, 3).reshape(b, h, w, -1).permute(0, 3, 1, 2)

    return m.proj((to_map(mixed) + m.pe(to_map(v).to(dtype)).float()).to(dtype)).float()


def attention_probs(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute ``(probs, v)`` (see :class:`AttentionCapture`) from the inputs an attention module was called with."""
    if isinstance(module, nn.MultiheadAttention):
        return _mha_probs(module, args, kwargs)
    if isinstance(module, MultiheadSelfAttention):
        x = args[0].float()  # (B, L, C)
        b, n, c = x.shape
        heads = module.num_heads
        qkv = F.linear(x, module.in_proj_weight.float(), module.in_proj_bias.float())
        q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, d)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), dim=-1), v
    if isinstance(module, WindowAttentionV2):
        x = args[0].float()  # (B, nW, N, C)
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        b, nw, n, c = x.shape
        heads = module.num_heads
        bias = torch.cat((module.q_bias, torch.zeros_like(module.v_bias), module.v_bias)).float()
        qkv = F.linear(x, module.qkv.weight.float(), bias).view(b, nw, n, 3, heads, c // heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)
        scale = torch.clamp(module.logit_scale.float(), max=LOGIT_SCALE_MAX).exp()
        logits = (unit_vectors(q) * scale) @ unit_vectors(k).transpose(-2, -1) + module.position_bias().float()
        if mask is not None:
            logits = logits + mask.float().unsqueeze(1)  # (nW, 1, N, N) over heads
        return torch.softmax(logits, dim=-1), v
    if isinstance(module, PSAAttention):
        x = args[0]  # (B, C, h, w)
        b, _, h, w = x.shape
        heads, kd, hd = module.num_heads, module.key_dim, module.head_dim
        v = module.qkv(x).view(b, heads, 2 * kd + hd, h * w)[:, :, 2 * kd :].transpose(-2, -1)  # (B, heads, L, d)
        return module.attention_probs(x).float(), v.float()
    if isinstance(module, AreaAttention):
        x = args[0]  # (B, C, h, w); every area is h * w / area consecutive (row-major) tokens
        _, _, v = module._qkv(x)  # (B * area, heads, L / area, d), the module's own layout
        return module.attention_probs(x).float(), v.float()
    raise TypeError(f"{type(module).__name__} is not an attention module yolotr can explain")


def _mha_probs(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.MultiheadAttention`` called as YOLOv5 calls it (sequence-first ``(L, B, C)`` q, k, v) or as RT-DETR's
    AIFI does (``batch_first``, ``(B, L, C)``), without masks.

    Raises:
        ConfigError: a module with separate projections, added key/value biases or a mask, which this does not
            recompute.
    """
    names = ("query", "key", "value")
    query, key, value = (args[i] if i < len(args) else kwargs[name] for i, name in enumerate(names))
    if not module._qkv_same_embed_dim or module.bias_k is not None:
        raise ConfigError("only nn.MultiheadAttention with packed projections and no added k/v bias is explained")
    if any(kwargs.get(name) is not None for name in ("key_padding_mask", "attn_mask")):
        raise ConfigError("nn.MultiheadAttention called with a mask is not explained")
    if module.batch_first:  # (B, L, C) -> (L, B, C), the layout below
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    c, heads = module.embed_dim, module.num_heads
    w = module.in_proj_weight.float().chunk(3)
    bias = module.in_proj_bias.float().chunk(3) if module.in_proj_bias is not None else (None,) * 3
    q, k, v = (
        F.linear(t.float(), wi, bi).view(t.shape[0], t.shape[1], heads, c // heads).permute(1, 2, 0, 3)
        for t, wi, bi in zip((query, key, value), w, bias)
    )  # each (B, heads, L, d)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), dim=-1), v


def attention_modules(layer: nn.Module) -> list[nn.Module]:
    """The attention modules inside ``layer``, in registration (= execution) order."""
    return [m for m in layer.modules() if isinstance(m, ATTENTION_TYPES)]


def capture_attention(model: nn.Module, x: torch.Tensor, module: nn.Module) -> AttentionCapture:
    """Run ``model(x)`` once with a forward hook on ``module`` and recompute its attention.

    The hook only reads the inputs and output; the module runs its normal (fused) code path.
    """
    seen: dict = {}

    def hook(mod, args, kwargs, output):
        seen["args"] = tuple(a.detach() if torch.is_tensor(a) else a for a in args)
        seen["kwargs"] = {k: v.detach() if torch.is_tensor(v) else v for k, v in kwargs.items()}
        seen["output"] = (output[0] if isinstance(output, tuple) else output).detach()

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if "args" not in seen:
        raise ConfigError(f"{type(module).__name__} did not run during the forward pass")
    with torch.no_grad():
        probs, v = attention_probs(module, seen["args"], seen["kwargs"])
    mask = None
    if isinstance(module, WindowAttentionV2):
        args = seen["args"]
        mask = args[1] if len(args) > 1 else seen["kwargs"].get("mask")
    return AttentionCapture(module, probs, v, seen["output"].float(), mask)


def received_attention(capture: AttentionCapture, h: int, w: int, swin: SwinV2Layer | None = None) -> torch.Tensor:
    """Attention each position receives: float32 ``(h, w)`` for the first image of the batch.

    Global attention: ``probs`` averaged over heads and queries. Area attention: the same within each
    area (the queries of one stripe attend to its keys only), the areas laid end to end in token order.
    Swin windows: averaged over heads and over the queries that can attend to each key (same window,
    same shifted region, not padding), then windows reversed, un-rolled and cropped to ``h x w``; ``swin``
    is the layer that owns the attention.
    """
    if isinstance(capture.module, AreaAttention):
        area = capture.module.area
        received = capture.probs[:area].mean(dim=1).mean(dim=1)  # (area, L / area): first image's areas
        if received.numel() != h * w:
            raise ConfigError(f"area attention over {received.numel()} tokens does not match a {h}x{w} map")
        return received.reshape(h, w)
    probs = capture.probs[0].mean(dim=-3)  # (L, L) or (nW, N, N): query x key
    if swin is None:
        if probs.shape[-1] != h * w:
            raise ConfigError(f"attention over {probs.shape[-1]} tokens does not match a {h}x{w} map")
        return probs.mean(dim=0).view(h, w)
    ws, s = swin.window, swin.shift
    hp, wp = h + (-h % ws), w + (-w % ws)
    valid = torch.zeros(1, hp, wp, 1, device=probs.device)
    valid[:, :h, :w] = 1.0
    if s:
        valid = torch.roll(valid, shifts=(-s, -s), dims=(1, 2))
    valid_q = window_partition(valid, ws)[0, :, :, 0]  # (nW, N): the query is a real (unpadded) token
    allowed = valid_q.unsqueeze(-1).expand_as(probs)  # (nW, N_q, N_k)
    if capture.mask is not None:
        allowed = allowed * (capture.mask.to(probs.device) == 0)
    received = (probs * allowed).sum(dim=1) / allowed.sum(dim=1).clamp(min=1.0)  # (nW, N_k)
    nh, nw = hp // ws, wp // ws
    grid = received.view(nh, nw, ws, ws).permute(0, 2, 1, 3).reshape(hp, wp)
    if s:
        grid = torch.roll(grid, shifts=(s, s), dims=(0, 1))
    return grid[:h, :w]


def top_detection_logit(out, head: nn.Module | None = None) -> torch.Tensor:
    """The score Grad-CAM differentiates: a scalar tensor for the first image of the batch.

    Anchor-based heads: the top detection is the argmax of ``objectness * class probability`` over all
    anchors and classes, ranked in log space from the logits (``logsigmoid(t_obj) + logsigmoid(t_cls)``)
    so that saturated sigmoids (which round to 1.0 in float32) still rank. The returned score is that
    detection's ``t_obj + t_cls``: pre-sigmoid, as Grad-CAM takes the pre-softmax class score, so a
    confident detection still has a gradient. Anchor-free heads (``head`` has ``reg_max``; or raw maps
    are 4-D): no objectness; the top detection is the argmax of the class logit ``t_cls`` (the sigmoid is
    monotonic), and the score is that logit. End-to-end heads (raw output ``{"one2many", "one2one"}``): the
    one-to-many branch's maps, since the one-to-one branch reads detached features (no gradient to the layers).

    Args:
        out: the model's eval output, ``(decoded (B, N, 5 + nc), raw [(B, na, H_i, W_i, 5 + nc)])`` for
            an anchor-based head, ``(decoded (B, N, 4 + nc), raw [(B, 4 * reg_max + nc, H_i, W_i)])`` for an
            anchor-free one, or the decoded tensor alone (its probabilities are then turned back into logits).
        head: the model's detection head; needed to tell the two layouts apart when ``out`` is only the
            decoded tensor.
    """
    if hasattr(head, "decoder") and isinstance(out, tuple | list) and len(out) == 2:  # RT-DETR: queries' logits
        logits = out[1][1][-1][0].float()  # the last decoder layer's (Q, nc) class logits of the first image
        query, c = divmod(int(logits.argmax()), logits.shape[1])
        LOGGER.info(
            "Grad-CAM for the top detection: query %d, class %d, score %.4f", query, c, logits[query, c].sigmoid()
        )
        return logits[query, c]
    if isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[1], dict) and "one2many" in out[1]:
        # an end-to-end head (YOLOv10, YOLO26): its one-to-one branch reads detached features, so no gradient
        # of it reaches the layers; Grad-CAM follows the one-to-many branch's top class logit instead
        out = (None, out[1]["one2many"])
    has_raw = isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[1], tuple | list)
    anchor_free = hasattr(head, "reg_max") if head is not None else has_raw and out[1][0].ndim == 4
    if anchor_free:
        if has_raw:  # (B, 4 * reg_max + nc, H, W) per level -> (N, nc) in decoded order (levels, row-major)
            nc = head.nc if head is not None and hasattr(head, "nc") else out[0].shape[-1] - 4
            cls = torch.cat([r[:1].flatten(2) for r in out[1]], 2)[0, -nc:].transpose(0, 1).float()
        else:
            decoded = out[0] if isinstance(out, tuple | list) else out
            cls = torch.logit(decoded[0, :, 4:].float(), eps=1e-7)
        anchor, c = divmod(int(cls.argmax()), cls.shape[1])
        LOGGER.info(
            "Grad-CAM for the top detection: anchor %d, class %d, score %.4f",
            anchor,
            c,
            cls[anchor, c].sigmoid().item(),
        )
        return cls[anchor, c]
    if has_raw:
        logits = torch.cat([r[:1].reshape(1, -1, r.shape[-1]) for r in out[1]], 1)[0]  # (N, 5 + nc), decoded order
    else:
        decoded = out[0] if isinstance(out, tuple | list) else out
        logits = torch.logit(decoded[0].float(), eps=1e-7)
    obj, cls = logits[:, 4:5].float(), logits[:, 5:].float()
    rank = F.logsigmoid(obj) + F.logsigmoid(cls)  # (N, nc): log(objectness * class probability)
    anchor, c = divmod(int(rank.argmax()), cls.shape[1])
    LOGGER.info(
        "Grad-CAM for the top detection: anchor %d, class %d, score %.4f", anchor, c, rank[anchor, c].exp().item()
    )
    return obj[anchor, 0] + cls[anchor, c]


def grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Grad-CAM of ``layer`` for the top detection: float32 ``(h, w)``, >= 0, first image of the batch.

    ``A (C, h, w)`` is the layer's output, ``S`` the score of :func:`top_detection_logit`; channel
    weights ``alpha_c = mean_{h,w} dS/dA_c`` and the map ``ReLU(sum_c alpha_c A_c)``.
    """
    seen: dict = {}

    def hook(mod, args, output):
        if not torch.is_tensor(output):
            raise ConfigError(f"layer {getattr(mod, 'i', '?')} does not output one feature map; pick another")
        seen["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = model(x.detach().requires_grad_(True))  # so the map has a gradient even with frozen weights
            score = top_detection_logit(out, getattr(model, "model", [None])[-1])
            (grad,) = torch.autograd.grad(score, seen["a"])  # leaves the parameters' .grad alone
    finally:
        handle.remove()
    a, grad = seen["a"].detach()[0].float(), grad[0].float()  # (C, h, w)
    weights = grad.mean(dim=(1, 2))  # (C,)
    return F.relu((weights[:, None, None] * a).sum(0))


def to_image(
    heat: torch.Tensor,
    input_hw: tuple[int, int],
    pad: tuple[float, float],
    shape0: tuple[int, int],
    ratio: tuple[float, float],
) -> np.ndarray:
    """Feature-level map ``(h, w)`` -> float32 ``(H0, W0)`` in ``[0, 1]`` on the original image.

    Upsampled bilinearly to the model's ``input_hw``, cropped to the resized image (``round(side * ratio)``
    pixels per axis, ``ratio = (rw, rh)``, from the letterbox's ``pad = (left, top)``; all of a stretched
    input), resized to ``shape0 = (H0, W0)`` and min-max scaled (all zeros when constant).
    """
    up = F.interpolate(heat[None, None].float(), size=input_hw, mode="bilinear", align_corners=False)[0, 0]
    (h0, w0), (left, top) = shape0, (int(pad[0]), int(pad[1]))
    bottom, right = top + max(round(h0 * ratio[1]), 1), left + max(round(w0 * ratio[0]), 1)
    crop = up[top:bottom, left:right].cpu().numpy().astype(np.float32)
    out = cv2.resize(crop, (w0, h0), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(out.min()), float(out.max())
    if not np.isfinite([lo, hi]).all() or hi - lo <= 1e-5 * max(abs(hi), abs(lo)):  # flat up to rounding
        LOGGER.warning("the map is constant (%.3g); returning zeros", lo)
        return np.zeros((h0, w0), np.float32)
    return ((out - lo) / (hi - lo)).astype(np.float32)


def save_overlay(image: np.ndarray, heatmap: np.ndarray, path: str | Path, title: str) -> Path:
    """Write the RGB ``(H, W, 3)`` uint8 image with the ``(H, W)`` heatmap (jet, alpha 0.5) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = heatmap.shape
    fig = Figure(figsize=(6.0 * w / max(h, w) + 1.0, 6.0 * h / max(h, w) + 0.5), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image)
    shown = ax.imshow(heatmap, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=150)
    return path


def explain(
    model: nn.Module,
    image_path: str | Path,
    layer: int,
    imgsz: int = 640,
    save_path: str | Path | None = None,
    project: str | Path = "runs/explain",
    name: str = "exp",
    box: int = 0,
    exist_ok: bool = False,
) -> tuple[np.ndarray, Path]:
    """Heatmap of what layer ``layer`` of ``model`` looks at on one image, and its overlay PNG.

    Args:
        model: a ``DetectionModel`` (``model.model`` is the YAML's layers; the last is Detect).
        image_path: an image file.
        layer: YAML layer index, ``0 <= layer < len(model.model) - 1``.
        imgsz: letterbox size (stride-aligned rectangle, as ``yolotr predict``; RT-DETR: the stretched square).
        save_path: the PNG to write (a folder: the default name in it); by default ``<image stem>_layer<layer>.png``
            in a new run folder ``project/name`` (``runs/explain/exp``, then ``exp2``, ... as training runs are
            numbered). Never the image itself; an existing file only with ``exist_ok``.
        project, name: that run folder, when ``save_path`` is not given.
        box: RT-DETR's head layer only: the rank of the detection whose sampling points are drawn (0: the top).
        exist_ok: replace an existing ``save_path``.

    Returns:
        ``(heatmap, path)``: float32 ``(H0, W0)`` in ``[0, 1]`` on the original image (the attention each
        position receives for attention layers, Grad-CAM otherwise; see the module docstring) and the
        PNG's path. For an RT-DETR model's head layer (``len(model.model) - 1``) the array is instead the
        decoder's sampling points of detection ``box``: rows ``x, y, level, head, weight`` ``(n_heads * L * P,
        5)`` in original-image pixels (:mod:`yolotr.engine.explain_detr`).

    Raises:
        ConfigError: ``layer`` out of range (or the Detect head), ``box`` for another layer, an output path
            that would replace the image or an existing file (:func:`~yolotr.engine.explain_output.overlay_path`).
    """
    if isinstance(getattr(model, "model", None), DetectionModel):  # a YOLO: its DetectionModel
        model = model.model
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ConfigError(f"layer {layer!r}: give a layer index (an int; see `yolotr info --model ...`)")
    layers = model.model
    decoder = hasattr(layers[-1], "decoder")  # RT-DETR: the head's own layer shows its sampling points
    if not 0 <= layer < len(layers) - 1 and not (decoder and layer == len(layers) - 1):
        also = f", or the decoder's sampling points (layer {len(layers) - 1})" if decoder else ""
        raise ConfigError(
            f"--layer {layer} is out of range: this model has layers 0..{len(layers) - 2} before the "
            f"Detect head (layer {len(layers) - 1}){also}; see `yolotr info --model ...`"
        )
    head = decoder and layer == len(layers) - 1
    if box < 0 or (box and not head):
        where = f"layer {len(layers) - 1}" if decoder else "an RT-DETR model's head layer"
        raise ConfigError(f"--box {box}: a detection rank (0 is the top one), drawn only on {where}")
    target = layers[layer]
    save_path = overlay_path(save_path, image_path, layer, project, name, exist_ok)
    model.eval()
    image = read_image(image_path)
    stride = largest_stride(model)
    size = check_imgsz(imgsz, stride)
    stretched = input_fit(model) == STRETCH  # RT-DETR: the imgsz square, as it predicts
    boxed, ratio, pad = fit_image(image, size, stretched, auto=True, stride=stride)
    param = next(model.parameters())
    x = preprocess([boxed], param.device, param.dtype)
    if head:
        return explain_decoder(model, image, x, pad, np.asarray(ratio, np.float32), box, save_path)
    kind = str(getattr(target, "type", type(target).__name__))
    found = attention_modules(target)
    if found:
        module = found[-1]
        shape: dict = {}

        def record_size(mod, args, output):  # returns None: the output is left as it is
            shape["hw"] = tuple(output.shape[-2:])

        handle = target.register_forward_hook(record_size)
        try:
            capture = capture_attention(model, x, module)
        finally:
            handle.remove()
        owner = next((m for m in target.modules() if isinstance(m, SwinV2Layer) and m.attn is module), None)
        heat = received_attention(capture, *shape["hw"], swin=owner)
        what = f"attention received, mean over heads and queries ({type(module).__name__} {len(found)}/{len(found)})"
    else:
        heat = grad_cam(model, x, target)
        what = "Grad-CAM of the top detection score"
    heatmap = to_image(heat, tuple(x.shape[2:]), pad, image.shape[:2], ratio)
    path = Path(save_path)
    title = f"layer {layer} {kind}\n{what}"
    save_overlay(image, heatmap, path, title)
    LOGGER.info("layer %d (%s): %s -> %s", layer, kind, what, path)
    return heatmap, path
