"""End-to-end (NMS-free) detection heads: YOLO26's ``Detect`` with ``end2end: True`` and YOLOv10's
``v10Detect``.

Beside the anchor-free head's one-to-many branch (``cv2`` / ``cv3``, trained with task-aligned top-10
targets) the head carries a one-to-one branch (``one2one_cv2`` / ``one2one_cv3``, same layout, trained
with one target anchor per object) that reads the neck's features *detached*, so its loss does not
reach the backbone. At inference the one-to-one branch alone gives the detections: its boxes decoded to
``xyxy`` pixels, then a top-k, no NMS.

The head declares this (``end2end``), and the predictor, validator and exporter skip NMS because the head
says so. ``end2end = False`` (a setting; :meth:`E2EDetect.set_end2end`) selects the one-to-many branch and
the anchor-free head's output, which then needs NMS like YOLOv8's. Attribute names are the
``ultralytics`` package's (8.4), so its checkpoints load by name. It differs from the package in two
ways: the package's head reads ``end2end`` False after building or loading (a property that only
``predict(nms=False)`` turns on), so its default ``predict`` still runs the one-to-many branch with NMS;
here a head built end-to-end *is* end-to-end until told otherwise. And the raw output is the training
form (``{"one2many": maps, "one2one": maps}``), not the package's dict of flattened tensors.
"""

from __future__ import annotations

import copy
import logging

import torch

from yolotr.nn.head_af import AnchorFreeDetect
from yolotr.ops.anchors import dist2bbox


