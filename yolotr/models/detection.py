"""DetectionModel: a YOLO detector built from a YOLOv5-format YAML.

Differs from YOLOv5's ``DetectionModel`` in that it never ``eval``-s the YAML, caches decode grids
per shape, and reports problems as :class:`~yolotr.errors.ConfigError` naming file, layer and row.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from yolotr.errors import CheckpointError, ConfigError
from yolotr.models.model_names import missing_weights_message, unknown_model_message
from yolotr.nn.builder import BuiltLayers, build_layers
from yolotr.nn.conv import Conv, fuse_conv_and_bn
from yolotr.nn.head import Detect
from yolotr.nn.head_af import AnchorFreeDetect
from yolotr.nn.head_detr import RTDETRDecoder
from yolotr.nn.yaml_checks import positive_number
from yolotr.yaml_loading import read_yaml_file

LOGGER = logging.getLogger("yolotr")
CFG_DIR = Path(__file__).resolve().parent.parent / "cfg" / "models"


# the scale letter after the version: any letter before -, _, . or the end (yolov10b, yolov8s_c3tr), and the
# package's n/s/m/l/x before anything (yolov8sc3tr, as its guess_model_scale reads it); not p in yolov8p2
SCALE_IN_NAME = re.compile(r"yolo(?:e-)?v?\d+(?:([a-z])(?=[-_.]|$)|([nslmx]))")
UNIFIED_NAME = re.compile(r"(\d+)([a-z])(-.+)?$")


def _existing_yaml(path: Path) -> Path | None:
    """``path`` itself, or the shipped config of that name (with or without ``.yaml``)."""
    if path.is_file():
        return path
    for candidate in (CFG_DIR / path.name, CFG_DIR / f"{path.name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def resolve_model_yaml(name: str | Path) -> tuple[Path, str]:
    """The YAML file behind a model name and the scale letter the name carries.

    As the ``ultralytics`` package does, a name with a scale letter resolves to the unified YAML:
    ``yolov8s.yaml`` -> ``yolov8.yaml`` at scale ``s``, ``yolov8s-p2.yaml`` -> ``yolov8-p2.yaml`` at
    ``s``, for paths and for shipped names. A file that exists under the given name wins
    (``yolov5s.yaml`` is a YOLOv5 YAML of its own).
    """
    path = Path(name)
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    found = _existing_yaml(path)
    if found is not None:
        match = SCALE_IN_NAME.search(stem)
        return found, (match.group(1) or match.group(2)) if match else ""
    match = UNIFIED_NAME.search(stem)
    if match and SCALE_IN_NAME.search(stem):
        unified = UNIFIED_NAME.sub(r"\1\3", stem) + (path.suffix or ".yaml")
        found = _existing_yaml(path.with_name(unified))
        if found is not None:
            return found, match.group(2)
    if path.suffix.lower() in (".pt", ".pth", ".ckpt"):  # a checkpoint that is not there, not a YAML
        raise CheckpointError(missing_weights_message(name))
    raise ConfigError(unknown_model_message(name))


def find_model_yaml(name: str | Path) -> Path:
    """A path to a YAML file, or the file name of a shipped config (``"yolov5s.yaml"``, ``"yolov5s"``)."""
    return resolve_model_yaml(name)[0]


def load_model_yaml(name: str | Path) -> dict:
    """Read and parse a model YAML; ``ConfigError`` with the line number when it is malformed.

    A scale letter in the name (``yolov8s.yaml``) is stored as the dict's ``scale``; a YAML with
    ``scales`` that does not have that letter is a ``ConfigError``.
    """
    path, scale = resolve_model_yaml(name)
    cfg = read_yaml_file(path, "model YAML", ConfigError)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a model YAML must be a mapping with nc, anchors, backbone and head")
    scales = cfg.get("scales")
    if scale and isinstance(scales, dict):
        if scale not in scales:
            raise ConfigError(f"{name}: unknown scale {scale!r}; {path.name} has scales {', '.join(map(str, scales))}")
        cfg["scale"] = scale
    cfg.setdefault("yaml_file", Path(name).name if scale else path.name)
    return cfg


def refuse_fused(model) -> None:
    """Refuse to train a model after :meth:`DetectionModel.fuse` (its BatchNorm folded into the convolutions): it
    trained without BatchNorm and its checkpoints did not load into the unfused architecture.

    Raises:
        ConfigError: ``model`` is fused.
    """
    if getattr(model, "is_fused", False):
        raise ConfigError(
            "the model is fused (BatchNorm folded into its convolutions, for inference) and cannot train; "
            "train it before fuse(), or load it again (YOLO('...')) and train that"
        )


class _HeadReached(Exception):
    """Raised by a forward pre-hook to stop a measuring pass before the head runs."""


def check_anchor_order(head: Detect) -> None:
    """Flip the anchors when their mean area does not grow with the stride (as YOLOv5 does), and say so."""
    area = head.anchors.prod(-1).mean(-1).view(-1)
    da, ds = area[-1] - area[0], head.stride[-1] - head.stride[0]
    if da and da.sign() != ds.sign():
        LOGGER.warning("anchor order does not follow the stride order; reversing the anchors")
        head.anchors[:] = head.anchors.flip(0)


def initialize_weights(model: nn.Module, eps: float = 1e-3, momentum: float = 0.03) -> None:
    """BatchNorm settings: YOLOv5's eps 1e-3 and momentum 0.03 unless the YAML's ``bn_eps`` and
    ``bn_momentum`` say otherwise (the published YOLOv4 uses PyTorch's 1e-5 and 0.1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
            m.momentum = momentum


class DetectionModel(nn.Module):
    """A YOLO detector: ``(B, 3, H, W)`` float in ``[0, 1]`` -> Detect head output.

    Args:
        cfg: a model YAML path, a shipped config name or an already-parsed dict.
        ch: input channels.
        nc: number of classes, overriding the YAML's ``nc``.
        anchors: anchors overriding the YAML's.
    """

    def __init__(self, cfg: str | Path | dict = "yolov5s.yaml", ch: int = 3, nc: int | None = None, anchors=None):
        super().__init__()
        if isinstance(cfg, dict):
            self.yaml = copy.deepcopy(cfg)
        elif isinstance(cfg, str | os.PathLike):
            self.yaml = load_model_yaml(cfg)
        else:
            raise ConfigError(f"a model is built from a YAML name or path or a dict of its keys, not {cfg!r}")
        source = str(self.yaml.get("yaml_file", "<dict>"))
        if nc is not None and nc != self.yaml.get("nc"):
            LOGGER.info("overriding model.yaml nc=%s with nc=%d", self.yaml.get("nc"), nc)  # Ultralytics' words
            self.yaml["nc"] = nc
        if anchors is not None:
            self.yaml["anchors"] = anchors
        if isinstance(self.yaml.get("anchors"), int) and self.yaml["anchors"] > 0:
            LOGGER.warning(
                "%s: 'anchors: %d' gives placeholder anchors; training computes them from the data (AutoAnchor)",
                source,
                self.yaml["anchors"],
            )
        built: BuiltLayers = build_layers(self.yaml, ch, source)
        self.model, self.save, self.rows = built.layers, built.save, built.rows
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.imgsz: int | None = None  # the training image size, set by a loaded checkpoint (predict/export default)
        self.train_data = None  # the dataset it was trained on (YAML path, 'shapes' or dict), set likewise
        self.single_cls = False  # trained with single_cls (validate() then reads its data as one class), likewise
        self.stride = torch.tensor([32.0])
        eps = positive_number(self.yaml.get("bn_eps", 1e-3), "'bn_eps'", source)
        initialize_weights(self, eps, positive_number(self.yaml.get("bn_momentum", 0.03), "'bn_momentum'", source, 1.0))
        head = self.model[-1]
        if isinstance(head, Detect | AnchorFreeDetect):
            self._init_head(head, ch, source)
        elif isinstance(head, RTDETRDecoder):
            self._init_detr_head(head, ch, source)

    @property
    def nc(self) -> int:
        return int(self.yaml["nc"])

    def _init_head(self, head: Detect | AnchorFreeDetect, ch: int, source: str) -> None:
        """Measure strides with a 256x256 eval-mode forward (BatchNorm statistics untouched), order and
        scale anchors (anchor-based heads), set the bias priors."""
        s = 256
        self.eval()
        head.train()
        with torch.no_grad(), self._failing_layer_named(source, s):
            outputs = self._forward_layers(torch.zeros(1, ch, s, s))
        self.train()
        if isinstance(outputs, dict):  # an end-to-end head's two branches: the one-to-many maps give the strides
            outputs = outputs["one2many"]
        rows = [o.shape[2] for o in outputs]  # (B, na, H, W, no) and (B, C, H, W) both have H at 2
        head.stride.copy_(torch.tensor([s / h for h in rows], dtype=head.stride.dtype))
        if isinstance(head, Detect):
            check_anchor_order(head)
            head.anchors /= head.stride.view(-1, 1, 1)
        self.stride = head.stride.clone()
        head.initialize_biases()
        head.reset_grids()

    def _init_detr_head(self, head: RTDETRDecoder, ch: int, source: str) -> None:
        """Measure the decoder's input strides with an eval-mode pass through the layers before it (the decoder
        itself does not run): 32x32, or 256x256 (the size the other heads are measured at) where a level below
        P5 (a P6 model) does not fit 32x32. ``self.stride`` stays the largest one, ``[32]``, as the package holds it."""
        for s in (32, 256):
            seen: list[torch.Tensor] = []

            def stop(module, inputs, seen=seen):
                seen.extend(inputs[0])
                raise _HeadReached

            handle = head.register_forward_pre_hook(stop)
            self.eval()
            try:
                with torch.no_grad(), self._failing_layer_named(source, s):
                    self._forward_layers(torch.zeros(1, ch, s, s))
            except _HeadReached:
                break
            except ConfigError:
                if s == 256:
                    raise
            finally:
                handle.remove()
                self.train()
        head.stride.copy_(torch.tensor([s / level.shape[2] for level in seen], dtype=head.stride.dtype))
        self.stride = head.stride.max().view(1).clone()

    @contextmanager
    def _failing_layer_named(self, source: str, size: int):
        """Turn an error of the measuring forward into a :class:`ConfigError` naming the layer it came from and
        that layer's YAML row (a row whose arguments build but whose inputs do not fit: a ``Concat`` of unequal
        sizes, a ``Conv`` given two inputs, an ``nn.Upsample`` without a size)."""
        entered: list[int] = []
        handles = [m.register_forward_pre_hook(lambda m, _: entered.append(m.i)) for m in self.model]
        try:
            yield
        except _HeadReached:
            raise
        except Exception as e:
            if not entered:
                raise
            i = entered[-1]
            row = (self.yaml["backbone"] + self.yaml["head"])[i]
            reason = (str(e).strip().splitlines() or [""])[0].rstrip(":")  # torch's signature listings run on for lines
            raise ConfigError(
                f"{source}: layer {i} {row!r} does not fit its input(s) on a {size}x{size} image "
                f"({type(e).__name__}: {reason})"
            ) from None
        finally:
            for handle in handles:
                handle.remove()

    def _forward_layers(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        outputs: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x, targets) if targets is not None and m is self.model[-1] else m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """Training: list of raw heads ``(B, na, H_i, W_i, no)``; eval: ``(decoded (B, N, no), raw)``.

        ``targets`` ``(N, 6)`` go to a head that trains with them (``wants_targets``: RT-DETR's denoising
        queries); others take none."""
        if targets is not None and not getattr(self.model[-1], "wants_targets", False):
            targets = None
        if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
            return self._forward_layers(x, targets)
        try:
            return self._forward_layers(x, targets)
        except (RuntimeError, ValueError) as e:
            self._explain_failed_forward(x, e)
            raise

    def _explain_failed_forward(self, x, error: Exception) -> None:
        """Raise an error naming the size when a forward failed on an image whose sides are not multiples of
        the largest stride (``ValueError``: the levels' maps then differ by one where they are concatenated), or
        in training on one image whose coarsest level is a single pixel (``ConfigError``: BatchNorm needs more
        than one value per channel; the package fails there too)."""
        stride = int(self.stride.max()) if isinstance(self.stride, torch.Tensor) else 32
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or stride < 1:
            return
        height, width = x.shape[2:]
        if self.training and x.shape[0] == 1 and height * width <= stride * stride and "per channel" in str(error):
            raise ConfigError(
                f"training on a batch of one {height}x{width} image: the stride-{stride} level is one pixel, and "
                "BatchNorm needs more than one value per channel; train at imgsz of at least "
                f"{2 * stride} or with batches of at least 2 images (an epoch's last batch holds the images left "
                "over: set batch so that it is not 1)"
            ) from error
        if height % stride or width % stride:
            fit = tuple(-(-side // stride) * stride for side in (height, width))
            raise ValueError(
                f"input of {height}x{width}: both sides must be multiples of the model's largest stride {stride} "
                f"(e.g. {fit[0]}x{fit[1]}, padded); YOLO.predict() letterboxes images to such a size"
            ) from error

    @torch.no_grad()
    def fuse(self) -> DetectionModel:
        """Re-parameterize for inference (eval use only): blocks with a ``fuse()`` of their own (``RepConv``,
        ``RepVGGDW``, ``Conv2``) fold their branches into one convolution, then every ``Conv``'s BatchNorm is folded
        into its convolution. A fused model predicts and exports; it does not train (:attr:`is_fused`). Returns
        ``self``."""
        for m in list(self.modules()):
            if m is not self and callable(getattr(m, "fuse", None)):
                m.fuse()
        for m in self.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return self

    @property
    def is_fused(self) -> bool:
        """True after :meth:`fuse`: a ``Conv`` has no BatchNorm left (training it would train without one)."""
        return any(isinstance(m, Conv) and not hasattr(m, "bn") for m in self.modules())

    @property
    def fitness_rule(self) -> str:
        """Whose model-selection score this model's runs keep (a key of
        :data:`yolotr.metrics.detection.FITNESS_RULES`): ``yolov5`` for YOLOv5's and YOLOv4's anchor-based
        ``Detect``, ``ultralytics`` for the package's families."""
        return "yolov5" if isinstance(self.model[-1], Detect) else "ultralytics"

    def info(self, imgsz: int = 640, verbose: bool = True, detailed: bool = False) -> dict:
        """Layer table, parameter count and GFLOPs at ``imgsz``; logs the table when ``verbose``, after a row per
        parameter tensor when ``detailed`` (:func:`~yolotr.models.summary.model_summary`)."""
        from yolotr.models.summary import model_summary

        return model_summary(self, imgsz, verbose, detailed)
