"""glibc's heap in a CPU training process: large buffers straight from the kernel, and back.

PyTorch allocates CPU tensors with ``malloc``. glibc serves a request of at least its *mmap
threshold* with a fresh ``mmap`` (returned to the kernel on ``free``), anything smaller from its
heap, which keeps freed memory for reuse. The threshold starts at 128 KiB and glibc raises it to the
size of each large block freed (up to 32 MiB), so after the first training step every activation
and gradient (3-26 MiB at yolov5n, batch 16, 320 x 320) comes from the heap, whose free blocks the
next step cannot always reuse: measured on the raccoon fine-tune (``bench/train.py``), the process
held 250-400 MiB more than its live tensors, growing from epoch to epoch.

:func:`set_mmap_threshold` fixes the threshold (which also stops glibc from moving it): blocks of
that size and larger are mapped and unmapped per use. At 4 MiB the peak resident size of that
fine-tune fell by 60-120 MiB (280 MiB for the process and its loader workers) at about the same
speed; much lower thresholds cost speed (page faults on every step: +30% at 1 MiB). It changes the
whole process's allocator (nothing else), lasts for the process's lifetime, and does nothing where
the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys

LOGGER = logging.getLogger("yolotr")

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's <malloc.h>
MAX_THRESHOLD = 32 * 2**20  # glibc's HEAP_MAX / 2 on 64-bit: mallopt refuses larger values


def set_mmap_threshold(megabytes: float) -> bool:
    """Fix glibc's mmap threshold at ``megabytes`` MiB; ``0`` leaves glibc's default. Returns whether set."""
    if megabytes <= 0 or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    value = min(int(megabytes * 2**20), MAX_THRESHOLD)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, value))
    except (OSError, AttributeError):  # no loadable libc, or one without mallopt
        return False
    LOGGER.debug("glibc mmap threshold %s at %d bytes", "set" if done else "not set", value)
    return done
