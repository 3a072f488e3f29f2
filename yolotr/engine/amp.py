"""The mixed-precision policy, in one place the trainer and the NaN guard both read.

Two parts:

- :func:`resolve_amp` turns the ``amp`` setting (``auto | fp16 | bf16 | false``, or ``true`` for the device's
  usual choice) into an :class:`AmpPolicy`: the autocast dtype and whether the loss is scaled.
- :class:`StepGate` wraps ``torch.amp.GradScaler`` and decides, for every optimizer step, whether the step
  runs, and when it does not, whether that was the scaler calibrating (an *overflow*: silent, counted) or a
  *fault* for the guard.

How a step that did not run is classified (the rule the guard relies on):

1. the loss of a batch in the step's window was not finite: a fault, whatever the precision;
2. fp16 with loss scaling, a finite loss, non-finite gradients, and a loss scale above :data:`SCALE_FLOOR`:
   an overflow of the *scaled* fp16 gradients. GradScaler skips the step and halves the scale, as it does
   in YOLOv5 and Ultralytics; it is logged at debug level and counted, and the guard never sees it;
3. non-finite gradients without loss scaling (fp32, bf16), or with the scale already at the floor: a fault.

Why the floor is 1: a loss scale exists to lift small fp16 gradients out of underflow; at a scale of 1 the
gradients are the true ones, so if they are still not finite, no scale lowers them into range: it is a
NaN from a module or a true gradient beyond fp16's 65504, and the guard must act. Calibration never goes
near it (the scale settles at 2^10 to 2^16 on every shipped config: docs/troubleshooting.md), and a real
fault walks the scale down to it in 16 skipped steps from 65536, during which the weights do not change.

Unlike a bare GradScaler, the gate tests the gradients at every precision. With loss scaling, GradScaler
does it (whether the step ran is read from an optimizer step hook). Without, the gate reads whether the
gradients' total norm is finite (one non-finite entry makes it so; the trainer passes the norm it clips
with), then steps the optimizer itself: no unscaling pass over the gradients and no scaler bookkeeping,
1 ms a step of yolov8n on a 2-core Xeon, and the optimizer may be a fused one. Either way a step costs one
host synchronisation; nothing else reads a tensor on the host unless a step was skipped.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass

import torch

from yolotr.engine.cpu_fp16_conv import Fp16ConvolutionsInFloat32
from yolotr.errors import ConfigError

LOGGER = logging.getLogger("yolotr")

AMP_CHOICES = ("auto", "fp16", "bf16", "false", "true")
# Below this loss scale, non-finite gradients are a fault, not an overflow (see the module docstring).
SCALE_FLOOR = 1.0
# GradScaler's starting scale, its own default and YOLOv5's and Ultralytics'. bench/amp_scale.py (one batch, 64 px)
# found the first finite scale at 2^14 on the anchor-free and Swin configs (2^16 on yolov5n): a lower start
# would save 1-6 calibration skips, which fall in the warmup where the weights' lr is near 0 and cost nothing,
# while every halving below that point zeroes more small fp16 gradients (yolov8n: 2.8% of the non-zero
# float32 entries at 2^14, 5.0% at 2^12, 6.3% at 2^10) for the 2,000 steps each doubling takes. So: 2^16.
DEFAULT_INIT_SCALE = 2.0**16


@dataclass(frozen=True)
class AmpPolicy:
    """What ``amp`` means on one device.

    Attributes:
        mode: ``"off"``, ``"fp16"`` or ``"bf16"``.
        device_type: ``"cpu"`` or ``"cuda"`` (what ``torch.autocast`` takes).
    """

    mode: str
    device_type: str

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, None without AMP."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.mode)

    @property
    def scaled(self) -> bool:
        """Whether the loss is scaled: fp16 only (bf16 has fp32's exponent range)."""
        return self.mode == "fp16"

    def autocast(self) -> AbstractContextManager:
        """``torch.autocast`` in this policy's dtype (a no-op context without AMP). fp16 on the CPU also computes
        its convolutions in float32 kernels on float16-rounded operands (:mod:`yolotr.engine.cpu_fp16_conv`:
        the same float16 results and overflows, 100x faster than the CPU's float16 convolution backward)."""
        autocast = torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.enabled)
        if self.mode != "fp16" or self.device_type != "cpu":
            return autocast
        stack = ExitStack()
        stack.enter_context(autocast)
        stack.enter_context(Fp16ConvolutionsInFloat32())
        return stack

    def __str__(self) -> str:
        return {"off": "off", "fp16": "fp16 autocast + loss scaling", "bf16": "bf16 autocast"}[self.mode]


