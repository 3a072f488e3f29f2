"""Caption metrics: hand-computed BLEU, CIDEr-D's known value for exact matches, agreement with pycocoevalcap."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("pycocoevalcap")

from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402

from yolotr.metrics.captioning import caption_scores  # noqa: E402


def test_bleu_hand_computed():
    # clipped unigram precision 3/4, bigram 1/3, no matching 3-grams; brevity penalty exp(1 - 6/4)
    s = caption_scores(["the cat the cat"], [["the cat sat on the mat"]])
    bp = math.exp(1 - 6 / 4)
    assert s["BLEU-1"] == pytest.approx(0.75 * bp, abs=1e-6)
    assert s["BLEU-2"] == pytest.approx(math.sqrt(0.75 / 3) * bp, abs=1e-6)
    assert s["BLEU-3"] < 1e-4


def test_exact_matches_score_one_and_ten():
    hyps = ["a large red circle", "two blue squares and a triangle"]
    refs = [["a large red circle"], ["two blue squares and a triangle"]]
    s = caption_scores(hyps, refs)
    for n in range(1, 5):
        assert s[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert s["CIDEr-D"] == pytest.approx(10.0, abs=1e-6)


def test_tokenization_ignores_case_and_punctuation():
    a = caption_scores(["Two circles, a square."], [["two circles a square"]])
    assert a["BLEU-4"] == pytest.approx(1.0, abs=1e-6)


def test_agrees_with_reference_scorer_on_a_small_corpus():
    hyps = ["a red circle", "two blue squares", "a small green triangle and a circle", "three circles"]
    refs = [
        ["a large red circle", "a red circle"],
        ["two blue squares and a triangle"],
        ["a small green triangle and a large yellow circle", "a green triangle and a circle"],
        ["two circles and a square", "three red circles"],
    ]
    s = caption_scores(hyps, refs)
    gts = dict(enumerate(refs))
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert [s[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert s["CIDEr-D"] == pytest.approx(float(cider), abs=1e-12)
    assert 0 < s["BLEU-4"] < s["BLEU-1"] < 1


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        caption_scores(["a"], [])


def test_words_of_any_script_and_quoted_words_score_as_coco_does():
    """``café`` was ``caf``, Chinese nothing, and ``'cute'`` kept its quotes: a quoted plain word scored BLEU-4
    0.534 against COCO's 0.895 (PTB tokenizer)."""
    from yolotr.models.vocab import tokenize

    assert tokenize("A naïve Café RACCOON, it's 'cute'! black-and-white") == [
        "a", "naïve", "café", "raccoon", "it's", "cute", "black-and-white",
    ]  # fmt: skip
    assert tokenize("浣熊 在 树上") == ["浣熊", "在", "树上"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs are marks, not separators
    assert tokenize("cafe\u0301") == tokenize("caf\u00e9") == ["café"]  # decomposed or composed
    assert tokenize("dog--cat snake_case") == ["dog", "cat", "snake", "case"]
    quoted = caption_scores(["a 'cute' raccoon on a branch"], [["a cute raccoon on a branch"]])
    assert quoted["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
