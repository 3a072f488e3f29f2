"""Forward latency of yolotr models against the official YOLOv5 model built from the same YAML.

fp32, batch 1, ``torch.set_num_threads(2)``, median of N runs after warm-up; both models fused
(conv+BN folded) and in eval mode; yolotr runs in ``channels_last`` as its predictor does (YOLOv5's
``detect.py`` does not), ``--contiguous`` compares the same layout. The reference column needs the official YOLOv5 code
(``pip install --no-deps yolov5 && pip install pandas requests psutil seaborn ultralytics``);
without it the column reads ``-``.

    python bench/latency.py                       # yolov5n, yolov5s at 320 and 640
    python bench/latency.py --models yolov5n --sizes 320 --runs 10
    python bench/latency.py --models yolov5s yolov4 --runs 15 --onnx   # YOLOv4 (no reference column) and ORT
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time

import torch

from yolotr.models.detection import DetectionModel, find_model_yaml


def official_model(name: str):
    """The official YOLOv5 ``Model`` for a YAML, or None when the code is not installed."""
    try:
        from yolov5.models.yolo import Model
    except Exception:  # noqa: BLE001 - any import failure means "not installed"
        return None
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return Model(str(find_model_yaml(name))).fuse().eval()
    except NameError:  # a yolotr module YOLOv5 does not have (YOLOv4, Swin, ...): no reference column
        return None
    finally:
        logging.disable(logging.NOTSET)


def median_ms(models: list, inputs: list[torch.Tensor], runs: int) -> list[float]:
    """Median milliseconds per model; the models take turns so background load hits them alike."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model, x in zip(models, inputs):
            for _ in range(3):
                model(x)
        for _ in range(runs):
            for i, (model, x) in enumerate(zip(models, inputs)):
                t = time.perf_counter()
                model(x)
                times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


class OrtRunner:
    """onnxruntime session of the fused model exported at one size (2 intra-op threads)."""

    def __init__(self, model, size: int, threads: int, folder: str):
        import onnxruntime as ort

        from yolotr.engine.exporter import export_model

        path = export_model(model, "onnx", f"{folder}/m{size}.onnx", imgsz=size, dynamic=False).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor):
        return self.session.run(None, {"images": x.contiguous().numpy()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="add onnxruntime latency of the exported yolotr model")
    parser.add_argument(
        "--contiguous",
        dest="channels_last",
        action="store_false",
        help="run yolotr in the default contiguous layout instead of channels_last (as its predictor)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = "channels_last" if args.channels_last else "contiguous"
    print(
        f"fp32, batch 1, {args.threads} threads, median of {args.runs}, fused, yolotr {layout}; "
        f"torch {torch.__version__}"
    )
    print(
        f"{'model':<12}{'size':>6}{'yolotr ms':>12}{'YOLOv5 ms':>12}{'ratio':>8}"
        + (f"{'ORT ms':>10}" if args.onnx else "")
    )
    folder = tempfile.mkdtemp()
    for name in args.models:
        ours = DetectionModel(f"{name}.yaml").fuse().eval()
        if args.channels_last:
            ours = ours.to(memory_format=torch.channels_last)
        ref = official_model(name)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            x_ours = x.to(memory_format=torch.channels_last) if args.channels_last else x
            if ref is None:
                (t_ours,), t_ref = median_ms([ours], [x_ours], args.runs), None
            else:
                t_ours, t_ref = median_ms([ours, ref], [x_ours, x], args.runs)
            ref_text = f"{t_ref:12.1f}{t_ours / t_ref:8.2f}" if t_ref else f"{'-':>12}{'-':>8}"
            if args.onnx:
                (t_ort,) = median_ms([OrtRunner(ours, size, args.threads, folder)], [x], args.runs)
                ref_text += f"{t_ort:10.1f}"
            print(f"{name:<12}{size:>6}{t_ours:12.1f}{ref_text}")
    print("ratio = yolotr / YOLOv5 (lower is faster; target <= 1.00)")


if __name__ == "__main__":
    main()
