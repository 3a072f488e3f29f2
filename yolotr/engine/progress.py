"""Training progress without host synchronisations: loss items summed on the device, read at intervals."""

from __future__ import annotations

import torch

LOG_EVERY = 10  # batches between two reads of the running loss (the progress bar's postfix)


class LossProgress:
    """The running mean of an epoch's loss items, kept on the training device.

    ``add`` is device-only (a batch whose items are not finite is left out, as its step is skipped);
    ``formatted`` and ``mean`` read the sums on the host, so call them at logging intervals only.

    Args:
        n: number of loss items (``loss_fn.names``).
        device: where the items live.
        resumed: the :meth:`state_dict` of this epoch's progress that a step checkpoint saved, so that a resumed
            epoch's mean covers its batches before the resume too (the same sums in the same order).
    """

    def __init__(self, n: int, device: torch.device, resumed: dict | None = None):
        self.total = torch.zeros(n, device=device)
        self.count = torch.zeros((), device=device)
        self.last: torch.Tensor | None = None  # the last batch's items (the package's trainer.loss_items)
        if resumed is not None:
            self.total.copy_(resumed["total"])
            self.count.copy_(resumed["count"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums so far, on the CPU (a host read: at checkpoints only)."""
        return {"total": self.total.cpu(), "count": self.count.cpu()}

    def add(self, items: torch.Tensor) -> None:
        """Add one batch's ``(n,)`` loss items."""
        items = self.last = items.detach().float()
        finite = torch.isfinite(items).all()
        self.total += torch.where(finite, items, torch.zeros_like(items))
        self.count += finite

    def mean(self) -> torch.Tensor:
        """``(n,)`` float32 on the CPU: the mean over the finite batches so far (NaN before any: an epoch whose
        every step was skipped has no loss, and results.csv must not show it as a perfect one)."""
        return (self.total / self.count).cpu()

    def formatted(self) -> list[str]:
        return [f"{v:.4f}" for v in self.mean().tolist()]