def check_amp(value, source: str = "arguments") -> str:
    """The ``amp`` setting as one of :data:`AMP_CHOICES` (``False``/``"off"`` -> ``"false"``).

    Raises:
        ConfigError: for any other value, naming ``source`` and the choices.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower() if isinstance(value, str) else None
    aliases = {"off": "false", "no": "false", "none": "false", "on": "true", "yes": "true", "float16": "fp16",
               "half": "fp16", "bfloat16": "bf16"}  # fmt: skip
    text = aliases.get(text, text)
    if text not in AMP_CHOICES:
        raise ConfigError(f"{source}: setting 'amp' must be one of auto, fp16, bf16, false (or true), got {value!r}")
    return text


def resolve_amp(value, device: torch.device) -> AmpPolicy:
    """The policy for setting ``value`` on ``device``.

    ``auto``: fp16 with loss scaling on CUDA, off elsewhere. ``true``: fp16 on CUDA, bf16 elsewhere (the CPU's
    fast autocast dtype). ``fp16`` and ``bf16`` mean what they say on every device; ``false`` turns AMP off.

    Raises:
        ConfigError: for an unknown value, or bf16 on a CUDA device that cannot run it.
    """
    choice = check_amp(value)
    cuda = device.type == "cuda"
    mode = {
        "auto": "fp16" if cuda else "off",
        "true": "fp16" if cuda else "bf16",
        "false": "off",
    }.get(choice, choice)
    if mode == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"amp: bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    return AmpPolicy(mode, device.type)


class StepGate:
    """Runs or skips each optimizer step and says why a skipped one was skipped.

    Use, per optimizer step: ``gate.scale(loss).backward()`` for every batch, then ``gate.unscale_(opt)``
    (gradients in true units, ready to clip), then ``ran = gate.step(opt)``; when ``ran`` is False,
    ``gate.is_overflow(loss_was_finite)`` tells an fp16 overflow from a fault; then ``gate.update()``.

    Args:
        policy: the AMP policy; loss scaling only when ``policy.scaled``.
        init_scale: the starting loss scale of a scaled gate.
    """

    def __init__(self, policy: AmpPolicy, init_scale: float = DEFAULT_INIT_SCALE):
        self.policy = policy
        self.scaled = policy.scaled
        self.scaler = torch.amp.GradScaler(policy.device_type, init_scale=init_scale) if self.scaled else None
        self.overflows = 0  # steps skipped as fp16 overflows, since the start of training
        self._ran = False
        self._hooked: set[int] = set()

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current scale (``loss`` itself without loss scaling)."""
        return self.scaler.scale(loss) if self.scaled else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale and record, on the device, whether any is not finite (nothing to
        do without loss scaling: :meth:`step` tests the gradients)."""
        if not self.scaled:
            return
        if id(optimizer) not in self._hooked:
            optimizer.register_step_post_hook(self._on_step)
            self._hooked.add(id(optimizer))
        self.scaler.unscale_(optimizer)

    def _on_step(self, optimizer, args, kwargs) -> None:
        self._ran = True

    def step(self, optimizer: torch.optim.Optimizer, grad_norm: torch.Tensor | None = None) -> bool:
        """Step ``optimizer`` unless a gradient was not finite; whether it stepped (one host sync).

        ``grad_norm``: the gradients' total norm, where the caller has it (for clipping); without loss
        scaling, the test reads it instead of computing it again."""
        if not self.scaled:
            if grad_norm is None:
                grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
                grad_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
            if not torch.isfinite(grad_norm).item():
                return False
            optimizer.step()
            return True
        self._ran = False
        self.scaler.step(optimizer)
        return self._ran

    def is_overflow(self, loss_finite: bool) -> bool:
        """For a skipped step: True when it is the scaler's calibration, False when it is a fault."""
        return self.scaled and loss_finite and self.scaler.get_scale() > SCALE_FLOOR

    def update(self, overflow: bool = False) -> None:
        """After every step, run or skipped: the scaler's bookkeeping (halve after a skip, grow after a
        run of good steps); an unscaled gate stays at 1."""
        if overflow:
            self.overflows += 1
            LOGGER.debug("fp16 gradients overflowed at loss scale %g; GradScaler skipped the step", self.get_scale())
        if self.scaled:
            self.scaler.update()

    def get_scale(self) -> float:
        """The current loss scale (a host sync: for logging intervals and skipped steps only)."""
        return self.scaler.get_scale() if self.scaled else 1.0

    def state_dict(self) -> dict:
        scaler = self.scaler.state_dict() if self.scaled else {}
        return {"mode": self.policy.mode, "scaler": scaler, "overflows": self.overflows}

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler's state (a state of another AMP mode, or from before the gate, is ignored).

        The ``overflows`` count is not restored: a roll back keeps counting; a resume sets it itself.
        """
        if self.scaled and state and state.get("mode") == self.policy.mode and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