class E2EDetect(AnchorFreeDetect):
    """Anchor-free head with a one-to-one branch; NMS-free output by default.

    Input: ``nl`` feature maps ``(B, ch[i], H_i, W_i)``.
    Training output: ``{"one2many": maps, "one2one": maps}``, each a list of ``(B, 4 * reg_max + nc, H_i,
    W_i)`` (box part first: ``reg_max`` 1 gives the four distances directly, in cells; more gives per-side
    distributions), the one-to-one maps computed from detached features.
    Eval output: ``(decoded, raw)`` (``raw`` as in training; with ``export = True`` only ``decoded``):

    - ``end2end`` (default): ``(B, max_det, 6)`` float rows ``x1, y1, x2, y2`` (input pixels, not
      clipped), score, class index, sorted by score: the ``max_det`` anchors of highest best-class score
      of the one-to-one branch, then the ``max_det`` highest (anchor, class) scores among them (an anchor
      can appear with several classes; with ``agnostic`` only its best). An input with fewer anchors than
      ``max_det`` gives as many real rows as anchors, as the package does, then filler rows of score -1
      (zero box, class 0) up to ``max_det``, which any ``conf >= 0`` drops; an exported graph, whose row
      count is fixed, does the same at any size;
    - otherwise the one-to-many branch decoded as :class:`~yolotr.nn.head_af.AnchorFreeDetect` does (to be
      filtered by NMS).

    Args:
        nc: classes.
        reg_max: bins per side (1: no distribution, YOLO26).
        ch: input channels of each level.
        legacy: YOLOv8's class branch instead of the depthwise one.
        max_det: rows of the end-to-end output.
    """

    def __init__(
        self, nc: int = 80, reg_max: int = 16, ch: tuple[int, ...] = (), legacy: bool = False, max_det: int = 300
    ):
        super().__init__(nc, reg_max, ch, legacy)
        self.one2one_cv2 = copy.deepcopy(self.cv2)
        self.one2one_cv3 = copy.deepcopy(self.cv3)
        self.end2end = True
        self.max_det = int(max_det)
        self.agnostic = False

    def set_end2end(self, end2end: bool = True, max_det: int | None = None, agnostic: bool | None = None) -> None:
        """Choose the output: the one-to-one top-k (``True``) or the one-to-many branch for NMS (``False``);
        optionally the number of rows and class-agnostic selection of the top-k."""
        self.end2end = bool(end2end)
        if max_det is not None:
            self.max_det = int(max_det)
        if agnostic is not None:
            self.agnostic = bool(agnostic)

    def extra_repr(self) -> str:
        # in the repr, so the ONNX backend's cache key (a hash of it and the weights) differs per output mode
        settings = {"nc": self.nc, "reg_max": self.reg_max, "end2end": self.end2end, "max_det": self.max_det}
        return ", ".join(f"{k}={v}" for k, v in settings.items()) + f", agnostic={self.agnostic}"

    def forward(self, x: list[torch.Tensor]):
        one2many = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        xd = [xi.detach() for xi in x]
        one2one = [torch.cat((self.one2one_cv2[i](xd[i]), self.one2one_cv3[i](xd[i])), 1) for i in range(self.nl)]
        raw = {"one2many": one2many, "one2one": one2one}
        if self.training:
            return raw
        decoded = self.topk(self.decode_xyxy(one2one)) if self.end2end else self.decode(one2many)
        return decoded if self.export else (decoded, raw)

    def decode_xyxy(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Training-form maps -> ``(B, anchors, 4 + nc)``: boxes ``xyxy`` in input pixels, sigmoid scores."""
        b = raw[0].shape[0]
        flat = torch.cat([r.view(b, self.no, -1) for r in raw], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        points, strides = self._anchors(raw)
        boxes = dist2bbox(self.dfl(box), points.unsqueeze(0), xywh=False, dim=1) * strides
        return torch.cat((boxes, cls.sigmoid()), 1).transpose(1, 2)

    def topk(self, preds: torch.Tensor) -> torch.Tensor:
        """``(B, A, 4 + nc)`` decoded rows -> ``(B, k, 6)`` ``[x1, y1, x2, y2, score, class]`` (see the class)."""
        b, a, _ = preds.shape
        k = self.max_det
        filled = a < k or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if filled:
            # fewer anchors than rows (a small input; or any size in an exported graph): filler rows, score -1;
            # the anchor count as a tensor, so that an exported graph follows its input's size
            anchors = torch.ones_like(preds[0, :, 0], dtype=torch.int64).sum()
            filler = torch.cat((preds.new_zeros(b, k, 4), preds.new_full((b, k, self.nc), -1.0)), -1)
            preds = torch.cat((preds, filler), 1)
        boxes, scores = preds.split((4, self.nc), -1)
        if self.agnostic:
            best, labels = scores.max(-1, keepdim=True)
            top, index = best.topk(k, dim=1)
            picked = boxes.gather(1, index.expand(-1, -1, 4))
            return torch.cat((picked, top, labels.gather(1, index).to(top.dtype)), -1)
        anchor_index = scores.amax(-1).topk(k, dim=1).indices.unsqueeze(-1)  # (B, k, 1)
        scores = scores.gather(1, anchor_index.expand(-1, -1, self.nc))  # (B, k, nc)
        top, flat_index = scores.flatten(1).topk(k, dim=1)  # (B, k)
        index = anchor_index.gather(1, (flat_index // self.nc).unsqueeze(-1))  # (B, k, 1)
        picked = boxes.gather(1, index.expand(-1, -1, 4))
        rows = torch.cat((picked, top.unsqueeze(-1), (flat_index % self.nc).unsqueeze(-1).to(top.dtype)), -1)
        if not filled:
            return rows
        # as the package, min(max_det, anchors) rows: past the anchor count, the pairs are real anchors' other
        # classes, which the package does not give, so they become filler
        real = (torch.arange(k, device=rows.device) < anchors).view(1, k, 1)
        filler = torch.zeros_like(rows[:1, :1])  # made on the device (no host copy: a CUDA graph may capture it)
        filler[..., 4] = -1.0
        return torch.where(real, rows, filler)

    def _rebuild_class_branch(self, c3: int) -> None:
        """Both class branches at ``c3`` hidden channels (see :meth:`AnchorFreeDetect.widen_class_branch`)."""
        super()._rebuild_class_branch(c3)
        self.one2one_cv3 = copy.deepcopy(self.cv3)

    @torch.no_grad()
    def initialize_biases(self, class_frequency: torch.Tensor | None = None) -> None:
        """The anchor-free priors on both branches (box logits 2.0; class logits per stride)."""
        super().initialize_biases(class_frequency)
        for src, dst in ((self.cv2, self.one2one_cv2), (self.cv3, self.one2one_cv3)):
            for a, b in zip(src, dst):
                b[-1].bias.copy_(a[-1].bias)


class V10Detect(E2EDetect):
    """YOLOv10's head (the package's ``v10Detect``): :class:`E2EDetect` whose class branch is always the
    depthwise one (3x3 depthwise + 1x1 pairs; the package's ``Conv(x, x, 3, g=x)`` is our ``DWConv``),
    whatever blocks the rest of the model uses. Its ``reg_max`` is always 16, as the package's (which is not
    given the YAML's ``reg_max``); another is logged and ignored."""

    def __init__(self, nc: int = 80, reg_max: int = 16, ch: tuple[int, ...] = (), legacy: bool = False):
        if reg_max != 16:
            logging.getLogger("yolotr").warning(
                "v10Detect ignores 'reg_max: %s' and uses 16, as the ultralytics package's v10Detect does", reg_max
            )
        super().__init__(nc, 16, ch, legacy=False)
