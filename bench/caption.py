"""Caption bench: train on the built-in shapes captions within a CPU time budget, then score held-out images.

Trains with the defaults of ``yolotr caption train`` (``DEFAULTS`` in ``yolotr/engine/caption_trainer.py``),
so the bench measures what the command gives; flags override single settings. Prints BLEU-1..4 and
CIDEr-D for greedy decoding and beam search (width 3, with length normalization and without it:
"lp0") of the last checkpoint, and the training time.

    python bench/caption.py                       # 2 threads, 4.8-minute training budget
    python bench/caption.py --time-limit 2 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from yolotr.data.captions import CaptionDataset, load_caption_data
from yolotr.engine.caption_trainer import (
    DEFAULTS,
    CaptionTrainer,
    evaluate,
    load_captioner,
)
from yolotr.metrics.captioning import METRIC_NAMES

# settings a flag may override; the rest of the run is DEFAULTS as they are
SETTINGS = ("n_train", "n_val", "imgsz", "encoder", "layer", "dim", "layers", "batch", "lr", "dropout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a shared, loaded CPU)")
    parser.add_argument("--time-limit", type=float, default=4.8, help="training minutes, a float (validation included)")
    for key in SETTINGS:
        default = DEFAULTS[key]
        parser.add_argument(
            "--" + key.replace("_", "-"), dest=key, type=type(default), default=None, help=f"default: {default}"
        )
    parser.add_argument("--project", default="runs/caption")
    parser.add_argument("--name", default="bench")
    return parser


def bench_overrides(args: argparse.Namespace) -> dict:
    """What the bench passes to :class:`CaptionTrainer`: the time budget, where to write, CPU, and only
    the settings given on the command line."""
    overrides = {k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None}
    return dict(
        data="shapes", time_limit=args.time_limit, project=args.project, name=args.name, device="cpu", **overrides
    )


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    overrides = bench_overrides(args)
    settings = {**DEFAULTS, **overrides}
    load_caption_data(settings)  # generate the shapes set before the clock starts
    t0 = time.monotonic()
    result = CaptionTrainer(overrides).train()
    train_time = time.monotonic() - t0
    model, vocab, ckpt = load_captioner(f"{result['save_dir']}/weights/last.pt")
    _, val_set = load_caption_data(settings)
    val = CaptionDataset(val_set, vocab, settings["imgsz"], model.max_len, train=False, cache=True)
    rows = []
    for name, beam, length_penalty in (("greedy", 1, 1.0), ("beam 3", 3, 1.0), ("beam 3 lp0", 3, 0.0)):
        t = time.monotonic()
        scores, hyps = evaluate(model, vocab, val, 64, beam, length_penalty=length_penalty)
        rows.append((name, scores, time.monotonic() - t))
    print(f"\nshapes captions: {len(val_set)} held-out images, {args.threads} threads, trained {train_time:.0f}s")
    print(f"({ckpt['epoch'] + 1} epochs, {ckpt['step']} steps of {settings['batch']}; encoder {settings['encoder']})")
    print(f"{'decoding':<10}" + "".join(f"{k:>9}" for k in METRIC_NAMES) + f"{'time':>8}")
    for name, scores, dt in rows:
        print(f"{name:<10}" + "".join(f"{scores[k]:9.3f}" for k in METRIC_NAMES) + f"{dt:7.1f}s")
    for text, refs in list(zip(hyps, val_set.captions))[:5]:
        print(f"  {text!r:50}  ref {refs[0]!r}")


if __name__ == "__main__":
    main()
