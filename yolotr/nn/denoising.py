"""Contrastive denoising queries (DN-DETR / DINO, as RT-DETR trains them).

From the ground-truth boxes of a batch, ``G`` groups of noised copies are made: in every group each box
appears once as a *positive* query (box jittered by less than half its size, to be reconstructed) and once as
a *negative* one (jittered by between one and two half sizes, to be classified as background); a fraction of
the labels is replaced by random classes. The queries' content is the class embedding of their (noised)
label, their reference box the noised box in logit space. They are decoded together with the matching
queries, behind an attention mask that hides every group from the matching queries and from the other groups.

Numerically the ``ultralytics`` package's ``get_cdn_group`` (8.4): the same random draws in the same order on
the global generator, the same layout (per group ``m`` positives then ``m`` negatives, ``m`` the largest
per-image box count, images padded with zero queries) and the same ``dn_meta`` dict. It differs in reading
our ``(N, 6)`` targets and in building the attention mask in one expression instead of a loop.
"""

from __future__ import annotations

import torch

from yolotr.ops.boxes import xywh2xyxy, xyxy2xywh
from yolotr.ops.targets import check_target_layout, check_targets
from yolotr.ops.transfer import to_device


def group_targets(
    targets: torch.Tensor, batch_size: int, nc: int | None = None, who: str = "RT-DETR"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """``(N, 6)`` ``[image, class, cx, cy, w, h]`` targets, stably ordered by image -> classes ``(N,)`` int64,
    normalized ``cxcywh`` boxes ``(N, 4)`` float32, image indices ``(N,)`` int64 and the count per image.

    Malformed targets raise ``ValueError`` prefixed ``who`` (:func:`~yolotr.ops.targets.check_targets`: image
    indices in ``[0, batch_size)``, class ids in ``[0, nc)``, finite, boxes normalized)."""
    check_target_layout(targets, who)
    image = targets[:, 0].long()
    counts = torch.zeros(batch_size, dtype=torch.long, device=image.device)
    counts.scatter_add_(0, image.clamp(0, max(batch_size - 1, 0)), torch.ones_like(image))
    counts = check_targets(targets, nc, batch_size, who, extra=counts)  # the one host read
    order = torch.argsort(image, stable=True)
    targets, image = targets[order], image[order]
    return targets[:, 1].long(), targets[:, 2:6].float(), image, counts


def denoising_group(
    targets: torch.Tensor,
    batch_size: int,
    num_classes: int,
    num_queries: int,
    class_embed: torch.Tensor,
    num_dn: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict] | None:
    """Denoising queries for one batch, or None when there is nothing to denoise.

    Args:
        targets: ``(N, 6)`` ``[image, class, cx, cy, w, h]``, boxes normalized.
        batch_size: images ``B``; num_classes: classes; num_queries: matching queries ``Q`` (after them in
            the decoder's input).
        class_embed: ``(num_classes, d)`` the denoising class embedding's weight.
        num_dn: about how many denoising queries per image (``G = num_dn // m`` groups of ``2 m``).
        label_noise_ratio: a label is replaced by a random class with probability half this.
        box_noise_scale: jitter as a multiple of the box's half size.

    Returns:
        ``(dn_embed, dn_bbox, attn_mask, dn_meta)``: content ``(B, 2 m G, d)``, reference boxes in logit
        space ``(B, 2 m G, 4)``, the decoder's self-attention mask ``(2 m G + Q, 2 m G + Q)`` bool (True: may
        not attend), and ``dn_meta``: ``dn_pos_idx`` (per image, the positive queries' indices, group by
        group), ``dn_gt_idx`` (per image, the indices in the image-ordered targets the positives reconstruct),
        ``dn_num_group`` ``G`` and ``dn_num_split`` ``[2 m G, Q]``.
    """
    if num_dn <= 0:
        return None
    device = class_embed.device
    # counted where they are (the host)
    gt_cls, gt_bbox, b_idx, groups = group_targets(targets, batch_size, num_classes, "RT-DETR denoising")
    gt_cls, gt_bbox, b_idx = (to_device(t, device) for t in (gt_cls, gt_bbox, b_idx))
    m = min(max(groups), num_dn) if groups else 0
    if m == 0:
        return None
    num_group = num_dn // m
    gt_idx = torch.arange(sum(groups), dtype=torch.long, device=device)
    if max(groups) > m:  # more boxes in an image than queries: a random subset of m per image, in order
        offsets = torch.as_tensor([0, *groups[:-1]]).cumsum(0).tolist()
        gt_idx = torch.cat([torch.randperm(n, device=device)[:m].sort().values + o for n, o in zip(groups, offsets)])
        gt_cls, gt_bbox, b_idx = gt_cls[gt_idx], gt_bbox[gt_idx], b_idx[gt_idx]
        groups = [min(n, m) for n in groups]
    total = sum(groups)
    copies = 2 * num_group  # copy 2g: the positives of group g, copy 2g + 1 its negatives
    dn_cls = gt_cls.repeat(copies)
    dn_bbox = gt_bbox.repeat(copies, 1)
    dn_b_idx = b_idx.repeat(copies)
    negative = torch.arange(copies * total, device=device).view(num_group, 2, -1)[:, 1].flatten()
    if label_noise_ratio > 0:
        flip = torch.nonzero(torch.rand(dn_cls.shape) < label_noise_ratio * 0.5).squeeze(-1)
        dn_cls[flip] = torch.randint_like(flip, 0, num_classes, dtype=dn_cls.dtype, device=dn_cls.device)
    if box_noise_scale > 0:
        corners = xywh2xyxy(dn_bbox)
        half = (dn_bbox[:, 2:] * 0.5).repeat(1, 2) * box_noise_scale  # (copies * total, 4)
        sign = torch.randint_like(dn_bbox, 0, 2) * 2.0 - 1.0
        jitter = torch.rand_like(dn_bbox)
        jitter[negative] += 1.0
        corners = (corners + jitter * sign * half).clip(0.0, 1.0)
        dn_bbox = torch.logit(xyxy2xywh(corners), eps=1e-6)
    num_dn = 2 * m * num_group
    slot = torch.cat([torch.arange(n, dtype=torch.long) for n in groups]).to(device)  # box's slot in its image
    positives = torch.stack([slot + 2 * m * g for g in range(num_group)])  # (G, total)
    slots = torch.cat([slot + m * c for c in range(copies)])
    dn_embed = torch.zeros(batch_size, num_dn, class_embed.shape[-1], device=device, dtype=class_embed.dtype)
    dn_boxes = torch.zeros(batch_size, num_dn, 4, device=device, dtype=dn_bbox.dtype)
    dn_embed[dn_b_idx, slots] = class_embed[dn_cls]
    dn_boxes[dn_b_idx, slots] = dn_bbox
    size = num_dn + num_queries
    group_of = torch.arange(num_dn, device=device) // (2 * m)
    attn_mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    attn_mask[num_dn:, :num_dn] = True  # matching queries do not see the denoising ones
    attn_mask[:num_dn, :num_dn] = group_of[:, None] != group_of[None, :]  # nor a group the others
    dn_meta = {
        "dn_pos_idx": [p.reshape(-1) for p in positives.cpu().split(groups, dim=1)],
        "dn_gt_idx": list(gt_idx.cpu().split(groups)),
        "dn_num_group": num_group,
        "dn_num_split": [num_dn, num_queries],
    }
    return dn_embed, dn_boxes, attn_mask, dn_meta
