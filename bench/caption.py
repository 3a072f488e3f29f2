"""Caption bench: train on the built-in shapes captions within a CPU time budget, then score held-out images.

Prints BLEU-1..4 and CIDEr-D for greedy decoding and beam search (width 3, with length normalization
and without it: "lp0") of the last checkpoint, and the training time.

    python bench/caption.py                       # 2 threads, 5-minute training budget
    python bench/caption.py --time-limit 120 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from yolotr.engine.caption_trainer import CaptionDataset, CaptionTrainer, evaluate, load_caption_data, load_captioner
from yolotr.metrics.captioning import METRIC_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a shared, loaded CPU)")
    parser.add_argument("--time-limit", type=float, default=290.0, help="training seconds (validation included)")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--encoder", default="backbone", choices=["backbone", "patch"])
    parser.add_argument("--layer", type=int, default=4, help="yolov5n: 4 = P3/8, 6 = P4/16")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--project", default="runs/caption")
    parser.add_argument("--name", default="bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    overrides = dict(
        data="shapes", n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, encoder=args.encoder,
        layer=args.layer, dim=args.dim, layers=args.layers, batch=args.batch, lr=args.lr,
        dropout=args.dropout, epochs=1000,
        time_limit=args.time_limit, project=args.project, name=args.name, device="cpu",
    )  # fmt: skip
    load_caption_data({**overrides, "seed": 0})
    t0 = time.monotonic()
    result = CaptionTrainer(overrides).train()
    train_time = time.monotonic() - t0
    model, vocab, ckpt = load_captioner(f"{result['save_dir']}/weights/last.pt")
    _, val_set = load_caption_data({**overrides, "seed": 0})
    val = CaptionDataset(val_set, vocab, args.imgsz, model.max_len, train=False, cache=True)
    rows = []
    for name, beam, length_penalty in (("greedy", 1, 1.0), ("beam 3", 3, 1.0), ("beam 3 lp0", 3, 0.0)):
        t = time.monotonic()
        scores, hyps = evaluate(model, vocab, val, 64, beam, length_penalty=length_penalty)
        rows.append((name, scores, time.monotonic() - t))
    print(f"\nshapes captions: {len(val_set)} held-out images, {args.threads} threads, trained {train_time:.0f}s")
    print(f"({ckpt['epoch'] + 1} epochs, {ckpt['step']} steps of {args.batch}; encoder {args.encoder})")
    print(f"{'decoding':<10}" + "".join(f"{k:>9}" for k in METRIC_NAMES) + f"{'time':>8}")
    for name, scores, dt in rows:
        print(f"{name:<10}" + "".join(f"{scores[k]:9.3f}" for k in METRIC_NAMES) + f"{dt:7.1f}s")
    for text, refs in list(zip(hyps, val_set.captions))[:5]:
        print(f"  {text!r:50}  ref {refs[0]!r}")


if __name__ == "__main__":
    main()
