"""Corpus caption metrics: BLEU-1..4 and CIDEr-D, through ``pycocoevalcap``'s scorers.

``pycocoevalcap`` (the COCO caption evaluation code on PyPI) provides BLEU and CIDEr-D in pure
Python; only its METEOR, SPICE and PTB tokenizer need Java, and they are not used here. Instead
of the PTB tokenizer, hypotheses and references go through :func:`yolotr.models.vocab.tokenize`
(lower case, punctuation dropped), so scores match COCO's for plain-word captions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from yolotr.errors import ConfigError
from yolotr.models.vocab import tokenize

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D")


def _scorers():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise ConfigError("caption metrics need pycocoevalcap: pip install pycocoevalcap") from None
    return Bleu, Cider


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (closest-reference brevity penalty) and CIDEr-D (``x10``, sigma 6, clipped counts).

    Args:
        hypotheses: one generated caption per image.
        references: the reference captions of each image (one or more).

    Returns:
        ``{"BLEU-1": ..., "BLEU-4": ..., "CIDEr-D": ...}`` as floats; CIDEr-D's document frequencies
        come from these references, as in the COCO evaluation.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    if any(len(r) == 0 for r in references):
        raise ValueError("every image needs at least one reference caption")
    Bleu, Cider = _scorers()
    res = {i: [" ".join(tokenize(h))] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        cider, _ = Cider().compute_score(gts, res)
    return {**{f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}, "CIDEr-D": float(cider)}


def format_scores(scores: dict[str, float]) -> str:
    """One line: ``BLEU-1 0.912  BLEU-2 ...  CIDEr-D 3.210``."""
    return "  ".join(f"{k} {scores[k]:.3f}" for k in METRIC_NAMES if k in scores)
