"""Where a training step's time goes: yolotr against the ultralytics package, phase by phase; prints a table.

The step of ``bench/train.py --family anchor-free`` without its data loader: ``yolov8n.yaml`` with 3
classes, batch 16 at 128 px (the same random uint8 images and 4-16 boxes an image on both sides), SGD
(lr 0.01, momentum 0.937, Nesterov, weight decay 5e-4 on the weights), gradient clipping at norm 10,
EMA. Phases, each timed on its own:

- prep: uint8 -> float32 / 255 (yolotr: into channels_last when that setting is on);
- forward: the model in training mode (yolotr: inside ``lean_activations`` when on);
- loss: yolotr's ``AnchorFreeLoss`` / the package's ``v8DetectionLoss`` on the head's output;
- backward;
- optimizer: clip (yolotr: ``get_total_norm`` + ``clip_grads_with_norm_``, foreach; the package:
  ``clip_grad_norm_``), ``step``, ``zero_grad``;
- ema: ``ModelEMA.update`` of each.

Each variant runs in its own subprocess (glibc's mmap threshold is a process-wide setting that cannot
be undone): the package, yolotr with its defaults (``lean_activations`` on, ``channels_last`` on,
``mmap_threshold_mb`` 4) and yolotr with one or two of them off, so that a processor on which a
setting costs more than it saves shows it. Time is the median over ``--steps`` steps after 3 of
warm-up; ratio = package total / variant total (above 1: yolotr faster).

    python bench/step.py [--threads 2] [--steps 20] [--variants default no-lean no-mmap ...]
    python bench/step.py --threads 1 --clock thread     # a busy machine: CPU time of the one thread
    python bench/step.py --model yolo26n --threads 1 --clock thread   # bench/train.py --family yolo26's step

``--model yolo26n``: ``yolo26n.yaml`` (the NMS-free head): the loss is yolotr's ``E2ELoss`` / the package's
``E2ELoss`` (both branches), the optimizer MuSGD on both sides (yolotr's ``build_optimizer``; the package's
``MuSGD`` over the groups its trainer builds: Muon on the 2-D and 4-D weights, the head's class branches at 3x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import machine_line  # noqa: E402

PHASES = ("prep", "forward", "loss", "backward", "optimizer", "ema")
# variant -> yolotr settings changed from the defaults (None: the package)
VARIANTS = {
    "package": None,
    "default": {},
    "no-lean": {"lean_activations": False},
    "no-mmap": {"mmap_threshold_mb": 0},
    "no-lean-no-mmap": {"lean_activations": False, "mmap_threshold_mb": 0},
    "no-channels-last": {"channels_last": False},
}
BATCH, IMGSZ, NC = 16, 128, 3


def batch_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(16, 3, 128, 128)`` and targets ``(N, 6)`` ``[image, class, cx, cy, w, h]``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (BATCH, 3, IMGSZ, IMGSZ), dtype=torch.uint8, generator=g)
    rows = []
    for i in range(BATCH):
        n = int(torch.randint(4, 17, (1,), generator=g))
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        xy = wh / 2 + torch.rand(n, 2, generator=g) * (1 - wh)
        cls = torch.randint(0, NC, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(i)), cls, xy, wh), 1))
    return images, torch.cat(rows)


def yolotr_step(settings: dict, name: str = "yolov8n"):
    """The per-phase callables of yolotr's step with ``settings`` over the defaults."""
    from yolotr.engine.config import default_config
    from yolotr.engine.ema import ModelEMA
    from yolotr.engine.heap import set_mmap_threshold
    from yolotr.engine.optim import build_optimizer
    from yolotr.models.detection import DetectionModel
    from yolotr.nn.lean import lean_activations
    from yolotr.ops.loss_af import AnchorFreeLoss

    cfg = {**default_config(), **settings}
    set_mmap_threshold(cfg["mmap_threshold_mb"])
    layout = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = DetectionModel(f"{name}.yaml", nc=NC).to(memory_format=layout).train()
    if name.startswith("yolo26"):
        from yolotr.ops.loss import build_loss

        loss_fn = build_loss(model, cfg, IMGSZ)
        optimizer = build_optimizer(model, "MuSGD", 0.01, 0.937, 5e-4, 1.0)
    else:
        loss_fn = AnchorFreeLoss(model.model[-1], cfg)
        optimizer = build_optimizer(model, "SGD", 0.01, 0.937, 5e-4, 1.0)
    ema = ModelEMA(model)

    def prep(images):
        return images.to(torch.float32, memory_format=layout).div_(255)

    def forward(x):
        with lean_activations(cfg["lean_activations"]):
            return model(x)

    def optimize():
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        torch.nn.utils.clip_grads_with_norm_(params, 10.0, norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return prep, forward, lambda raw, t: loss_fn(raw, t)[0], optimize, lambda: ema.update(model)


def package_step(name: str = "yolov8n"):
    """The same phases as the ultralytics package's trainer runs them (its optimizer groups and EMA)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    model = DetectionModel(f"{name}.yaml", nc=NC, verbose=False).train()
    model.args = get_cfg()
    criterion = model.init_criterion()
    if name.startswith("yolo26"):
        optimizer = package_musgd(model)
    weights, norms, biases = [], [], []
    norm_types = tuple(v for k, v in torch.nn.__dict__.items() if "Norm" in k)
    for module in model.modules():
        for key, p in module.named_parameters(recurse=False):
            (biases if "bias" in key else norms if isinstance(module, norm_types) else weights).append(p)
    if not name.startswith("yolo26"):
        optimizer = torch.optim.SGD(biases, lr=0.01, momentum=0.937, nesterov=True)
        optimizer.add_param_group({"params": weights, "weight_decay": 5e-4})
        optimizer.add_param_group({"params": norms, "weight_decay": 0.0})
    ema = ModelEMA(model)

    def loss(preds, targets):
        batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}
        return criterion(preds, batch)[0].sum()

    def optimize():
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad()

    return lambda images: images.float() / 255, model, loss, optimize, lambda: ema.update(model)


def package_musgd(model):
    """The package's ``MuSGD`` over the groups its trainer builds for it (``DetectionTrainer.build_optimizer``)."""
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    shim = SimpleNamespace(args=SimpleNamespace(lr0=0.01, warmup_bias_lr=0.0), data={"nc": NC})
    return BaseTrainer.build_optimizer(shim, model, name="MuSGD", lr=0.01, momentum=0.937, decay=5e-4)


def child(variant: str, steps: int, clock, name: str = "yolov8n") -> dict:
    settings = VARIANTS[variant]
    torch.manual_seed(0)
    prep, forward, loss_fn, optimize, ema = package_step(name) if settings is None else yolotr_step(settings, name)
    images, targets = batch_data()
    times = {p: [] for p in PHASES}
    for step in range(steps + 3):
        marks = [clock()]
        x = prep(images)
        marks.append(clock())
        raw = forward(x)
        marks.append(clock())
        loss = loss_fn(raw, targets)
        marks.append(clock())
        loss.backward()
        marks.append(clock())
        optimize()
        marks.append(clock())
        ema()
        marks.append(clock())
        if step >= 3:
            for phase, a, b in zip(PHASES, marks, marks[1:]):
                times[phase].append((b - a) * 1e3)
    return {p: statistics.median(v) for p, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS)[1:], default=list(VARIANTS)[1:])
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="thread: CPU time of the calling thread (with --threads 1 only), which a busy machine inflates far less",
    )
    parser.add_argument("--model", choices=("yolov8n", "yolo26n"), default="yolov8n", help="the model of the step")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread measures one thread: use it with --threads 1")
    torch.set_num_threads(args.threads)
    if args.child:
        clock = time.thread_time if args.clock == "thread" else time.perf_counter
        print(json.dumps(child(args.child, args.steps, clock, args.model)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
    results = {}
    for variant in ("package", *args.variants):
        command = [sys.executable, __file__, "--child", variant, "--threads", str(args.threads)]
        command += ["--steps", str(args.steps), "--clock", args.clock, "--model", args.model]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])

    print(f"training step of {args.model}, {NC} classes, batch {BATCH} x {IMGSZ} px, median of {args.steps} steps (ms)")
    print(f"machine: {machine_line()}, torch {torch.__version__}, {args.threads} threads, {args.clock} clock")
    print(f"{'variant':17s}" + "".join(f"{p:>10s}" for p in PHASES) + f"{'total':>10s}{'ratio':>7s}")
    package_total = sum(results["package"].values())
    for variant, phases in results.items():
        total = sum(phases.values())
        row = "".join(f"{phases[p]:10.2f}" for p in PHASES)
        print(f"{variant:17s}{row}{total:10.2f}{package_total / total:6.2f}x")


if __name__ == "__main__":
    main()
