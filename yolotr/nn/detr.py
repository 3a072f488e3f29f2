"""RT-DETR's Transformer parts: AIFI (one encoder layer on the top level, with a 2-D sin-cos position
embedding), the box MLP, and the deformable decoder (self-attention, multi-scale deformable cross-attention,
FFN; boxes refined layer by layer).

Attribute names are the ``ultralytics`` package's (8.4: ``TransformerEncoderLayer``/``AIFI``, ``MLP``,
``DeformableTransformerDecoderLayer``/``DeformableTransformerDecoder``), so its checkpoints load by name. It
differs from the package in the decoder's interface: the decoder layer takes reference boxes ``(B, Q, 4)``
(no extra level axis) and its self-attention is batch-first (same parameters, same arithmetic).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from yolotr.nn.deform_attn import MSDeformAttn


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to ``[0, 1]`` and both terms to at least ``eps``."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def sincos_position_embedding(w: int, h: int, dim: int, temperature: float = 10000.0, like=None) -> torch.Tensor:
    """2-D sine-cosine position embedding ``(1, h * w, dim)`` float32 for row-major tokens of an ``h x w`` map.

    Per token at row ``y``, column ``x``, with ``omega_i = temperature ** (-i / (dim / 4))``, ``i < dim / 4``:
    ``[sin(y omega), cos(y omega), sin(x omega), cos(x omega)]`` (the package's order since 8.4: the row
    encoding first). ``like``: a tensor whose device the table is built on.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos embedding needs a channel count divisible by 4, got {dim}")
    device = like.device if like is not None else None
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    out_h = rows.flatten()[:, None] @ omega[None]  # (h * w, dim / 4)
    out_w = cols.flatten()[:, None] @ omega[None]
    return torch.cat((out_h.sin(), out_h.cos(), out_w.sin(), out_w.cos()), 1)[None]


class TransformerEncoderLayer(nn.Module):
    """One Transformer encoder layer on tokens ``(B, N, c1) -> (B, N, c1)``: multi-head self-attention (the
    position embedding added to queries and keys only), then a ``c1 -> cm -> c1`` FFN; post-norm by default.

    Args:
        c1: channels; cm: FFN hidden width; num_heads: heads; dropout: dropout probability;
        act: FFN activation (GELU by default); normalize_before: pre-norm instead of post-norm.
    """

    def __init__(
        self,
        c1: int,
        cm: int = 2048,
        num_heads: int = 8,
        dropout: float = 0.0,
        act: nn.Module | None = None,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.ma = nn.MultiheadAttention(c1, num_heads, dropout=dropout, batch_first=True)
        self.fc1 = nn.Linear(c1, cm)
        self.fc2 = nn.Linear(cm, c1)
        self.norm1 = nn.LayerNorm(c1)
        self.norm2 = nn.LayerNorm(c1)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.act = nn.GELU() if act is None else act
        self.normalize_before = normalize_before

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None, src_mask=None) -> torch.Tensor:
        """``src`` ``(B, N, c1)``, ``pos`` ``(1 or B, N, c1)`` or None, ``src_mask`` an attention mask or None."""
        if self.normalize_before:
            x = self.norm1(src)
            qk = x if pos is None else x + pos
            src = src + self.dropout1(self.ma(qk, qk, value=x, attn_mask=src_mask, need_weights=False)[0])
            return src + self.dropout2(self._ffn(self.norm2(src)))
        qk = src if pos is None else src + pos
        src = self.norm1(src + self.dropout1(self.ma(qk, qk, value=src, attn_mask=src_mask, need_weights=False)[0]))
        return self.norm2(src + self.dropout2(self._ffn(src)))


class AIFI(TransformerEncoderLayer):
    """Attention-based intra-scale feature interaction: :class:`TransformerEncoderLayer` over the tokens of one
    map with its 2-D sin-cos position embedding (rebuilt for every size). ``(B, c1, H, W) -> (B, c1, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        pos = sincos_position_embedding(w, h, c, like=x).to(x.dtype)
        y = super().forward(x.flatten(2).permute(0, 2, 1), pos=pos)  # (B, H*W, C)
        return y.permute(0, 2, 1).reshape(-1, c, h, w).contiguous()


class MLP(nn.Module):
    """``num_layers`` linear layers with ``act`` between them: ``(..., input_dim) -> (..., output_dim)``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act=nn.ReLU, sigmoid=False):
        super().__init__()
        self.num_layers = num_layers
        widths = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip([input_dim, *widths], [*widths, output_dim]))
        self.sigmoid = sigmoid
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == self.num_layers - 1 else self.act(layer(x))
        return x.sigmoid() if self.sigmoid else x


