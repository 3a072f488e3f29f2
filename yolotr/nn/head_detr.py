"""RT-DETR's head (the package's ``RTDETRDecoder``): input projections, the encoder output head with top-k
query selection, the deformable decoder, and the denoising queries in training.

1. Each input level ``(B, ch_l, H_l, W_l)`` is projected to ``hd`` channels (1x1 conv + BatchNorm) and the
   levels are flattened into one token sequence ``(B, sum(H_l W_l), hd)``.
2. Every token gets an anchor box (its cell's centre, side ``0.05 * 2^l``; tokens whose anchor reaches within
   1 % of the border are masked out). The encoder head (``enc_output``, ``enc_score_head``,
   ``enc_bbox_head``) scores and refines every token; the ``nq`` tokens with the highest best-class logit
   become the queries: their features the content, their refined anchors the reference boxes.
3. The decoder (:class:`~yolotr.nn.detr.DeformableTransformerDecoder`) refines the boxes in ``ndl`` layers.

The output needs no NMS (``end2end`` True): in eval the last layer's ``(query, class)`` pairs with the highest
scores. Attribute names are the ``ultralytics`` package's (8.4), so its checkpoints load by name. Differences:
the eval output is ``(B, k, 6)`` ``x1, y1, x2, y2`` in input pixels (the package's is normalized ``cxcywh``;
the predictor of the package converts it, ours needs nothing model-specific), the training targets come as
our ``(N, 6)`` rows, and the anchor table is cached per shape, device and dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from yolotr.errors import ConfigError
from yolotr.nn.conv import contiguous_grad_at_batch_one
from yolotr.nn.denoising import denoising_group
from yolotr.nn.detr import MLP, DeformableTransformerDecoder, DeformableTransformerDecoderLayer
from yolotr.ops.boxes import xywh2xyxy


class RTDETRDecoder(nn.Module):
    """RT-DETR head: ``nl`` feature maps -> boxes and classes, no NMS.

    Input: ``x`` a list of ``nl`` maps ``(B, ch[l], H_l, W_l)`` (strides 8, 16, 32 in the shipped YAMLs);
    ``targets`` ``(N, 6)`` ``[image, class, cx, cy, w, h]`` (normalized) in training for the denoising
    queries (none without them).

    Training output: ``(dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta)``: every decoder layer's
    boxes ``(ndl, B, D + nq, 4)`` normalized ``cxcywh`` and logits ``(ndl, B, D + nq, nc)`` (the ``D``
    denoising queries first), the selected encoder boxes ``(B, nq, 4)`` and logits ``(B, nq, nc)``, and the
    denoising bookkeeping (:func:`~yolotr.nn.denoising.denoising_group`) or None.
    Eval output: ``(detections, raw)``, ``raw`` as in training but for the ``eval_idx`` layer only (``ndl``
    axis of 1) and ``dn_meta`` None; ``detections`` ``(B, k, 6)`` float rows ``x1, y1, x2, y2`` (input pixels:
    normalized boxes times the first level's size times its stride), score (sigmoid), class, sorted by score;
    the best ``k = min(max_det, nq, Q * nc)`` (query, class) pairs of the ``Q = min(nq, tokens)`` queries,
    as the package (``num_queries`` rows, which its predictor and validator cut to ``max_det`` after ``conf``).
    With ``export`` True only ``detections``.

    Args: the package's: ``nc`` classes, ``ch`` input channels per level, ``hd`` hidden width, ``nq`` queries,
    ``ndp`` sampling points per head and level, ``nh`` heads, ``ndl`` decoder layers, ``d_ffn`` FFN width,
    ``dropout``, ``act`` (ReLU), ``eval_idx`` (the layer used in eval), ``nd`` denoising queries,
    ``label_noise_ratio``, ``box_noise_scale``, ``learnt_init_query`` (learned query content instead of the
    selected features).
    """

    end2end = True  # the eval output is the detections: no NMS
    export = False
    dynamic_size = False  # set by the exporter for a dynamic-size export (the query and row counts follow it)
    wants_targets = True  # training: DetectionModel.forward passes the targets (the denoising queries)
    # images are resized to the imgsz square without keeping their aspect ratio, in training, validation and
    # prediction, as the package does for RT-DETR (RTDETRDataset.load_image, its predictor's scale_fill): the
    # anchors, AIFI's position embedding and the query selection depend on the frame, and weights trained on
    # stretched images read letterbox padding as image (engine/head_mode.py input_fit)
    input_fit = "stretch"
    # Training settings of this head where yolotr's YOLO defaults (cfg/default.yaml) differ from the ``ultralytics``
    # package's recipe for it (its RTDETRTrainer adds nothing to the package's default settings): ``optimizer``
    # auto (AdamW at lr0 0.002 * 5 / (4 + nc), momentum 0.9, bias warmup from 0; MuSGD over 10,000 nominal-batch
    # iterations), a linear lr decay, warmup without yolotr's 100-iteration floor, and no lr scale on the attention
    # layers. The trainer applies them to the settings the user did not give (engine/optim.py).
    train_defaults = {"optimizer": "auto", "cos_lr": False, "warmup_min_iters": 0, "lr_transformer_scale": 1.0}

    def __init__(
        self,
        nc: int = 80,
        ch: list[int] | tuple[int, ...] = (512, 1024, 2048),
        hd: int = 256,
        nq: int = 300,
        ndp: int = 4,
        nh: int = 8,
        ndl: int = 6,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        act: nn.Module | None = None,
        eval_idx: int = -1,
        nd: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        learnt_init_query: bool = False,
    ):
        super().__init__()
        if not ch:
            raise ValueError("RTDETRDecoder needs at least one input level")
        act = nn.ReLU() if act is None else act
        self.hidden_dim, self.nhead, self.nl, self.nc = hd, nh, len(ch), nc
        self.num_queries, self.num_decoder_layers = nq, ndl
        self.max_det, self.agnostic = nq, False
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)  # measured by DetectionModel
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(c, hd, 1, bias=False), nn.BatchNorm2d(hd)) for c in ch)
        layer = DeformableTransformerDecoderLayer(hd, nh, d_ffn, dropout, act, self.nl, ndp)
        self.decoder = DeformableTransformerDecoder(hd, layer, ndl, eval_idx)
        self.denoising_class_embed = nn.Embedding(nc, hd)
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = nd, label_noise_ratio, box_noise_scale
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(nq, hd)
        self.query_pos_head = MLP(4, 2 * hd, hd, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hd, hd), nn.LayerNorm(hd))
        self.enc_score_head = nn.Linear(hd, nc)
        self.enc_bbox_head = MLP(hd, hd, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hd, nc) for _ in range(ndl))
        self.dec_bbox_head = nn.ModuleList(MLP(hd, hd, 4, num_layers=3) for _ in range(ndl))
        self._anchor_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The package's init: class biases at prior 0.01 (scaled by ``nc / 80``), zero box heads (so the first
        boxes are the anchors), Xavier for the encoder output, the query position MLP and the projections."""
        bias_cls = -math.log((1 - 0.01) / 0.01) / 80 * self.nc
        nn.init.constant_(self.enc_score_head.bias, bias_cls)
        for head in (self.enc_bbox_head, *self.dec_bbox_head):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for cls in self.dec_score_head:
            nn.init.constant_(cls.bias, bias_cls)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        for linear in self.query_pos_head.layers:
            nn.init.xavier_uniform_(linear.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)

    def set_end2end(self, end2end: bool = True, max_det: int | None = None, agnostic: bool | None = None) -> None:
        """The output is always NMS-free (``end2end`` False is a ``ConfigError``); ``max_det`` sets its rows,
        ``agnostic`` keeps only each query's best class."""
        if not end2end:
            raise ConfigError("end2end=False: RT-DETR's head has no branch for NMS; its output is NMS-free")
        if max_det is not None:
            self.max_det = int(max_det)
        if agnostic is not None:
            self.agnostic = bool(agnostic)

    def reset_grids(self) -> None:
        """Forget cached anchors (after the device or dtype changes)."""
        self._anchor_cache.clear()

    def anchors(self, shapes: list[tuple[int, int]], like: torch.Tensor, grid_size: float = 0.05, eps: float = 1e-2):
        """Anchor boxes in logit space ``(1, sum(H_l W_l), 4)`` in ``like``'s dtype (``inf`` where invalid) and
        the valid mask ``(1, sum(H_l W_l), 1)`` (bool): cell centres ``((x + 0.5) / W_l, (y + 0.5) / H_l)``, side
        ``grid_size * 2^l``; an anchor with a coordinate within ``eps`` of 0 or 1 is invalid.

        Unlike the package, which builds them in ``like``'s dtype, they are built in float32 and then cast: in
        bf16 the cell centres next to the border round onto ``1 - eps`` and every edge anchor became invalid
        (316 of 2100 at 320 px), so a bf16 model chose its queries from fewer tokens than its float32 self."""
        key = (tuple(map(tuple, shapes)), like.device, like.dtype)
        if key not in self._anchor_cache or torch.jit.is_tracing():
            boxes = []
            for level, (h, w) in enumerate(shapes):
                ys, xs = torch.meshgrid(
                    torch.arange(h, dtype=torch.float32, device=like.device),
                    torch.arange(w, dtype=torch.float32, device=like.device),
                    indexing="ij",
                )
                centres = torch.stack(((xs + 0.5) / w, (ys + 0.5) / h), -1)  # (h, w, 2)
                sides = torch.full_like(centres, grid_size * 2.0**level)
                boxes.append(torch.cat((centres, sides), -1).view(1, h * w, 4))
            boxes = torch.cat(boxes, 1)
            valid = ((boxes > eps) & (boxes < 1 - eps)).all(-1, keepdim=True)
            logits = torch.log(boxes / (1 - boxes)).masked_fill(~valid, float("inf")).to(like.dtype)
            if torch.jit.is_tracing():
                return logits, valid
            self._anchor_cache[key] = (logits, valid)
        return self._anchor_cache[key]

    def forward(self, x: list[torch.Tensor], targets: torch.Tensor | None = None):
        if not isinstance(x, list | tuple) or len(x) != self.nl:
            got = len(x) if isinstance(x, list | tuple) else f"a {type(x).__name__}"
            raise ValueError(f"RTDETRDecoder was built for {self.nl} feature levels, got {got}")
        feats, shapes = self._encoder_input(x)
        k = _at_most(self.num_queries, feats, 1, self.dynamic_size)
        dn = None
        if self.training and targets is not None:
            dn = self.denoising_queries(targets, feats.shape[0], k)
        dn_embed, dn_bbox, attn_mask, dn_meta = dn if dn is not None else (None, None, None, None)
        embed, refer, enc_bboxes, enc_scores = self._decoder_input(feats, shapes, k, dn_embed, dn_bbox)
        dec_bboxes, dec_scores = self.decoder(
            embed, refer, feats, shapes, self.dec_bbox_head, self.dec_score_head, self.query_pos_head, attn_mask
        )
        if self.training and dn_meta is None:  # keep the denoising embedding in the graph (DDP: no unused params)
            dec_bboxes = dec_bboxes + 0 * self.denoising_class_embed.weight.sum()
        raw = (dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta)
        if self.training:
            return raw
        detections = self.detections(dec_bboxes[-1], dec_scores[-1], shapes[0])
        return detections if self.export else (detections, raw)

    def denoising_queries(self, targets: torch.Tensor, batch_size: int, num_queries: int):
        """:func:`~yolotr.nn.denoising.denoising_group` with this head's settings (None: no denoising)."""
        return denoising_group(
            targets,
            batch_size,
            self.nc,
            num_queries,
            self.denoising_class_embed.weight,
            self.num_denoising,
            self.label_noise_ratio,
            self.box_noise_scale,
        )

    def _encoder_input(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Projected levels flattened and concatenated: ``(B, sum(H_l W_l), hd)`` and ``[(H_l, W_l)]``."""
        maps = [contiguous_grad_at_batch_one(proj(level)) for proj, level in zip(self.input_proj, x)]
        shapes = [(m.shape[2], m.shape[3]) for m in maps]  # no int(): a traced export keeps them dynamic
        return torch.cat([m.flatten(2).permute(0, 2, 1) for m in maps], 1), shapes

    def _decoder_input(self, feats, shapes, k, dn_embed=None, dn_bbox=None):
        """Top-``k`` query selection -> decoder content ``(B, D + k, hd)``, reference logits ``(B, D + k, 4)``,
        encoder boxes ``(B, k, 4)`` (sigmoid) and logits ``(B, k, nc)`` of the selected tokens."""
        b = feats.shape[0]
        anchors, valid = self.anchors(shapes, feats)
        features = self.enc_output(valid * feats)  # (B, N, hd)
        scores = self.enc_score_head(features)  # (B, N, nc)
        index = scores.max(-1).values.topk(k, dim=1).indices  # (B, k)
        top_features = features.gather(1, index[..., None].expand(-1, -1, features.shape[-1]))
        top_anchors = anchors.expand(b, -1, -1).gather(1, index[..., None].expand(-1, -1, 4))
        refer = self.enc_bbox_head(top_features) + top_anchors
        enc_bboxes = refer.sigmoid()
        enc_scores = scores.gather(1, index[..., None].expand(-1, -1, scores.shape[-1]))
        if dn_bbox is not None:
            refer = torch.cat((dn_bbox, refer), 1)
        embed = self.tgt_embed.weight[:k].unsqueeze(0).repeat(b, 1, 1) if self.learnt_init_query else top_features
        if self.training:
            refer = refer.detach()
            if not self.learnt_init_query:
                embed = embed.detach()
        if dn_embed is not None:
            embed = torch.cat((dn_embed, embed), 1)
        return embed, refer, enc_bboxes, enc_scores

    def detections(self, boxes: torch.Tensor, logits: torch.Tensor, first_shape: tuple[int, int]) -> torch.Tensor:
        """``(B, Q, 4)`` normalized ``cxcywh`` and ``(B, Q, nc)`` logits -> ``(B, k, 6)`` rows (see the class)."""
        nc = logits.shape[-1]
        scores = logits.sigmoid()
        rows = min(self.max_det, self.num_queries)  # the package's: a query's worth of rows at most
        if self.agnostic:
            best, labels = scores.max(-1)
            top, query = best.topk(_at_most(rows, best, 1, self.dynamic_size), dim=1)
            labels = labels.gather(1, query)
        else:
            flat_scores = scores.flatten(1)
            top, flat = flat_scores.topk(_at_most(rows, flat_scores, 1, self.dynamic_size), dim=1)
            query, labels = torch.div(flat, nc, rounding_mode="floor"), flat % nc
        picked = xywh2xyxy(boxes.gather(1, query[..., None].expand(-1, -1, 4)))
        # normalized -> input pixels (the padded frame of the first level), once DetectionModel has measured the
        # stride (0 before). No host read and no host-to-device copy, so a CUDA graph can capture the head:
        # the stride stays a device tensor, the sides multiply as Python numbers (0-dim tensors in a traced
        # export, which keeps them dynamic). The stride is a power of two, so this rounds as one product would.
        h, w = (side.to(picked.dtype) if isinstance(side, torch.Tensor) else side for side in first_shape)
        stride = self.stride[0].to(picked.dtype)
        pixels = torch.stack((picked[..., 0] * w, picked[..., 1] * h, picked[..., 2] * w, picked[..., 3] * h), -1)
        picked = torch.where(stride > 0, pixels * stride, picked)
        return torch.cat((picked, top[..., None], labels[..., None].to(top.dtype)), -1)


def _at_most(cap: int, like: torch.Tensor, dim: int, dynamic: bool) -> int | torch.Tensor:
    """``min(cap, like.shape[dim])``; while tracing a ``dynamic`` (dynamic-size) export a 0-dim tensor, so that
    the file takes fewer than ``cap`` where its input has fewer (a Python ``min`` froze the traced size's
    choice: ``TopK`` then asked for 100 of 84 tokens at 64 px). A fixed-size file keeps a constant: OpenCV's
    DNN misreads a computed ``k``."""
    if dynamic and torch.jit.is_tracing():
        return torch._shape_as_tensor(like)[dim].clamp(max=cap)
    return min(cap, like.shape[dim])
