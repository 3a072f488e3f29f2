"""Box conversions, rescaling from letterboxed to original images, and NMS (torchvision)."""

from __future__ import annotations

import torch


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """``torchvision.ops.batched_nms``: the indices of the kept ``(N, 4)`` xyxy ``boxes``, best score first, NMS
    within each value of ``groups``. torchvision is imported here, on first use: its import takes about 1 s (it
    loads ``torch._dynamo``), which a command refused for its arguments should not wait for."""
    import torchvision

    return torchvision.ops.batched_nms(boxes, scores, groups, iou_thres)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """``torchvision.ops.box_iou``: the ``(N, M)`` IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes (imported on first
    use, as in :func:`batched_nms`)."""
    import torchvision

    return torchvision.ops.box_iou(boxes1, boxes2)


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre x, centre y, width, height -> x1, y1, x2, y2 (same units)."""
    xy, wh = x[..., :2], x[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def xyxy2xywh(x: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` x1, y1, x2, y2 -> centre x, centre y, width, height."""
    return torch.cat(((x[..., :2] + x[..., 2:4]) / 2, x[..., 2:4] - x[..., :2]), -1)


def clip_boxes(boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Clip ``(N, 4)`` xyxy boxes in place to an image of ``shape = (height, width)``."""
    boxes[..., 0].clamp_(0, shape[1])
    boxes[..., 1].clamp_(0, shape[0])
    boxes[..., 2].clamp_(0, shape[1])
    boxes[..., 3].clamp_(0, shape[0])
    return boxes


def letterbox_placement(
    original_hw: tuple[int, int], r: float, canvas_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a letterbox puts an ``(h0, w0)`` image scaled by ``r`` on a ``canvas_hw`` canvas: the resized
    ``(new_h, new_w)`` (each side ``round(side * r)``, at least 1) and the whole pixels ``(top, left)``
    before it (``round(total / 2 - 0.1)``: an odd padding puts its extra pixel after the image). One rule
    for :func:`~yolotr.data.transforms.letterbox`, which builds the input, and :func:`scale_boxes`, which
    inverts it."""
    new_h, new_w = max(round(original_hw[0] * r), 1), max(round(original_hw[1] * r), 1)
    return (new_h, new_w), (round((canvas_hw[0] - new_h) / 2 - 0.1), round((canvas_hw[1] - new_w) / 2 - 0.1))


def scale_boxes(
    input_shape: tuple[int, int],
    boxes: torch.Tensor,
    original_shape: tuple[int, int],
    ratio_pad: tuple | None = None,
    stretched: bool = False,
) -> torch.Tensor:
    """Map ``(N, 4)`` xyxy boxes from a letterboxed ``input_shape`` back to ``original_shape`` (h, w).

    ``ratio_pad = ((gain_h, gain_w), (pad_w, pad_h))`` when known (``pad``: the whole pixels added on the
    left and top); otherwise derived from the shapes by :func:`letterbox_placement`, as
    :func:`~yolotr.data.transforms.letterbox` builds the input (square or stride-aligned rectangle alike),
    each axis with its own gain (its side was rounded on its own). This is the
    exact inverse of the letterbox, as the ``ultralytics`` package's ``scale_boxes`` (8.4); YOLOv5's
    derivation (one gain, the unrounded half padding) puts boxes up to half an input pixel off.
    ``stretched``: the input was the original resized without keeping its aspect ratio
    (:func:`~yolotr.data.transforms.stretch`), each axis scaled back on its own. Works in place and
    clips to the original image.
    """
    if stretched:
        boxes[..., [0, 2]] *= original_shape[1] / input_shape[1]
        boxes[..., [1, 3]] *= original_shape[0] / input_shape[0]
        return clip_boxes(boxes, original_shape)
    if ratio_pad is None:
        (h1, w1), (h0, w0) = input_shape[:2], original_shape[:2]
        (new_h, new_w), (top, left) = letterbox_placement((h0, w0), min(h1 / h0, w1 / w0), (h1, w1))
        (gain_h, gain_w), pad = (new_h / h0, new_w / w0), (left, top)
    else:
        (gain_h, gain_w), pad = ratio_pad
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., [0, 2]] /= gain_w
    boxes[..., [1, 3]] /= gain_h
    return clip_boxes(boxes, original_shape)


