"""Word-level caption vocabulary: lower-cased words, four special tokens, a minimum count.

Tokenization keeps runs of letters (any script), digits, apostrophes and hyphens and drops other punctuation,
then the quotes and dashes around a word, so ``"Two circles, a 'naïve' black-and-white square."`` becomes
``["two", "circles", "a", "naïve", "black-and-white", "square"]`` (as COCO's PTB tokenizer keeps them; only its
split of ``'s`` is not made). The same function tokenizes hypotheses and references for the metrics, so they
always agree.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

_INSIDE = "'-"  # kept inside a word (it's, black-and-white), stripped around it ('cute', -ish)


def _is_word_char(ch: str) -> bool:
    """A letter, mark or digit of any script (Devanagari's vowel signs are marks), or an apostrophe or hyphen."""
    return ch in _INSIDE or unicodedata.category(ch)[0] in "LMN"


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text`` (NFC: ``café`` typed either way is one word) without punctuation; ``--``
    (a dash between words) splits, as in COCO's PTB tokenizer."""
    text = unicodedata.normalize("NFC", text.lower()).replace("--", " ")
    words, current = [], []
    for ch in text + " ":
        if _is_word_char(ch):
            current.append(ch)
        elif current:
            words.append("".join(current).strip(_INSIDE))
            current = []
    return [w for w in words if w]


class Vocabulary:
    """Maps words to ids and back. Ids 0-3 are ``<pad>``, ``<start>``, ``<end>``, ``<unk>``.

    Args:
        words: the ordinary words, in id order (ids start at 4).
    """

    SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
    PAD, START, END, UNK = 0, 1, 2, 3

    def __init__(self, words: Iterable[str]):
        self.itos: list[str] = list(self.SPECIALS)
        for w in words:
            if w in self.SPECIALS:
                raise ValueError(f"vocabulary word {w!r} clashes with a special token")
            self.itos.append(w)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Words seen at least ``min_count`` times in ``captions``, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """``[<start>, w1, ..., <end>]`` ids; words past ``max_len - 2`` are dropped (``<end>`` is kept)."""
        ids = [self.stoi.get(w, self.UNK) for w in tokenize(text)]
        if max_len is not None:
            ids = ids[: max(max_len - 2, 0)]
        return [self.START, *ids, self.END]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` up to the first ``<end>``, without ``<start>`` and ``<pad>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.END:
                break
            if i in (self.PAD, self.START):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else self.SPECIALS[self.UNK])
        return " ".join(words)

    def to_dict(self) -> dict:
        """Plain dict for a checkpoint (``torch.load(weights_only=True)`` safe)."""
        return {"words": self.itos[len(self.SPECIALS) :]}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls(d["words"])

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"
