"""Time and memory of yolotr's attention and wavelet blocks against literal references; prints a table.

Rows:
- Swin V2 layer (dim 128, 4 heads, window 8, 40x40 map, batch 8, shifted windows): ours (pad, roll and
  partition as one gather; in fp32 the attention with hand-written backwards that allocate the logits once,
  in bf16 SDPA; cached mask and bias; channels-last between layers) against the literal published maths
  (``tests/nn/swin_oracle.py``), forward + backward, fp32 and bf16 autocast.
- Haar transform and whole HWD block (batch 8, 64 -> 128 channels, 80x80): ours (the transform is a fixed
  depthwise stride-2 conv; the block folds it into its 1x1 Conv) against
  ``pytorch_wavelets.DWTForward(J=1, wave="haar", mode="zero")`` + concatenation (+ the same Conv).

Time is the median of ``--repeat`` forward + backward passes after warm-up, reference and ours timed in
alternation (a shared machine's changing load slows both alike). Memory is the peak allocated
on CUDA, and on CPU (Linux) the peak resident memory above the starting level during one forward +
backward, with glibc told to ``mmap`` every block over 64 KiB so that freed tensors leave RSS. Ratios are
reference / ours: above 1 means ours is faster or smaller.

    python bench/blocks.py [--device cpu|cuda] [--threads 2] [--repeat 5] [--blocks swin hwd] [--default-malloc]

The timings run under the same ``mmap`` setting, so they include the page faults of every large
allocation: a block that allocates less gains here more than under glibc's default caching.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import machine_line  # noqa: E402

from tests.nn.swin_oracle import oracle_layer  # noqa: E402
from yolotr.nn.conv import Conv  # noqa: E402
from yolotr.nn.swin import SwinV2Layer  # noqa: E402
from yolotr.nn.wavelet import HWD, HaarDWT  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


PAGE = 4096


def peak_rss_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Peak resident memory above the starting level during one forward + backward (sampled every 0.2 ms).

    Large blocks are ``mmap``-ed and returned on free (see :func:`main`), so RSS follows live tensors.
    """
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    step(fn)
    done.set()
    thread.join()
    return max(peak[0], _rss()) - base


def step(fn: Callable[[], torch.Tensor]) -> None:
    fn().float().square().mean().backward()


