"""RT-DETR's set loss: Hungarian-matched varifocal, L1 and GIoU terms on every decoder layer and on the
encoder's selected proposals, plus the same terms on the denoising queries with their fixed assignment.

For one set of predictions (a decoder layer, or the encoder top-k), matched to the targets by
:class:`~yolotr.ops.matcher.HungarianMatcher`, with ``n`` the number of matched pairs:

- ``class``: varifocal loss. A matched query's target for its target's class is the IoU of its (detached)
  box with the target; every other (query, class) is background. Weight ``gt_score`` on positives and
  ``alpha * sigmoid(logit)^gamma`` on the rest (alpha 0.25, gamma 1.5); BCE with logits, summed, divided by
  ``n``. With no targets at all: the focal loss against all-background (summed, times ``Q``, over 1).
- ``bbox``: L1 of the matched normalized ``cxcywh`` boxes, summed, divided by ``n``;
- ``giou``: ``1 - GIoU``, summed, divided by ``n``.

Gains class 1, bbox 5, giou 2. The last decoder layer gives ``loss_class/bbox/giou``; the encoder and the other
decoder layers, each matched on its own, the ``_aux`` sums; with denoising, the positives of every group
assigned to their targets give the ``_dn`` terms (last layer) and ``_aux_dn`` (other decoder layers), zero
without. The total is the sum of the twelve, **not** times the batch size (the package's RT-DETR trainer
back-propagates it as it is). Numerically the ``ultralytics`` package's ``RTDETRDetectionLoss`` (8.4); it
differs in taking our ``(N, 6)`` targets and the head's training output directly, and computing in float32
with autocast off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yolotr.nn.denoising import group_targets
from yolotr.ops.matcher import HungarianMatcher, iou_cxcywh
from yolotr.ops.transfer import to_device

TERMS = ("class", "bbox", "giou")


class RTDETRLoss:
    """Loss of an ``RTDETRDecoder``'s training output.

    Args:
        head: the decoder (reads ``nc``).
        hyp: training configuration (unused: the package's gains are fixed; kept for :func:`build_loss`).
        imgsz: unused (the boxes are normalized).

    Call with the head's output ``(dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta)`` (training:
    ``(L, B, D + Q, 4)`` / ``(L, B, D + Q, nc)``, ``(B, Q, 4)`` / ``(B, Q, nc)``, dict or None; an eval raw output
    works too) and ``targets`` ``(N, 6)`` ``[image, class, cx, cy, w, h]`` normalized. Returns ``(total,
    items)``: total the sum of all twelve terms (with gradient), items ``(3,)`` ``(giou, cls, l1)`` of the last
    layer, detached (the three the package logs). :meth:`loss_dict` gives all twelve.
    """

    reads = frozenset()  # no loss setting of cfg/default.yaml: its gains are the package's own

    names = ("giou", "cls", "l1")

    def __init__(self, head, hyp: dict | None = None, imgsz: int = 640):
        self.nc = int(head.nc)
        self.gain = {"class": 1.0, "bbox": 5.0, "giou": 2.0}
        self.alpha, self.gamma = 0.25, 1.5
        self.matcher = HungarianMatcher({"class": 2.0, "bbox": 5.0, "giou": 2.0}, alpha=0.25, gamma=2.0)

    def __call__(self, raw, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = self.loss_dict(raw, targets)
        total = sum(losses.values())
        items = torch.stack([losses["loss_giou"], losses["loss_class"], losses["loss_bbox"]]).detach()
        return total, items

    def loss_dict(self, raw, targets: torch.Tensor, match_indices: list | None = None) -> dict[str, torch.Tensor]:
        """The twelve terms by the package's names (``loss_class``, ``loss_bbox_aux``, ``loss_giou_dn``, ...);
        ``match_indices`` (per slice: encoder, decoder layers 0..L-1) fixes the matching instead of the matcher."""
        dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta = raw
        if dec_bboxes.ndim != 4 or enc_bboxes.ndim != 3:
            raise ValueError(
                f"RTDETRLoss: expected decoder boxes (L, B, Q, 4) and encoder boxes (B, Q, 4), got "
                f"{tuple(dec_bboxes.shape)} and {tuple(enc_bboxes.shape)}"
            )
        device = dec_bboxes.device
        # counted where they are
        gt_cls, gt_boxes, _, groups = group_targets(targets, enc_bboxes.shape[0], self.nc, "RTDETRLoss")
        gt_cls, gt_boxes = to_device(gt_cls, device), to_device(gt_boxes, device)
        with torch.autocast(device.type, enabled=False):
            dn_bboxes = dn_scores = None
            if dn_meta is not None:
                dn_bboxes, dec_bboxes = dec_bboxes.float().split(dn_meta["dn_num_split"], dim=2)
                dn_scores, dec_scores = dec_scores.float().split(dn_meta["dn_num_split"], dim=2)
            boxes = torch.cat((enc_bboxes.float()[None], dec_bboxes.float()))
            scores = torch.cat((enc_scores.float()[None], dec_scores.float()))
            losses = self._stack(boxes, scores, gt_boxes, gt_cls, groups, match_indices, "")
            if dn_meta is not None:
                fixed = [
                    (pos, gt.repeat(dn_meta["dn_num_group"]))
                    for pos, gt in zip(dn_meta["dn_pos_idx"], dn_meta["dn_gt_idx"])
                ]
                losses.update(
                    self._stack(dn_bboxes, dn_scores, gt_boxes, gt_cls, groups, [fixed] * len(dn_bboxes), "_dn")
                )
            else:
                losses.update({f"{k}_dn": torch.zeros((), device=device) for k in list(losses)})
        return losses

    def _stack(self, boxes, scores, gt_boxes, gt_cls, groups, match_indices, postfix: str) -> dict:
        """Main terms from the last slice, ``_aux`` sums from the others."""
        last = len(boxes) - 1
        matches = match_indices or [None] * len(boxes)
        main = self.layer_loss(boxes[last], scores[last], gt_boxes, gt_cls, groups, matches[last])
        aux = [
            self.layer_loss(b, s, gt_boxes, gt_cls, groups, m) for b, s, m in zip(boxes[:last], scores[:last], matches)
        ]
        out = {f"loss_{t}{postfix}": main[t] for t in TERMS}
        for t in TERMS:
            out[f"loss_{t}_aux{postfix}"] = sum((a[t] for a in aux), torch.zeros((), device=boxes.device))
        return out

    def layer_loss(self, boxes, logits, gt_boxes, gt_cls, groups, matches=None) -> dict[str, torch.Tensor]:
        """``class``, ``bbox``, ``giou`` terms (gains applied) of one set: ``boxes`` ``(B, Q, 4)``, ``logits``
        ``(B, Q, nc)``, image-ordered targets ``gt_boxes`` ``(N, 4)`` / ``gt_cls`` ``(N,)``, ``groups`` per
        image; ``matches`` per image ``(query indices, target indices)`` or None (the matcher's)."""
        if matches is None:
            matches = self.matcher(boxes, logits, gt_boxes, gt_cls, groups)
        device = boxes.device
        image = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)]).to(device)
        query = torch.cat([q for q, _ in matches]).to(device)
        target = torch.cat([t for _, t in matches]).to(device)
        b, q, nc = logits.shape
        matched, truth = boxes[image, query], gt_boxes[target]
        n = len(target)
        labels = torch.full((b, q), nc, dtype=torch.long, device=device)
        labels[image, query] = gt_cls[target]
        one_hot = F.one_hot(labels, nc + 1)[..., :nc].float()  # (B, Q, nc); background rows all zero
        iou = torch.zeros(b, q, device=device)
        if n:
            iou[image, query] = iou_cxcywh(matched.detach(), truth)
        gt_score = iou[..., None] * one_hot
        prob = logits.sigmoid()
        if n:  # varifocal
            weight = self.alpha * prob.pow(self.gamma) * (1 - one_hot) + gt_score * one_hot
            cls = (F.binary_cross_entropy_with_logits(logits, gt_score, reduction="none") * weight).sum() / n
        else:  # focal against all-background
            bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
            cls = (bce * prob**self.gamma * (1 - self.alpha)).mean(1).sum() * q
        if n:
            l1 = F.l1_loss(matched, truth, reduction="sum") / n
            giou = (1.0 - iou_cxcywh(matched, truth, giou=True)).sum() / n
        else:
            l1 = giou = boxes[..., :0].sum()
        return {"class": cls * self.gain["class"], "bbox": l1 * self.gain["bbox"], "giou": giou * self.gain["giou"]}
