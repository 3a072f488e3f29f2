"""Forward latency on CUDA: yolotr's CUDA-graph backend (and ``torch.compile(mode="reduce-overhead")``)
against the references' eager fused models, same process, turns alternating.

For each model, dtype (fp32, fp16) and batch (1, 32) at 640 x 640, the median milliseconds of a forward of
a ready ``(B, 3, 640, 640)`` CUDA tensor (synchronised before and after) for:

- ``graph``: ``yolotr.engine.cuda_graph.CudaGraphBackend`` (what ``YOLO.predict`` uses on CUDA);
- ``compile``: the same fused channels_last model under ``torch.compile(mode="reduce-overhead")``
  (``--compile``; minutes of compiling per shape, so only on request);
- ``eager``: yolotr's fused channels_last model without a graph;
- the reference: the official YOLOv5 ``Model`` (yolov5n/s) or the ``ultralytics`` package's
  ``DetectionModel`` (yolov8n/s, yolo11n/s), fused, eval, eager (``bench/latency.py``'s ``official_model``).

Goal (issue 25): graph / reference <= 0.5 at batch 1 and <= 0.9 at batch 32. Outputs of the graph are
checked against eager within fp16 tolerance by the backend itself on first use of a shape.

    python bench/gpu_predict.py                         # CUDA
    python bench/gpu_predict.py --models yolov8n --batches 1 --runs 50 --compile
    python bench/gpu_predict.py --dry-run               # CPU, eager only, tiny sizes: the code path
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import official_model, reference_label  # noqa: E402

from yolotr.models.detection import DetectionModel  # noqa: E402

MODELS = ("yolov5n", "yolov5s", "yolov8n", "yolov8s", "yolo11n", "yolo11s")


def _timed(fn, x: torch.Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    t = time.perf_counter()
    fn(x)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - t) * 1000


def turns(runners: dict, x: torch.Tensor, runs: int) -> dict[str, float]:
    """Median ms per runner; runners take turns, the order reversing every run."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    names = list(runners)
    with torch.no_grad():
        for name in names:  # warm-up (and the graph's capture)
            for _ in range(3):
                runners[name](x)
        for run in range(runs):
            for name in names if run % 2 == 0 else names[::-1]:
                times[name].append(_timed(runners[name], x))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(
    models=MODELS, dtypes=("fp32", "fp16"), batches=(1, 32), size=640, runs=30, device="cuda", compile_too=False
) -> list[dict]:
    """One dict per (model, dtype, batch): milliseconds of each runner and the ratios to the reference."""
    from yolotr.engine.cuda_graph import CudaGraphBackend
    from yolotr.engine.fast_backend import TorchBackend

    device = torch.device(device)
    rows = []
    for name in models:
        reference = official_model(name)
        base = DetectionModel(f"{name}.yaml").eval()
        for label in dtypes:
            dtype = {"fp32": torch.float32, "fp16": torch.float16 if device.type == "cuda" else torch.bfloat16}[label]
            model = copy.deepcopy(base).to(device, dtype)
            eager = TorchBackend(model)
            runners = {"eager": eager}
            if device.type == "cuda":
                runners["graph"] = CudaGraphBackend(model)
                if compile_too:
                    runners["compile"] = torch.compile(eager.model, mode="reduce-overhead")
            if reference is not None:
                runners["reference"] = copy.deepcopy(reference).to(device, dtype)
            for batch in batches:
                x = torch.rand(batch, 3, size, size, device=device, dtype=dtype)
                ms = turns(runners, x.contiguous(memory_format=torch.channels_last), runs)
                row = {"model": name, "dtype": label, "batch": batch, "ref": reference_label(name), **ms}
                if "graph" in runners:  # a shape whose capture or check failed ran eagerly (its warning: the log)
                    row["graph_fell_back"] = runners["graph"].graphs.get((tuple(x.shape), x.dtype), 0) is None
                if "reference" in ms:
                    for k in ("graph", "compile", "eager"):
                        if k in ms:
                            row[f"{k}/ref"] = ms[k] / ms["reference"]
                rows.append(row)
            del runners, eager, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [
        "| model | dtype | batch | reference | ref ms | eager ms | graph ms | compile ms | graph/ref | eager/ref |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:

        def cell(key, r=r, fmt="{:.2f}"):
            return fmt.format(r[key]) if key in r else "-"

        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['ref']} | {cell('reference')} | {cell('eager')} | "
            f"{cell('graph')} | {cell('compile')} | {cell('graph/ref')} | {cell('eager/ref')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="also torch.compile(mode='reduce-overhead')")
    parser.add_argument("--dry-run", action="store_true", help="CPU, eager and reference only, 64 px, batch 1-2")
    args = parser.parse_args()
    if args.dry_run:
        rows = measure(args.models[:2], ("fp32",), (1, 2), 64, 3, "cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: use --dry-run on the CPU")
        torch.backends.cudnn.benchmark = True
        rows = measure(args.models, args.dtypes, args.batches, args.size, args.runs, "cuda", args.compile)
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
