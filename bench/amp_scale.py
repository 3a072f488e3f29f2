"""Which starting loss scale for fp16? Overflow against underflow, one batch per scale, on the CPU or CUDA.

For each model and each loss scale ``2**k``, one training batch of the built-in shapes set (fixed weights
from ``torch.manual_seed(0)``, the same batch for every scale) runs forward under fp16 autocast and
backward on ``loss * scale``; the gradients, divided by the scale, are compared with the float32
gradients of the same batch:

- ``finite``: whether every gradient is finite (False: GradScaler would skip this step and halve);
- ``cos``: cosine similarity of all parameter gradients (flattened) with the float32 ones;
- ``zero %``: the share of gradient entries that are exactly zero where float32's are not (underflow
  of small fp16 activation gradients: what a too-small scale costs).

A starting scale is good when it is finite (no calibration skip) *and* keeps ``cos`` as high as the
largest finite scale does. The first skipped steps fall in the warmup, where the weights' learning rate
starts at 0, so a skip costs close to nothing; a too-small scale costs gradient on every step until the
scaler has doubled its way back up (2,000 steps a doubling).

    python bench/amp_scale.py                        # CPU, 64 px, batch 4
    python bench/amp_scale.py --device cuda --imgsz 320 --batch 16
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import machine_line  # noqa: E402
from yolotr.data.dataset import DetectionDataset, collate  # noqa: E402
from yolotr.data.sources import load_dataset_config, load_records  # noqa: E402
from yolotr.data.synthetic import make_shapes_dataset  # noqa: E402
from yolotr.engine.config import resolve_config  # noqa: E402
from yolotr.models.detection import DetectionModel  # noqa: E402
from yolotr.ops.loss import build_loss  # noqa: E402

MODELS = ("yolo11n-transformerc3.yaml", "yolov8n-swinv2.yaml", "yolov8n.yaml", "yolov5n-swinv2.yaml", "yolov5n.yaml")


def gradients(model, loss_fn, images, targets, device, scale: float | None) -> torch.Tensor:
    """All parameter gradients flattened, float32; fp16 autocast and ``loss * scale`` when ``scale`` is set."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scale is not None):
        raw = model(images)
    loss, _ = loss_fn(raw, targets)
    (loss * (scale or 1.0)).backward()
    grads = [p.grad.flatten().float() / (scale or 1.0) for p in model.parameters() if p.grad is not None]
    return torch.cat(grads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--exponents", type=int, nargs="+", default=[16, 14, 12, 10, 8, 6, 4])
    parser.add_argument("--workdir", default="/tmp/yolotr_amp_scale")
    args = parser.parse_args()
    logging.getLogger("yolotr").setLevel(logging.WARNING)
    device = torch.device(args.device)
    data = load_dataset_config(str(make_shapes_dataset(Path(args.workdir) / "shapes", n_train=32, n_val=4,
                                                       imgsz=max(args.imgsz, 64), seed=0)))  # fmt: skip
    records, _ = load_records(data, "train", log=False)
    cfg = resolve_config({"imgsz": args.imgsz})
    dataset = DetectionDataset(records, args.imgsz, augment=False, hyp={}, stride=32, seed=0)
    images, targets, _, _ = collate([dataset[i] for i in range(args.batch)])
    images, targets = images.to(device).float().div_(255), targets.to(device)
    print(f"{machine_line()}, {device}, imgsz {args.imgsz}, batch {args.batch}; one batch, fixed weights\n")
    print("| model | scale | finite | cos to fp32 | zero % (fp32 non-zero) |")
    print("|---|---:|:---:|---:|---:|")
    for name in args.models:
        torch.manual_seed(0)
        model = DetectionModel(name, nc=len(data.names)).to(device).train()
        loss_fn = build_loss(model, cfg, args.imgsz)
        reference = gradients(model, loss_fn, images, targets, device, None)
        nonzero = reference != 0
        for k in args.exponents:
            g = gradients(model, loss_fn, images, targets, device, 2.0**k)
            finite = bool(torch.isfinite(g).all())
            if finite:
                cos = torch.nn.functional.cosine_similarity(g, reference, dim=0).item()
                zero = ((g == 0) & nonzero).sum().item() / max(int(nonzero.sum()), 1) * 100
                print(f"| {name} | 2^{k} | yes | {cos:.6f} | {zero:.3f} |")
            else:
                print(f"| {name} | 2^{k} | no | | |")


if __name__ == "__main__":
    main()