def peak_memory(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Peak memory of one forward + backward in MiB (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(fn)
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return peak_rss_bytes(fn) / 2**20


Block = Callable[[], torch.Tensor]


def measure_pair(
    ref: Block, ours: Block, device: torch.device, repeat: int, warmup: int = 2
) -> tuple[float, float, float, float]:
    """Median seconds of forward + backward of ``ref`` and ``ours``, then their peak memory in MiB.

    The two are timed in alternation (ref, ours, ours, ref, ...), so that a machine whose load changes
    during the run slows both alike.
    """
    for _ in range(warmup):
        step(ref)
        step(ours)
    sync(device)
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeat):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            step((ref, ours)[i])
            sync(device)
            times[i].append(time.perf_counter() - t0)
    t_ref, t_our = statistics.median(times[0]), statistics.median(times[1])
    return t_ref, t_our, peak_memory(ref, device), peak_memory(ours, device)


def time_swin_layer(
    dim: int, heads: int, side: int, batch: int, device: torch.device, repeat: int, half: torch.dtype
) -> tuple[float, list[tuple[str, float, float, float, float]]]:
    """Our ``SwinV2Layer`` (window 8, shift 4) against the literal published maths on a ``(batch, dim,
    side, side)`` map, forward + backward in fp32 and under ``half`` autocast.

    Returns the fp32 max abs difference of the outputs and, per precision, ``(label, ref s, ours s, ref
    MiB, ours MiB)`` from :func:`measure_pair`.
    """
    layer = SwinV2Layer(dim, heads, window=8, shift=4).to(device)
    x = torch.randn(batch, dim, side, side, device=device, requires_grad=True)

    def ours() -> torch.Tensor:
        return layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def oracle() -> torch.Tensor:
        return oracle_layer(layer, x)

    with torch.no_grad():
        err = (ours() - oracle()).abs().max().item()
    timings = []
    for dtype in (None, half):
        label = "fp32" if dtype is None else f"{'fp16' if dtype == torch.float16 else 'bf16'} autocast"

        def run(fn, dtype=dtype):
            if dtype is None:
                return fn()
            with torch.autocast(device.type, dtype=dtype):
                return fn()

        t_ref, t_our, m_ref, m_our = measure_pair(
            lambda fn=oracle, run=run: run(fn), lambda fn=ours, run=run: run(fn), device, repeat
        )
        timings.append((label, t_ref, t_our, m_ref, m_our))
    return err, timings


class PublishedHWD(nn.Module):
    """The published HWD: ``DWTForward`` bands concatenated, then the same 1x1 Conv."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        from pytorch_wavelets import DWTForward

        self.wt = DWTForward(J=1, wave="haar", mode="zero")
        self.conv = Conv(4 * c1, c2, 1, 1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        yl, yh = self.wt(x)
        return torch.cat([yl, yh[0][:, :, 0], yh[0][:, :, 1], yh[0][:, :, 2]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.transform(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--blocks", nargs="+", choices=("swin", "hwd"), default=["swin", "hwd"], help="rows to run")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="time under glibc's default caching of freed blocks (the CPU memory column then reads RSS growth only)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and sys.platform.startswith("linux") and not args.default_malloc:
        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: big blocks return to the OS on free
        global PAGE
        PAGE = os.sysconf("SC_PAGE_SIZE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")  # pytorch_wavelets imports the deprecated pkg_resources

    rows = []
    err = err_hwd = float("nan")
    if "swin" in args.blocks:
        err, timings = time_swin_layer(128, 4, 40, 8, device, args.repeat, torch.bfloat16)
        for label, t_ref, t_our, m_ref, m_our in timings:
            rows.append((f"Swin V2 layer, {label}", t_ref, t_our, m_ref, m_our))

    if "hwd" in args.blocks:
        published = PublishedHWD(64, 128).to(device)
        hwd = HWD(64, 128).to(device)
        hwd.conv.load_state_dict(published.conv.state_dict())
        dwt = HaarDWT(64).to(device)
        y = torch.randn(8, 64, 80, 80, device=device, requires_grad=True)
        with torch.no_grad():
            err_hwd = (hwd(y) - published(y)).abs().max().item()
        transform = measure_pair(lambda: published.transform(y), lambda: dwt(y), device, args.repeat)
        rows.append(("Haar transform", *transform))
        rows.append(("HWD block", *measure_pair(lambda: published(y), lambda: hwd(y), device, args.repeat)))

    print(f"device: {device} ({torch.get_num_threads()} threads; {machine_line()}), torch {torch.__version__}")
    print("Swin: dim 128, 4 heads, window 8, shift 4, 40x40, batch 8; HWD: 64 -> 128 channels, 80x80, batch 8")
    print(f"max |ours - reference| in fp32: Swin {err:.2e}, HWD {err_hwd:.2e}")
    mem_kind = "peak MiB"
    header = (
        f"{'block':<30}{'ref ms':>9}{'ours ms':>9}{'speed x':>9}"
        f"{'ref ' + mem_kind:>16}{'ours ' + mem_kind:>16}{'mem x':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, t_ref, t_our, m_ref, m_our in rows:
        print(
            f"{name:<30}{t_ref * 1e3:>9.1f}{t_our * 1e3:>9.1f}{t_ref / t_our:>9.2f}"
            f"{m_ref:>16.1f}{m_our:>16.1f}{m_ref / max(m_our, 1e-9):>7.2f}"
        )


if __name__ == "__main__":
    main()
