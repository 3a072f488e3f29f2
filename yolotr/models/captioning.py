"""CaptioningModel: a visual encoder and a pre-LayerNorm Transformer decoder, with greedy and beam search.

Derived from the "Show, Attend and Tell" / ViT-GPT2 recipe, it differs in that the visual memory
comes from any yolotr detection backbone (a chosen layer of a YOLOv5-format YAML, optionally frozen
and optionally initialised from a detection checkpoint) or from a small ViT patch embedding, and in
that decoding is batched over images *and* beams: one decoder call per step for the whole batch.

Shapes: images ``(B, 3, H, W)`` float in ``[0, 1]``; token ids ``(B, T)`` int64 with
:class:`~yolotr.models.vocab.Vocabulary` special ids; visual memory ``(B, N, D)`` with
``N = h * w`` cells of the encoder grid; logits ``(B, T, V)`` in the compute dtype.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from yolotr.errors import ConfigError
from yolotr.models.vocab import Vocabulary

LOGGER = logging.getLogger("yolotr")
PAD, START, END = Vocabulary.PAD, Vocabulary.START, Vocabulary.END


def sine_positions_1d(n: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal positions: ``(n, dim)`` float32, sin in even and cos in odd channels."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = temperature ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


def sine_positions_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine positions for an ``h x w`` grid flattened row-major: ``(h * w, dim)`` float32.

    The first half of the channels encodes the row, the second half the column (as in DETR, with
    integer cell coordinates). ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ConfigError(f"2-D sine positions need a width divisible by 4, got {dim}")
    half = dim // 2
    rows = sine_positions_1d(h, half, temperature)[:, None, :].expand(h, w, half)
    cols = sine_positions_1d(w, half, temperature)[None, :, :].expand(h, w, half)
    return torch.cat([rows, cols], -1).reshape(h * w, dim)


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``; optionally returns its weights.

    Args:
        dim: model width ``D``. heads: number of heads (``D % heads == 0``). dropout: attention dropout.

    ``forward(x (B, T, D), context (B, N, D) or None, causal)`` -> ``(B, T, D)`` and, with
    ``return_weights=True``, the head-averaged attention ``(B, T, N)`` float32 (computed explicitly
    then, in float32 for the softmax statistics; the output is the same up to rounding).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout}"

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t, d = x.shape
        ctx = x if context is None else context
        n, h = ctx.shape[1], self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        weights = None
        if return_weights:
            ftype = torch.promote_types(q.dtype, torch.float32)
            logits = (q.to(ftype) @ k.to(ftype).transpose(-2, -1)) / math.sqrt(d // h)
            if causal:
                future = torch.ones(t, n, dtype=torch.bool, device=x.device).triu(1)
                logits = logits.masked_fill(future, float("-inf"))
            attn = logits.softmax(-1)
            out = attn.to(v.dtype) @ v
            weights = attn.mean(1)
        else:
            p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        return self.proj(out.transpose(1, 2).reshape(b, t, d)), weights


class MLP(nn.Sequential):
    """``Linear(D, hidden) -> GELU -> Linear(hidden, D)`` on ``(..., D)``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class DecoderLayer(nn.Module):
    """Pre-LayerNorm decoder layer: causal self-attention, cross-attention to the memory, GELU MLP.

    ``forward(x (B, T, D), memory (B, N, D))`` -> ``(B, T, D)`` and the cross-attention ``(B, T, N)``
    when ``return_weights``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.drop(self.self_attn(self.norm1(x), causal=True)[0])
        y, weights = self.cross_attn(self.norm2(x), memory, return_weights=return_weights)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.norm3(x))), weights


class EncoderLayer(nn.Module):
    """Pre-LayerNorm ViT encoder layer on ``(B, N, D)``: self-attention and GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))[0]
        return x + self.mlp(self.norm2(x))


