"""Import of the published PyTorch YOLOv4 weights (bubbliiiing/yolov4-pytorch) into ``yolov4.yaml``.

Two layouts are recognised, both plain ``state_dict`` mappings of name -> tensor:

``"full"``      ``yolo4_weights.pth``: ``YoloBody`` keys ``backbone.conv1.*``, ``backbone.stages.*``,
                ``conv1.*``, ``conv2.*`` (the convolutions around ``SPP``, which has no weights),
                ``upsample1/2.*``, ``conv_for_P4/P3.*``, ``make_five_conv1..4.*``, ``down_sample1/2.*``
                and ``yolo_head1..3.*`` (``yolo_head3`` is stride 8, ``yolo_head1`` stride 32).
``"backbone"``  ``CSPdarknet53_backbone_weights.pth``: the same backbone without the ``backbone.`` prefix
                (``conv1.*``, ``stages.*``).

The key table is built from the published structure (stage depths 1, 2, 8, 8, 4; the conv-BN units of
each module; the head's order) and pairs every published key with the key of the same tensor in a
:class:`~yolotr.models.detection.DetectionModel` built from ``cfg/models/yolov4.yaml`` (layer indices
:data:`LAYERS`). A ``module.`` prefix (``DataParallel``) is removed first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from yolotr.errors import CheckpointError

LOGGER = logging.getLogger("yolotr")

STAGE_DEPTHS = (1, 2, 8, 8, 4)
STAGE_WIDTHS = (64, 128, 256, 512, 1024)
STEM_WIDTH = 32
NA = 3
ANCHORS = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))
STRIDES = (8, 16, 32)
# Layer indices of yolov4.yaml.
LAYERS = {
    "stem": 0,
    "stages": (1, 2, 3, 4, 5),
    "spp": 6,
    "upsample1": 7,
    "conv_for_P4": 9,
    "make_five_conv1": 11,
    "upsample2": 12,
    "conv_for_P3": 14,
    "make_five_conv2": 16,
    "down_sample1": 17,
    "make_five_conv3": 19,
    "down_sample2": 20,
    "make_five_conv4": 22,
    "head": 23,
}
BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# The published model keeps PyTorch's BatchNorm defaults; its statistics are only right with this eps.
PUBLISHED_BN_EPS = 1e-5
PUBLISHED_BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class KeyEntry:
    """One tensor: its published key, our key, and the shape both must have."""

    published: str
    ours: str
    shape: tuple[int, ...]


@dataclass
class Yolov4ImportReport:
    """What :func:`convert_yolov4_state_dict` did: the layout, ``nc``, counts and the keys it ignored."""

    layout: str
    nc: int | None
    mapped: int
    tensors: int
    ignored: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        what = f"YOLOv4 {self.layout} weights" + (f" (nc={self.nc})" if self.nc is not None else "")
        text = f"{what}: mapped {self.mapped} tensors ({self.tensors:,} values)"
        if self.added:
            text += f"; added {', '.join(self.added)} (the published anchors)"
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (" ..." if len(self.ignored) > 5 else "")
            text += f"; ignored {len(self.ignored)} unknown keys: {shown}"
        return text


def _conv_bn(published: str, ours: str, c1: int, c2: int, k: int) -> list[KeyEntry]:
    """The keys of one conv (no bias) + BatchNorm unit: published ``.conv/.bn`` -> our ``Conv``'s."""
    entries = [KeyEntry(f"{published}.conv.weight", f"{ours}.conv.weight", (c2, c1, k, k))]
    for leaf in BN_LEAVES:
        shape = () if leaf == "num_batches_tracked" else (c2,)
        entries.append(KeyEntry(f"{published}.bn.{leaf}", f"{ours}.bn.{leaf}", shape))
    return entries


