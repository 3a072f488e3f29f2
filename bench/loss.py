"""Anchor-free loss, forward + backward: yolotr's ``AnchorFreeLoss`` against the ultralytics package's
``v8DetectionLoss`` (8.4.190) on the same head outputs and targets; prints a table.

Both sides start from the same per-level branch outputs of a yolov8n head (``(B, 64, H_i, W_i)`` box
distributions and ``(B, nc, H_i, W_i)`` class logits, leaf tensors with gradient, taken from a real
yolov8n forward so that the distributions look like training's) and the same targets, and end when
the gradient of those outputs is computed; yolotr's in ``channels_last`` as its trainer's model makes them
(``--contiguous``: the package's layout), the package's contiguous. Each side does what its own head and
loss do in training:
yolotr concatenates box and class per level (``AnchorFreeDetect.forward``) and runs its loss; the
package concatenates the levels per branch (``Detect.forward_head``) and runs its loss. The two
totals are checked to agree (relative 1e-4) before timing.

Targets: per image 1 to ``--max-boxes`` boxes (uniform), sides 4% to 50% of the image, classes
uniform, a fixed seed; a mosaic of the shapes set (``bench/train.py --family anchor-free``) has 4-16
boxes an image.

Rows: yolov8n at 128 px with 3 classes (the trainer bench's case), at 128 and 320 px with 80 classes;
batch 16. Time is the median of ``--repeat`` runs after warm-up, the two sides in alternation (a
shared machine's changing load slows both alike); ratio = package / yolotr (above 1: yolotr faster).
On a busy machine, ``--threads 1 --clock thread`` times the CPU time of the one thread instead of the
wall clock: the time other processes take the core away no longer counts.

    python bench/loss.py [--threads 2] [--repeat 30] [--batch 16] [--max-boxes 16]
    python bench/loss.py --threads 1 --clock thread   # a busy machine
    python bench/loss.py --profile              # torch.profiler table of yolotr's side (first row)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import machine_line  # noqa: E402

from yolotr.models.detection import DetectionModel  # noqa: E402
from yolotr.ops.loss_af import AnchorFreeLoss  # noqa: E402

ROWS = ((128, 3), (128, 80), (320, 80))
GAINS = {"af_box": 7.5, "af_cls": 0.5, "dfl": 1.5}


def make_inputs(imgsz: int, nc: int, batch: int, max_boxes: int, seed: int = 0):
    """Branch outputs ``[(box_i, cls_i)]`` (leaves), targets ``(N, 6)``, the head's strides and reg_max."""
    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=nc).train()
    head = model.model[-1]
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.extend(args[0]))
    with torch.no_grad():
        model(torch.rand(batch, 3, imgsz, imgsz))
    hook.remove()
    branches = []
    with torch.no_grad():
        for i, x in enumerate(feats):
            box, cls = head.cv2[i](x), head.cv3[i](x)
            branches.append((box.detach().requires_grad_(), cls.detach().requires_grad_()))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for image in range(batch):
        n = int(torch.randint(1, max_boxes + 1, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.46 + 0.04
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
        cls = torch.randint(0, nc, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(image)), cls, xy, wh), 1))
    return branches, torch.cat(rows), head.stride.clone(), head.reg_max


class PackageLoss:
    """The package's ``v8DetectionLoss`` built for a head of ``nc`` classes, fed like its trainer feeds it."""

    def __init__(self, nc: int, reg_max: int, stride: torch.Tensor):
        from ultralytics.utils.loss import v8DetectionLoss

        detect = types.SimpleNamespace(stride=stride, nc=nc, reg_max=reg_max)
        fake = torch.nn.Module()
        fake.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))
        fake.args = types.SimpleNamespace(box=GAINS["af_box"], cls=GAINS["af_cls"], dfl=GAINS["dfl"])
        fake.model = [detect]
        self.loss = v8DetectionLoss(fake)
        self.nc, self.reg_max = nc, reg_max

    def __call__(self, branches, targets: torch.Tensor) -> torch.Tensor:
        b = branches[0][0].shape[0]
        preds = {
            "boxes": torch.cat([box.view(b, 4 * self.reg_max, -1) for box, _ in branches], -1),
            "scores": torch.cat([cls.view(b, self.nc, -1) for _, cls in branches], -1),
            "feats": [box for box, _ in branches],
        }
        batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}
        return self.loss(preds, batch)[0].sum()


