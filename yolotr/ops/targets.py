"""The check of the targets every detection loss (and RT-DETR's denoising) reads.

Targets are ``(N, 6)`` ``[image, class, cx, cy, w, h]``, floating point, boxes normalized to the image
(``0..1``). A malformed row used to fail deep inside the assignment (an index error of another tensor) or,
worse, give a loss without a word: a negative or fractional class, NaN coordinates and boxes in pixels
were all taken. :func:`check_targets` raises a ``ValueError`` naming the first bad row and what is wrong.

It reads the targets on the host once, where they are: the trainer keeps them there, so an accelerator
does not wait for it. Callers that need a few numbers of the targets anyway pass them as ``extra`` and get
them from the same read.
"""

from __future__ import annotations

import torch

from yolotr.ops.transfer import device_tensor

# float rounding of boxes clipped to the image; a box in pixels is far beyond it
TOLERANCE = 1e-3


def check_target_layout(targets: torch.Tensor, who: str) -> None:
    """Raise ``ValueError`` (prefixed ``who``) unless ``targets`` are ``(N, 6)`` and floating point (or empty):
    what a loss can check before it converts them, without reading them."""
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"{who}: targets must be (N, 6) [image, class, cx, cy, w, h], got {tuple(targets.shape)}")
    if targets.shape[0] and not targets.dtype.is_floating_point:
        raise ValueError(
            f"{who}: targets must be floating point (boxes normalized to 0..1), got {targets.dtype}; "
            "pass them as float32"
        )


def check_targets(
    targets: torch.Tensor,
    nc: int | None,
    batch_size: int | None,
    who: str,
    extra: torch.Tensor | None = None,
) -> list:
    """Raise ``ValueError`` (prefixed ``who``) unless ``targets`` are well formed; return ``extra.tolist()``.

    Args:
        targets: ``(N, 6)`` ``[image, class, cx, cy, w, h]``, any floating dtype, on any device.
        nc: the number of classes (class ids must be whole numbers in ``0..nc-1``); None skips the upper bound.
        batch_size: images in the batch (image indices must be whole numbers in ``0..batch_size-1``); None
            skips the upper bound.
        who: the caller's name, the start of each message.
        extra: a 1-d tensor on ``targets``' device read in the same host transfer (None: nothing).

    Returns:
        ``extra`` as a list of Python numbers (``[]`` without it).

    Checked, in order, naming the first row that fails: the shape; a floating dtype; finite values; image
    indices; class ids; ``w`` and ``h`` not negative; ``cx``, ``cy``, ``w``, ``h`` at most ``1`` (and
    ``cx``, ``cy`` at least ``0``), with :data:`TOLERANCE`: coordinates in pixels are named as such.
    """
    check_target_layout(targets, who)
    n = targets.shape[0]
    if n == 0:
        return [] if extra is None else extra.tolist()
    t = targets.detach()
    t = t if t.dtype == torch.float64 else t.float()
    inf = float("inf")
    bounds = device_tensor(
        [
            [0.0, 0.0, -TOLERANCE, -TOLERANCE, -inf, -inf],
            [
                inf if batch_size is None else batch_size - 1,
                inf if nc is None else nc - 1,
                *[1 + TOLERANCE] * 4,
            ],
        ],
        t.device,
        t.dtype,
    )  # (2, 6) lowest and highest value of each column
    out = (t < bounds[0]) | (t > bounds[1])  # (N, 6); NaN compares False, caught first
    fraction = t[:, :2] != t[:, :2].floor()  # (N, 2) image index, class id
    flags = torch.stack(
        (
            ~torch.isfinite(t).all(1),
            out[:, 0] | fraction[:, 0],
            out[:, 1] | fraction[:, 1],
            (t[:, 4:6] < 0).any(1),
            out[:, 2:].any(1),
        ),
        1,
    )  # (N, 5) bool: the checks in order
    rows = torch.arange(n, device=t.device)[:, None]
    first = torch.where(flags, rows, n).amin(0)  # (5,) the first failing row of each check, n where none
    read = torch.cat((first.to(t.dtype), extra.to(t.dtype))) if extra is not None else first
    values = read.tolist()  # the one host read
    first, rest = [int(v) for v in values[:5]], values[5:]
    if min(first) < n:
        check = next(i for i, r in enumerate(first) if r < n)
        row = first[check]
        _raise(who, check, row, targets[row].tolist(), nc, batch_size)
    if extra is not None and not extra.dtype.is_floating_point:
        rest = [int(v) for v in rest]
    return rest


def _raise(who: str, check: int, row: int, values: list[float], nc: int | None, batch_size: int | None) -> None:
    """The message of the first failed ``check`` (an index into :func:`check_targets`' flags) at ``row``."""
    shown = "[" + ", ".join(f"{v:g}" for v in values) + "]"
    where = f"{who}: target row {row} {shown} [image, class, cx, cy, w, h]"
    if check == 0:
        raise ValueError(f"{where} holds NaN or infinity")
    if check == 1:
        bound = f"0..{batch_size - 1}" if batch_size is not None else "0 or more"
        raise ValueError(f"{where}: image indices must be whole numbers in {bound} (the batch has {batch_size} images)")
    if check == 2:
        bound = f"0..{nc - 1}" if nc is not None else "0 or more"
        raise ValueError(f"{where}: class ids must be whole numbers in {bound} (the model has {nc} classes)")
    if check == 3:
        raise ValueError(f"{where}: negative width or height")
    raise ValueError(
        f"{where}: box coordinates must be normalized to 0..1 (cx, cy in 0..1, w, h at most 1); pixel "
        "coordinates? divide x and w by the image width, y and h by its height"
    )
