"""A counter of the ops that make an accelerator's stream wait for the host, recorded on the CPU."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose result size or value the host needs before it can go on (each a stream synchronisation on CUDA)
SYNCING = ("nonzero", "_local_scalar_dense", "masked_select", "masked_scatter", "is_nonzero", "aten.equal.", "unique")


class DeviceSyncs(TorchDispatchMode):
    """Records every op that synchronises an accelerator: ``nonzero``, scalar reads (``item``, ``bool``,
    ``float``), ``masked_select``, ``unique``, boolean-mask indexing and ``repeat_interleave`` without an
    ``output_size``. ``on_read``, when given, is called with each op's name (e.g. to attribute it to a step)."""

    def __init__(self, on_read=None):
        super().__init__()
        self.reads: list[str] = []
        self.on_read = on_read

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        kwargs = kwargs or {}
        bool_index = name.startswith(("aten.index.", "aten.index_put")) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())
        )
        sized = name.startswith("aten.repeat_interleave") and kwargs.get("output_size") is None
        if bool_index or sized or any(s in name for s in SYNCING):
            self.reads.append(name)
            if self.on_read is not None:
                self.on_read(name)
        return func(*args, **kwargs)