# What a detector's decoded output tensor is. Heads declare theirs (``export_layout``, ``end2end``), an
# exported ONNX file names its own in the metadata key ``layout``; readers turn it into rows with as_rows.
ROWS = "rows"  # (B, anchors, C): one row per anchor, C = 5 + nc (YOLOv5: objectness) or 4 + nc
COLUMNS = "columns"  # (B, C, anchors): one column per anchor, C = 4 + nc (the ultralytics package's export)
DETECTIONS = "detections"  # (B, k, 6): x1, y1, x2, y2, score, class after NMS (or NMS-free), zero-padded
LAYOUTS = (ROWS, COLUMNS, DETECTIONS)


def as_rows(decoded: torch.Tensor, layout: str) -> torch.Tensor:
    """Decoded output in ``layout`` -> one row per anchor (or detection): ``(B, C, A)`` is transposed
    (a view) to ``(B, A, C)``; ``rows`` and ``detections`` come back as they are."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown output layout {layout!r}; expected one of {LAYOUTS}")
    return decoded.transpose(-1, -2) if layout == COLUMNS else decoded


def has_objectness(columns: int, nc: int | None) -> bool:
    """Whether decoded output with ``columns`` columns has an objectness column (``5 + nc``, YOLOv5)
    rather than none (``4 + nc``, anchor-free); without ``nc`` it is taken to have one."""
    return nc is None or columns != 4 + nc


def non_max_suppression(
    prediction: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
    max_candidates: int = 30000,
    nc: int | None = None,
    multi_label: bool = False,
) -> list[torch.Tensor]:
    """Per-image NMS of decoded YOLO output.

    Args:
        prediction: ``(B, N, 5 + nc)`` float: cx, cy, w, h (pixels), objectness, class probabilities;
            or, from an anchor-free head, ``(B, N, 4 + nc)`` without objectness (pass ``nc``).
        conf_thres: minimum ``objectness * class probability`` (the class probability alone without
            objectness).
        iou_thres: IoU above which the lower-scored box of the same class is dropped.
        classes: keep only these class indices.
        agnostic: suppress across classes.
        max_det: detections kept per image.
        nc: the number of classes: tells ``4 + nc`` (anchor-free) from ``5 + nc`` columns; without it
            the output is taken to have an objectness column.
        multi_label: keep every class whose score passes ``conf_thres`` as its own candidate (one box
            may then be kept once per class), as YOLOv5's ``val.py`` and the ``ultralytics`` validator
            do; otherwise each box keeps only its best class.

    Returns:
        One ``(n, 6)`` float32 tensor per image: x1, y1, x2, y2, score, class — best first.
    """
    prediction = prediction.float()
    objectness = has_objectness(prediction.shape[-1], nc)
    out = []
    for x in prediction:
        if objectness:
            x = x[x[:, 4] > conf_thres]
            scores = x[:, 5:] * x[:, 4:5]
        else:
            scores = x[:, 4:]
        if multi_label:
            rows, cls = (scores > conf_thres).nonzero(as_tuple=True)
            boxes, conf = xywh2xyxy(x[rows, :4]), scores[rows, cls]
        else:
            conf, cls = scores.max(1)
            keep = conf > conf_thres
            boxes, conf, cls = xywh2xyxy(x[keep, :4]), conf[keep], cls[keep]
        if classes is not None:
            wanted = torch.isin(cls, torch.as_tensor(classes, device=cls.device))
            boxes, conf, cls = boxes[wanted], conf[wanted], cls[wanted]
        order = conf.argsort(descending=True)[:max_candidates]
        boxes, conf, cls = boxes[order], conf[order], cls[order]
        groups = torch.zeros_like(cls) if agnostic else cls
        kept = batched_nms(boxes, conf, groups, iou_thres)[:max_det]
        out.append(torch.cat((boxes[kept], conf[kept, None], cls[kept, None].float()), 1))
    return out


def kept_detections(rows: torch.Tensor, conf: float, classes: list[int] | None, max_det: int) -> torch.Tensor:
    """One image's end-to-end output (NMS already done, or an NMS-free head) ``(k, 6)`` x1, y1, x2, y2,
    score, class -> the float32 ``(n, 6)`` rows whose score exceeds ``conf`` and whose class is in
    ``classes`` (all when None), at most ``max_det``, in their order (zero padding rows never pass)."""
    rows = rows.float()
    keep = rows[:, 4] > conf
    if classes is not None:
        keep &= torch.isin(rows[:, 5].long(), torch.as_tensor(classes, device=rows.device))
    return rows[keep][:max_det].clone()