class BackboneEncoder(nn.Module):
    """Features of layer ``layer`` of a detection model, as tokens: ``(B, 3, H, W)`` -> ``(B, h*w, D)``.

    The detection model is built from ``cfg`` (a YAML name, path or dict) or loaded from the detection
    checkpoint ``weights``; only its layers ``0..layer`` are kept. The feature map ``(B, C, h, w)`` is
    flattened to ``(B, h*w, C)``, projected to ``D``, layer-normalised, and given 2-D sine positions.
    ``freeze`` keeps the backbone's weights and BatchNorm statistics fixed (it stays in eval mode).
    """

    def __init__(
        self,
        dim: int,
        cfg: str | dict = "yolov5n.yaml",
        layer: int = 6,
        freeze: bool = False,
        weights: str | None = None,
    ):
        super().__init__()
        from yolotr.models.detection import DetectionModel

        if weights:
            from yolotr.models.loading import load_model

            det = load_model(weights)
            LOGGER.info("caption encoder: backbone layers 0-%d from %s", layer, weights)
        else:
            det = DetectionModel(cfg)
        n_layers = len(det.model)
        if not 0 <= layer < n_layers - 1:
            raise ConfigError(
                f"encoder layer {layer} out of range: the model has layers 0-{n_layers - 2} before its head"
            )
        self.layers = det.model[: layer + 1]
        self.save = set(det.save)
        self.freeze = freeze
        if freeze:
            self.layers.requires_grad_(False)
        with torch.no_grad():
            was_training = self.layers.training
            probe = self._features(torch.zeros(1, 3, 64, 64).to(next(det.parameters())))
            self.layers.train(was_training)
        self.channels, self.stride = probe.shape[1], 64 // probe.shape[-1]
        self.proj = nn.Linear(self.channels, dim)
        self.norm = nn.LayerNorm(dim)
        self.dim = dim
        self.config = {"type": "backbone", "cfg": copy.deepcopy(det.yaml), "layer": layer, "freeze": freeze}

    def train(self, mode: bool = True) -> BackboneEncoder:
        super().train(mode)
        if self.freeze:
            self.layers.eval()
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor | None] = []
        for m in self.layers:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, 3, H, W)`` -> memory ``(B, h*w, D)`` and the grid ``(h, w)``."""
        if self.freeze:
            with torch.no_grad():
                feats = self._features(images)
        else:
            feats = self._features(images)
        b, c, h, w = feats.shape
        tokens = self.norm(self.proj(feats.flatten(2).transpose(1, 2)))
        pos = sine_positions_2d(h, w, self.dim).to(tokens)
        return tokens + pos, (h, w)


class PatchEncoder(nn.Module):
    """ViT-style encoder: ``patch x patch`` patches -> linear embedding + 2-D sine positions -> ``depth``
    pre-LN self-attention layers. ``(B, 3, H, W)`` -> ``(B, (H/patch)*(W/patch), D)``."""

    def __init__(self, dim: int, patch: int = 16, depth: int = 2, heads: int = 4):
        super().__init__()
        self.dim, self.stride = dim, patch
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList(EncoderLayer(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.config = {"type": "patch", "patch": patch, "depth": depth}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, 3, H, W)`` -> memory ``(B, h*w, D)`` and the grid ``(h, w)``."""
        x = self.embed(images)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + sine_positions_2d(h, w, d).to(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), (h, w)


def build_encoder(config: dict, dim: int, heads: int) -> nn.Module:
    """An encoder from its config: ``{"type": "backbone", "cfg", "layer", "freeze", "weights"}`` or
    ``{"type": "patch", "patch", "depth"}``."""
    kind = config.get("type", "backbone")
    if kind == "backbone":
        return BackboneEncoder(
            dim, config.get("cfg", "yolov5n.yaml"), int(config.get("layer", 6)), bool(config.get("freeze", False)),
            config.get("weights"),
        )  # fmt: skip
    if kind == "patch":
        return PatchEncoder(dim, int(config.get("patch", 16)), int(config.get("depth", 2)), heads)
    raise ConfigError(f"unknown caption encoder type {kind!r}; use 'backbone' or 'patch'")