def _backbone_entries(prefix: str) -> list[KeyEntry]:
    """CSPDarknet53: published ``{prefix}conv1``, ``{prefix}stages.{s}`` -> ``model.0``, ``model.{1+s}``."""
    entries = _conv_bn(f"{prefix}conv1", f"model.{LAYERS['stem']}", 3, STEM_WIDTH, 3)
    c1 = STEM_WIDTH
    for s, (n, c2, layer) in enumerate(zip(STAGE_DEPTHS, STAGE_WIDTHS, LAYERS["stages"])):
        first = s == 0
        c_ = c2 if first else c2 // 2
        hidden = c2 // 2 if first else c_
        pub, ours = f"{prefix}stages.{s}", f"model.{layer}"
        entries += _conv_bn(f"{pub}.downsample_conv", f"{ours}.cv_down", c1, c2, 3)
        entries += _conv_bn(f"{pub}.split_conv0", f"{ours}.cv_bypass", c2, c_, 1)
        entries += _conv_bn(f"{pub}.split_conv1", f"{ours}.cv_main", c2, c_, 1)
        for j in range(n):
            unit_pub, unit_ours = f"{pub}.blocks_conv.{j}.block", f"{ours}.m.{j}"
            entries += _conv_bn(f"{unit_pub}.0", f"{unit_ours}.cv1", c_, hidden, 1)
            entries += _conv_bn(f"{unit_pub}.1", f"{unit_ours}.cv2", hidden, c_, 3)
        entries += _conv_bn(f"{pub}.blocks_conv.{n}", f"{ours}.cv_transition", c_, c_, 1)
        entries += _conv_bn(f"{pub}.concat_conv", f"{ours}.cv_out", 2 * c_, c2, 1)
        c1 = c2
    return entries


def _stack_entries(published: str, ours: str, c1: int, c2: int, n: int) -> list[KeyEntry]:
    """``make_three_conv``/``make_five_conv`` (``{published}.{j}``) -> our ``ConvStack`` (``{ours}.{j}``)."""
    entries, c = [], c1
    for j in range(n):
        c_next, k = (c2, 1) if j % 2 == 0 else (2 * c2, 3)
        entries += _conv_bn(f"{published}.{j}", f"{ours}.{j}", c, c_next, k)
        c = c_next
    return entries


def _neck_and_head_entries(nc: int) -> list[KeyEntry]:
    """SPP block, PANet and the three heads of ``YoloBody``."""
    L = LAYERS
    e = _stack_entries("conv1", f"model.{L['spp']}.cv1", 1024, 512, 3)
    e += _stack_entries("conv2", f"model.{L['spp']}.cv2", 2048, 512, 3)
    e += _conv_bn("upsample1.upsample.0", f"model.{L['upsample1']}", 512, 256, 1)
    e += _conv_bn("conv_for_P4", f"model.{L['conv_for_P4']}", 512, 256, 1)
    e += _stack_entries("make_five_conv1", f"model.{L['make_five_conv1']}", 512, 256, 5)
    e += _conv_bn("upsample2.upsample.0", f"model.{L['upsample2']}", 256, 128, 1)
    e += _conv_bn("conv_for_P3", f"model.{L['conv_for_P3']}", 256, 128, 1)
    e += _stack_entries("make_five_conv2", f"model.{L['make_five_conv2']}", 256, 128, 5)
    e += _conv_bn("down_sample1", f"model.{L['down_sample1']}", 128, 256, 3)
    e += _stack_entries("make_five_conv3", f"model.{L['make_five_conv3']}", 512, 256, 5)
    e += _conv_bn("down_sample2", f"model.{L['down_sample2']}", 256, 512, 3)
    e += _stack_entries("make_five_conv4", f"model.{L['make_five_conv4']}", 1024, 512, 5)
    no = NA * (5 + nc)
    head = f"model.{L['head']}"
    # yolo_head3 reads P3 (stride 8), our head 0; yolo_head1 reads P5 (stride 32), our head 2.
    for i, (published, c) in enumerate((("yolo_head3", 128), ("yolo_head2", 256), ("yolo_head1", 512))):
        e += _conv_bn(f"{published}.0", f"{head}.cv.{i}", c, 2 * c, 3)
        e.append(KeyEntry(f"{published}.1.weight", f"{head}.m.{i}.weight", (no, 2 * c, 1, 1)))
        e.append(KeyEntry(f"{published}.1.bias", f"{head}.m.{i}.bias", (no,)))
    return e


