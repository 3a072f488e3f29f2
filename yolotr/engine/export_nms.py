"""NMS inside an exported graph: ``export_model(..., nms=True)`` / ``yolotr export --nms``.

:class:`WithNms` wraps a model whose export output is decoded boxes (``rows`` or ``columns``, see
:data:`yolotr.ops.boxes.LAYOUTS`) and turns it into ``(B, max_det, 6)`` rows ``x1, y1, x2, y2, score,
class`` in input pixels, best first, zero-padded, with ``conf``, ``iou`` and ``max_det`` fixed in the
graph. It keeps what :class:`~yolotr.engine.predictor.Predictor` keeps: each box's best class (its score
times objectness for YOLOv5 heads), scores above ``conf``, class-aware NMS at ``iou``, the ``max_det``
best. The NMS itself is the standard ONNX ``NonMaxSuppression`` operator (per class, batched), which
onnxruntime and OpenCV's DNN module (5.x) both run; around it only ``ScatterND``, ``Pad``, ``TopK`` and
``GatherElements``, no loop and no shape that depends on the number of detections at the output.
In PyTorch the same operator runs on torchvision's NMS, so the exporter's check compares like with like.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401 - imported before any export: an import inside torch.onnx.export is traced, and fails
from torch import nn

from yolotr.ops.boxes import as_rows, batched_nms, has_objectness, xywh2xyxy


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (``center_point_box = 0``): boxes ``(B, N, 4)`` corners, scores
    ``(B, C, N)`` -> selected ``(K, 3)`` int64 rows ``[batch, class, box]``, per image and class best
    first. A box is selected when its score exceeds ``score_threshold`` and no better box of its class
    overlaps it by more than ``iou_threshold`` (at most ``max_per_class`` per class)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        rows = []
        for b in range(boxes.shape[0]):
            cls, index = (scores[b] > score_threshold).nonzero(as_tuple=True)
            score = scores[b, cls, index]
            keep = batched_nms(boxes[b, index].float(), score.float(), cls, iou_threshold)
            keep = keep[torch.sort(cls[keep], stable=True).indices]  # by class, each best first
            cls, index = cls[keep], index[keep]
            first = torch.searchsorted(cls, cls, right=False)  # rank within its class
            rank = torch.arange(len(cls), device=cls.device) - first
            keep = rank < max_per_class
            rows.append(torch.stack((torch.full_like(cls[keep], b), cls[keep], index[keep]), 1))
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64),
            const(iou_threshold, torch.float32), const(score_threshold, torch.float32),
        )  # fmt: skip


class WithNms(nn.Module):
    """A detector followed by NMS: ``(B, 3, H, W)`` -> ``(B, max_det, 6)`` float (see the module).

    Args:
        model: the model in export mode; its output is decoded boxes ``cx, cy, w, h`` (pixels) and
            scores in ``layout``.
        layout: ``rows`` ``(B, A, C)`` or ``columns`` ``(B, C, A)``.
        nc: classes (``C = 5 + nc`` with an objectness column, ``4 + nc`` without).
        conf, iou, max_det: the settings of :class:`~yolotr.engine.predictor.Predictor`.
    """

    def __init__(self, model: nn.Module, layout: str, nc: int, conf: float, iou: float, max_det: int):
        super().__init__()
        self.model, self.layout, self.nc = model, layout, int(nc)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)

    def candidates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What NMS chooses from: corners ``(B, A, 4)``, class scores ``(B, A, nc)`` (times objectness for a
        YOLOv5 head), each box's best score and class ``(B, A)``, as the predictor keeps them."""
        rows = as_rows(self.model(x), self.layout).float()  # (B, A, C)
        scores = rows[..., 5:] * rows[..., 4:5] if has_objectness(rows.shape[-1], self.nc) else rows[..., 4:]
        best, cls = scores.max(-1)
        return xywh2xyxy(rows[..., :4]), scores, best, cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, scores, best, cls = self.candidates(x)
        per_class = scores * (scores == best.unsqueeze(-1)).to(scores.dtype)  # only the best class scores
        selected = _NonMaxSuppression.apply(boxes, per_class.transpose(1, 2), self.max_det, self.iou, self.conf)
        image, index = selected[:, 0], selected[:, 2]
        kept = torch.zeros_like(best).index_put((image, index), best[image, index])  # (B, A), 0 where dropped
        kept = F.pad(kept, (0, self.max_det))  # at least max_det columns: zero rows pad the output
        table = F.pad(torch.cat((boxes, cls.unsqueeze(-1).to(boxes.dtype)), -1), (0, 0, 0, self.max_det))
        score, order = kept.topk(self.max_det, dim=1)  # (B, max_det), best first
        picked = table.gather(1, order.unsqueeze(-1).expand(-1, -1, 5))
        out = torch.cat((picked[..., :4], score.unsqueeze(-1), picked[..., 4:]), -1)
        return out * (score > 0).unsqueeze(-1).to(out.dtype)