class OurLoss:
    def __init__(self, nc: int, reg_max: int, stride: torch.Tensor):
        self.loss = AnchorFreeLoss({"nc": nc, "reg_max": reg_max, "stride": stride}, GAINS)

    def __call__(self, branches, targets: torch.Tensor) -> torch.Tensor:
        maps = [torch.cat((box, cls), 1) for box, cls in branches]
        return self.loss(maps, targets)[0]


def fwd_bwd(fn, branches, targets) -> torch.Tensor:
    for box, cls in branches:
        box.grad = cls.grad = None
    total = fn(branches, targets)
    total.backward()
    return total.detach()


def time_pair(ours, package, branches, targets, repeat: int, clock=time.perf_counter) -> tuple[float, float]:
    """Median ms of each side; ``branches`` is ``(ours, package)``, the same values in each trainer's layout."""
    for _ in range(3):
        fwd_bwd(ours, branches[0], targets), fwd_bwd(package, branches[1], targets)
    times = {"ours": [], "package": []}
    for _ in range(repeat):
        for name, fn, inputs in (("ours", ours, branches[0]), ("package", package, branches[1])):
            t = clock()
            fwd_bwd(fn, inputs, targets)
            times[name].append(clock() - t)
    return statistics.median(times["ours"]) * 1e3, statistics.median(times["package"]) * 1e3


def check_equal(ours, package, branches, targets) -> None:
    a, grads_a = fwd_bwd(ours, branches[0], targets), [t.grad.clone() for pair in branches[0] for t in pair]
    b, grads_b = fwd_bwd(package, branches[1], targets), [t.grad.clone() for pair in branches[1] for t in pair]
    if not torch.allclose(a, b, rtol=1e-4, atol=0):
        raise SystemExit(f"totals differ: yolotr {float(a)} vs package {float(b)}")
    for ga, gb in zip(grads_a, grads_b):
        if not torch.allclose(ga, gb, rtol=1e-3, atol=1e-6 * float(gb.abs().max())):
            raise SystemExit(f"gradients differ: max |diff| {float((ga - gb).abs().max())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-boxes", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="profile yolotr's side of the first row")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="thread: CPU time of the calling thread (with --threads 1 only), which a busy machine inflates far less",
    )
    parser.add_argument(
        "--contiguous",
        action="store_true",
        help="give yolotr contiguous maps too (default: channels_last, as its trainer's model makes them)",
    )
    args = parser.parse_args()
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.set_num_threads(args.threads)

    print(f"anchor-free loss forward + backward, batch {args.batch}, median of {args.repeat} ({args.clock} clock)")
    print(f"machine: {machine_line()}, torch {torch.__version__}, {args.threads} threads")
    print(f"{'imgsz':>5} {'nc':>3} {'boxes':>5} {'yolotr ms':>10} {'package ms':>10} {'ratio':>6}")
    for imgsz, nc in ROWS:
        branches, targets, stride, reg_max = make_inputs(imgsz, nc, args.batch, args.max_boxes)
        ours, package = OurLoss(nc, reg_max, stride), PackageLoss(nc, reg_max, stride)
        layout = torch.contiguous_format if args.contiguous else torch.channels_last
        mine = [tuple(t.detach().to(memory_format=layout).requires_grad_() for t in pair) for pair in branches]
        branches = (mine, branches)
        check_equal(ours, package, branches, targets)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for _ in range(3):
                fwd_bwd(ours, branches[0], targets)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(10):
                    fwd_bwd(ours, branches[0], targets)
            print(
                prof.key_averages(group_by_input_shape=True).table(
                    sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=90
                )
            )
            return
        ms_ours, ms_package = time_pair(ours, package, branches, targets, args.repeat, clock)
        ratio = ms_package / ms_ours
        print(f"{imgsz:>5} {nc:>3} {len(targets):>5} {ms_ours:>10.2f} {ms_package:>10.2f} {ratio:>5.2f}x")


if __name__ == "__main__":
    main()