class DeformableTransformerDecoderLayer(nn.Module):
    """One decoder layer: self-attention among the queries, deformable cross-attention into the image
    features around each query's reference box, FFN; each followed by residual and LayerNorm.

    Args:
        d_model: channels; n_heads: heads (both attentions); d_ffn: FFN width; dropout: probability;
        act: FFN activation (ReLU by default); n_levels, n_points: of :class:`MSDeformAttn`.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_heads: int = 8,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        act: nn.Module | None = None,
        n_levels: int = 4,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.act = nn.ReLU() if act is None else act
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        embed: torch.Tensor,
        reference: torch.Tensor,
        feats: torch.Tensor,
        shapes: list[tuple[int, int]],
        padding_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``embed`` ``(B, Q, d)``, ``reference`` ``(B, Q, 4)`` normalized ``cxcywh``, ``feats`` ``(B, sum(H_l *
        W_l), d)``, ``shapes`` the levels' ``(H_l, W_l)``, ``attn_mask`` ``(Q, Q)`` bool (True: may not attend)
        or None, ``query_pos`` ``(B, Q, d)`` -> ``(B, Q, d)``."""
        qk = embed if query_pos is None else embed + query_pos
        attended = self.self_attn(qk, qk, embed, attn_mask=attn_mask, need_weights=False)[0]
        embed = self.norm1(embed + self.dropout1(attended))
        query = embed if query_pos is None else embed + query_pos
        embed = self.norm2(embed + self.dropout2(self.cross_attn(query, reference, feats, shapes, padding_mask)))
        ffn = self.linear2(self.dropout3(self.act(self.linear1(embed))))
        return self.norm3(embed + self.dropout4(ffn))


class DeformableTransformerDecoder(nn.Module):
    """``num_layers`` copies of a decoder layer; every layer refines the boxes of the previous one.

    Layer ``i`` predicts a delta in logit space: ``box_i = sigmoid(bbox_head[i](out_i) + logit(box_{i-1}))``,
    ``box_{-1}`` the encoder's reference boxes. The next layer samples around ``box_i`` detached (training);
    the box loss of layer ``i`` still reaches layer ``i - 1`` through ``box_{i-1}``. Eval computes up to layer
    ``eval_idx`` only and returns that one.
    """

    def __init__(self, hidden_dim: int, decoder_layer: nn.Module, num_layers: int, eval_idx: int = -1):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

    def forward(
        self,
        embed: torch.Tensor,
        refer_logits: torch.Tensor,
        feats: torch.Tensor,
        shapes: list[tuple[int, int]],
        bbox_head: nn.ModuleList,
        score_head: nn.ModuleList,
        pos_mlp: nn.Module,
        attn_mask: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``embed`` ``(B, Q, d)``, ``refer_logits`` ``(B, Q, 4)`` reference boxes in logit space ->
        boxes ``(L, B, Q, 4)`` normalized ``cxcywh`` and class logits ``(L, B, Q, nc)``; ``L`` is
        ``num_layers`` in training, 1 (layer ``eval_idx``) in eval."""
        boxes, logits = [], []
        reference = refer_logits.sigmoid()
        previous = None  # the previous layer's boxes with their gradient (training)
        for i, layer in enumerate(self.layers):
            embed = layer(embed, reference, feats, shapes, padding_mask, attn_mask, pos_mlp(reference))
            delta = bbox_head[i](embed)
            refined = torch.sigmoid(delta + inverse_sigmoid(reference))
            if self.training:
                logits.append(score_head[i](embed))
                boxes.append(refined if previous is None else torch.sigmoid(delta + inverse_sigmoid(previous)))
            elif i == self.eval_idx:
                logits.append(score_head[i](embed))
                boxes.append(refined)
                break
            previous = refined
            reference = refined.detach() if self.training else refined
        return torch.stack(boxes), torch.stack(logits)