def yolov4_key_table(layout: str = "full", nc: int = 80) -> list[KeyEntry]:
    """Every tensor of a published YOLOv4 ``layout`` (``"full"`` or ``"backbone"``) with our key and shape."""
    if layout == "full":
        return _backbone_entries("backbone.") + _neck_and_head_entries(nc)
    if layout == "backbone":
        return _backbone_entries("")
    raise ValueError(f"unknown YOLOv4 layout {layout!r}; expected 'full' or 'backbone'")


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def is_yolov4_state_dict(sd: object) -> str | None:
    """``"full"`` for a ``yolo4_weights.pth`` layout, ``"backbone"`` for ``CSPdarknet53_backbone_weights.pth``,
    else ``None``. Recognition looks at key names only (a few signature prefixes), so a damaged file of
    either layout is still recognised and :func:`convert_yolov4_state_dict` can say what is wrong."""
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) for k in sd):
        return None
    keys = _strip_module_prefix(sd).keys()
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("backbone.stages.") and (has("yolo_head") or has("make_five_conv")):
        return "full"
    if has("stages.0.downsample_conv.") and has("conv1.conv.") and not has("backbone."):
        return "backbone"
    return None


def _nc_from_head(sd: Mapping[str, torch.Tensor], source: str) -> int:
    """Classes from the first head output convolution present: ``out_channels = 3 * (5 + nc)``."""
    for key in ("yolo_head1.1.weight", "yolo_head2.1.weight", "yolo_head3.1.weight"):
        if key in sd and torch.is_tensor(sd[key]) and sd[key].ndim == 4:
            out = sd[key].shape[0]
            if out % NA or out // NA <= 5:
                raise CheckpointError(
                    f"{source}: key '{key}' has shape {tuple(sd[key].shape)}, but a YOLOv4 head needs "
                    f"{NA} * (5 + nc) output channels ({NA * 85} for 80 classes)"
                )
            return out // NA - 5
    raise CheckpointError(
        f"{source}: no YOLOv4 head output convolution (yolo_head1.1.weight, yolo_head2.1.weight, "
        "yolo_head3.1.weight) in this state_dict, so the number of classes is unknown"
    )


def published_anchors() -> torch.Tensor:
    """The published anchors divided by their strides, ``(3, 3, 2)`` float32: ``YOLOv4Detect.anchors``."""
    anchors = torch.tensor(ANCHORS, dtype=torch.float32).view(3, NA, 2)
    return anchors / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)