class CaptioningModel(nn.Module):
    """Image captioner: visual encoder -> memory ``(B, N, D)``; Transformer decoder -> next-word logits.

    Args:
        vocab_size: ``V``, including the four special tokens.
        encoder: encoder config (see :func:`build_encoder`).
        dim: model width ``D``. layers: decoder layers. heads: attention heads. mlp_ratio: MLP width / D.
        max_len: longest token sequence, ``<start>`` and ``<end>`` included.
        positions: ``"sine"`` or ``"learned"`` decoder positions.
        dropout: dropout on embeddings and residual branches.
        grad_checkpointing: recompute decoder layers in backward to save memory (training only).

    Input and output embeddings are tied: the input is ``E[token] * sqrt(D)`` and the logits are
    ``LayerNorm(x) / sqrt(D) @ E^T + b``, so neither side starts out saturated.
    """

    def __init__(
        self,
        vocab_size: int,
        encoder: dict | None = None,
        dim: int = 256,
        layers: int = 3,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        max_len: int = 32,
        positions: str = "sine",
        dropout: float = 0.1,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if positions not in ("sine", "learned"):
            raise ConfigError(f"positions must be 'sine' or 'learned', got {positions!r}")
        self.encoder = build_encoder(dict(encoder or {"type": "backbone"}), dim, heads)
        self.embed = nn.Embedding(vocab_size, dim)
        if positions == "learned":
            self.pos = nn.Parameter(torch.zeros(max_len, dim))
        else:
            self.register_buffer("pos", sine_positions_1d(max_len, dim), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderLayer(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.grad_checkpointing = grad_checkpointing
        self._args = dict(
            vocab_size=vocab_size, dim=dim, layers=layers, heads=heads, mlp_ratio=mlp_ratio, max_len=max_len,
            positions=positions, dropout=dropout,
        )  # fmt: skip
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding ``N(0, D^-1/2)`` (scaled by ``sqrt(D)`` at the input), learned positions ``N(0, 0.02)``,
        decoder linears truncated-normal 0.02 with zero bias."""
        d = self.embed.embedding_dim
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        if isinstance(self.pos, nn.Parameter):
            nn.init.normal_(self.pos, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def config(self) -> dict:
        """Everything :meth:`from_config` needs, as plain types (the encoder's weights come from the state dict)."""
        return {**self._args, "encoder": copy.deepcopy(self.encoder.config)}

    @classmethod
    def from_config(cls, config: dict) -> CaptioningModel:
        return cls(**config)

    @property
    def max_len(self) -> int:
        return self.pos.shape[0]

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, 3, H, W)`` -> memory ``(B, N, D)`` and the encoder grid ``(h, w)`` with ``h * w = N``."""
        return self.encoder(images)

    def decode(
        self, tokens: torch.Tensor, memory: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens ``(B, T)`` and memory ``(B, N, D)`` -> logits ``(B, T, V)`` and, with ``return_weights``,
        the last layer's head-averaged cross-attention ``(B, T, N)`` float32."""
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(f"token sequence of length {t} exceeds max_len={self.max_len}")
        d = self.embed.embedding_dim
        x = self.drop(self.embed(tokens) * math.sqrt(d) + self.pos[:t].to(memory.dtype))
        weights = None
        for i, blk in enumerate(self.blocks):
            want = return_weights and i == len(self.blocks) - 1
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x, weights = checkpoint(blk, x, memory, want, use_reentrant=False)
            else:
                x, weights = blk(x, memory, want)
        logits = F.linear(self.norm(x) * d**-0.5, self.embed.weight, self.bias)
        return logits, weights

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: images ``(B, 3, H, W)``, input tokens ``(B, T)`` -> logits ``(B, T, V)``."""
        memory, _ = self.encode(images)
        return self.decode(tokens, memory)[0]

    @staticmethod
    def _penalize(logits: torch.Tensor, seqs: torch.Tensor, penalty: float) -> torch.Tensor:
        """CTRL repetition penalty: logits ``(M, V)`` of words already in ``seqs`` ``(M, t)`` are divided by
        ``penalty`` when positive and multiplied when negative (special tokens exempt)."""
        if penalty == 1.0:
            return logits
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, seqs, True)
        seen[:, : len(Vocabulary.SPECIALS)] = False
        return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)

    @staticmethod
    def _allowed(logits: torch.Tensor, first: bool) -> torch.Tensor:
        """Logits ``(M, V)`` with the tokens a caption cannot continue with at ``-inf``: ``<pad>`` and ``<start>``,
        and ``<end>`` as the first token (a caption has a word; an empty one outscored every caption under
        length normalization)."""
        banned = [PAD, START, END] if first and logits.shape[-1] > len(Vocabulary.SPECIALS) else [PAD, START]
        return logits.index_fill(1, torch.tensor(banned, device=logits.device), float("-inf"))

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_len: int | None = None, repetition_penalty: float = 1.0) -> torch.Tensor:
        """Greedy decoding: ``(B, 3, H, W)`` -> ids ``(B, L)`` int64 without ``<start>``; ``<end>`` then ``<pad>``
        after a caption ends. Stops when every caption has ended or at ``max_len`` tokens (with ``<start>``)."""
        memory, _ = self.encode(images)
        max_len = min(max_len or self.max_len, self.max_len)
        seqs = torch.full((memory.shape[0], 1), START, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for step in range(max_len - 1):
            logits = self._penalize(self.decode(seqs, memory)[0][:, -1].float(), seqs, repetition_penalty)
            nxt = self._allowed(logits, step == 0).argmax(-1).masked_fill(done, PAD)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            done |= nxt == END
            if done.all():
                break
        return seqs[:, 1:]

    def check_beam(self, beam_size: int, name: str = "beam") -> None:
        """Refuse a beam wider than the vocabulary's words (it kept beams of score -inf, or ran out of memory)."""
        words = self.embed.num_embeddings - len(Vocabulary.SPECIALS)
        if beam_size > max(words, 1):
            raise ConfigError(f"{name} {beam_size}: wider than the {words} words of this model's vocabulary")

    @torch.no_grad()
    def beam_search(
        self,
        images: torch.Tensor,
        beam_size: int = 3,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search batched over images and beams (one decoder call per step for all ``B * K`` beams).

        Beams are ranked by summed log-probability while searching; finished beams keep their score and
        emit ``<pad>``. A caption has at least one word (no ``<end>`` first), and never ``<pad>`` or ``<start>``.
        The search stops at ``max_len`` or once every beam has ended: under length normalization an unfinished
        beam may still overtake a finished one that ranks above it now. The best beam per image is then chosen by
        ``score / length ** length_penalty`` (length counts the words and ``<end>``) among the beams that ended, or
        among all when none did (``max_len`` reached). A beam wider than the words of the vocabulary is refused.

        Returns:
            ids ``(B, L)`` int64 as :meth:`greedy`, and the normalized scores ``(B,)`` float32.
        """
        self.check_beam(beam_size)
        memory, _ = self.encode(images)
        b, k = memory.shape[0], beam_size
        max_len = min(max_len or self.max_len, self.max_len)
        dev = memory.device
        memory = memory.repeat_interleave(k, 0)
        seqs = torch.full((b * k, 1), START, dtype=torch.long, device=dev)
        scores = torch.full((b, k), float("-inf"), device=dev)
        scores[:, 0] = 0.0
        done = torch.zeros(b * k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(b * k, device=dev)
        base = (torch.arange(b, device=dev) * k)[:, None]
        for step in range(max_len - 1):
            logits = self._penalize(self.decode(seqs, memory)[0][:, -1].float(), seqs, repetition_penalty)
            logp = self._allowed(logits, step == 0).log_softmax(-1)
            ended = torch.full_like(logp, float("-inf"))
            ended[:, PAD] = 0.0
            logp = torch.where(done[:, None], ended, logp)
            v = logp.shape[-1]
            cand = (scores.view(-1, 1) + logp).view(b, k * v)
            scores, idx = cand.topk(k, dim=-1)
            src = (base + idx // v).view(-1)
            tok = (idx % v).view(-1)
            seqs = torch.cat([seqs[src], tok[:, None]], 1)
            lengths = lengths[src] + (~done[src]).float()
            done = done[src] | (tok == END)
            if done.all():
                break
        normalized = scores / lengths.view(b, k).clamp(min=1) ** length_penalty
        finished = done.view(b, k) & scores.isfinite()
        ranked = torch.where(finished | ~finished.any(1, keepdim=True), normalized, float("-inf"))
        best = ranked.argmax(-1)  # a finished beam when the image has one: an unfinished one stops mid-sentence
        pick = (base.squeeze(1) + best).view(-1)
        return seqs[pick, 1:], normalized.gather(1, best[:, None]).squeeze(1)

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        beam_size: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
    ) -> torch.Tensor:
        """Greedy when ``beam_size == 1``, else :meth:`beam_search`: ids ``(B, L)`` int64."""
        if beam_size <= 1:
            return self.greedy(images, max_len, repetition_penalty)
        return self.beam_search(images, beam_size, max_len, length_penalty, repetition_penalty)[0]

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Cross-attention of the last decoder layer while generating ``ids`` ``(B, L)`` (as returned by
        :meth:`greedy`): ``(B, L, h, w)`` float32, map ``j`` being the attention when predicting word ``j``."""
        memory, (h, w) = self.encode(images)
        tokens = torch.cat([torch.full_like(ids[:, :1], START), ids], 1)[:, : self.max_len]
        _, weights = self.decode(tokens, memory, return_weights=True)
        return weights[:, : ids.shape[1]].reshape(ids.shape[0], -1, h, w), (h, w)


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy over non-``<pad>`` targets: logits ``(B, T, V)``, targets ``(B, T)`` int64.

    Computed in float32 (logits may be bf16/fp16 under autocast); ``<pad>`` targets add nothing to the
    loss or its gradient, label smoothing included.
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD,
        label_smoothing=label_smoothing,
    )  # fmt: skip


def ids_to_captions(ids: torch.Tensor, vocab: Vocabulary) -> list[str]:
    """``(B, L)`` generated ids -> ``B`` caption strings."""
    return [vocab.decode(row.tolist()) for row in ids]
