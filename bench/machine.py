"""What a bench ran on: the CPU model and core count, for the header of its table.

Ratios against a reference move with the processor (measured: yolov5s end to end at 640 read 0.75x
YOLOv5 on an AMD Zen 4 and 0.49x on an Intel Ice Lake Xeon, same code), so every table names it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``'s ``model name``; elsewhere ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line() -> str:
    """``'<CPU model>, <n> cores'``: the machine a table was measured on."""
    return f"{cpu_model()}, {os.cpu_count()} cores"