def convert_yolov4_state_dict(
    sd: Mapping[str, torch.Tensor], source: str = "<state_dict>"
) -> tuple[dict[str, torch.Tensor], int | None, Yolov4ImportReport]:
    """Rename a published YOLOv4 ``state_dict`` to the keys of ``DetectionModel("yolov4.yaml", nc=nc)``.

    Contract:
        - ``sd``: a plain mapping as ``torch.load(path, weights_only=True)`` gives it for
          ``yolo4_weights.pth`` (layout ``"full"``) or ``CSPdarknet53_backbone_weights.pth`` (layout
          ``"backbone"``), see :func:`is_yolov4_state_dict`; ``source`` names the file in messages.
        - Returns ``(ours, nc, report)``. ``ours`` maps our keys to the same tensor objects (no copy).
          Layout ``"full"``: every tensor of the model, plus ``model.23.anchors`` (the published anchors
          in grid units, which the file does not hold), so ``model.load_state_dict(ours)`` is strict;
          ``nc`` comes from the head's output channels. Layout ``"backbone"``: the keys of layers 0-5
          only, ``nc`` is ``None``; load with ``strict=False`` into any full-width YOLOv4 (any ``nc``)
          as pretrained initialisation.
        - ``report``: :class:`Yolov4ImportReport` (``str(report)`` is one log line); keys that are not
          part of the layout are left out and listed in ``report.ignored``.
        - The published BatchNorms use eps 1e-5 (PyTorch's default), ``DetectionModel`` YOLOv5's 1e-3: after
          loading ``ours``, call :func:`set_batchnorm` with :data:`PUBLISHED_BN_EPS` and
          :data:`PUBLISHED_BN_MOMENTUM`, or use :func:`load_yolov4_weights`, which converts, checks the
          model's shapes, loads, sets the BatchNorms and logs the report in one call.

    Raises:
        CheckpointError: ``sd`` is not a YOLOv4 layout; a key of the layout is missing (message names
            the key and the shape it should have); a tensor has the wrong shape (names the key, its
            shape and the expected one). Up to five such problems are listed.
    """
    layout = is_yolov4_state_dict(sd)
    if layout is None:
        raise CheckpointError(
            f"{source}: not a published YOLOv4 state_dict (expected backbone.stages.*, make_five_conv*, "
            "yolo_head* keys, or conv1.* and stages.* for the backbone-only file)"
        )
    sd = _strip_module_prefix(sd)
    nc = _nc_from_head(sd, source) if layout == "full" else None
    table = yolov4_key_table(layout, nc or 80)
    problems, ours = [], {}
    for entry in table:
        tensor = sd.get(entry.published)
        if tensor is None:
            problems.append(f"key '{entry.published}' is missing (expected shape {entry.shape})")
        elif not torch.is_tensor(tensor) or tuple(tensor.shape) != entry.shape:
            got = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
            problems.append(f"key '{entry.published}' has shape {got}, expected {entry.shape}")
        else:
            ours[entry.ours] = tensor
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        what = f"YOLOv4 {layout}" + (f" with nc={nc}" if nc is not None else "")
        raise CheckpointError(f"{source}: does not fit {what}: " + "; ".join(problems[:5]) + more)
    known = {entry.published for entry in table}
    ignored = [k for k in sd if k not in known]
    added = []
    if layout == "full":
        key = f"model.{LAYERS['head']}.anchors"
        ours[key] = published_anchors()
        added.append(key)
    tensors = sum(t.numel() for t in ours.values())
    report = Yolov4ImportReport(layout, nc, len(table), tensors, ignored, added)
    return ours, nc, report


def load_yolov4_weights(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str = "<state_dict>"):
    """Convert ``sd`` (either layout) and load it into ``model`` (a YOLOv4 ``DetectionModel``); log the report.

    Layout ``"full"`` loads strictly and requires ``model.nc`` to equal the file's; ``"backbone"`` loads
    layers 0-5. Shapes are checked against ``model`` first. Every BatchNorm of ``model`` is set to the
    published eps and momentum (:data:`PUBLISHED_BN_EPS`, :data:`PUBLISHED_BN_MOMENTUM`): the file's
    running statistics are only right with eps 1e-5 (YOLOv5's 1e-3 moves the outputs by whole units).
    Returns the :class:`Yolov4ImportReport`.

    Raises:
        CheckpointError: as :func:`convert_yolov4_state_dict`, or when the model's keys or shapes differ
            (naming the key and both shapes).
    """
    ours, nc, report = convert_yolov4_state_dict(sd, source)
    target = model.state_dict()
    if nc is not None and getattr(model, "nc", nc) != nc:
        raise CheckpointError(f"{source}: the file has nc={nc}, the model nc={model.nc}; build it with nc={nc}")
    for key, tensor in ours.items():
        if key not in target:
            raise CheckpointError(f"{source}: key '{key}' (shape {tuple(tensor.shape)}) is not in the model")
        if target[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: key '{key}' has shape {tuple(tensor.shape)} in the file and "
                f"{tuple(target[key].shape)} in the model"
            )
    model.load_state_dict(ours, strict=report.layout == "full")
    set_batchnorm(model, PUBLISHED_BN_EPS, PUBLISHED_BN_MOMENTUM)
    LOGGER.info("%s: %s", source, report)
    return report


def set_batchnorm(model: torch.nn.Module, eps: float, momentum: float) -> None:
    """Set ``eps`` and ``momentum`` of every ``BatchNorm2d`` in ``model`` (no parameter changes)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps, m.momentum = eps, momentum
