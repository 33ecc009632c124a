"""Word error rate for judging transcriptions, after the usual light text normalisation."""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

# Spoken forms of abbreviations that ASR writes and read-speech references spell out.
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation removed; hyphens and slashes split words.

    "Mr. Dashwood's ill-disposed" -> ["mister", "dashwood's", "ill", "disposed"].
    Apostrophes inside words are kept, so "don't" stays one word.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = re.sub(r"[-\u2013\u2014/]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split()]
    return [_ABBREVIATIONS.get(w, w) for w in words if w]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words, after `normalize_words`.

    Args:
        refs: reference transcripts.
        hyps: hypotheses, same length and order as `refs`.

    Returns:
        WER as a fraction (0.05 = 5 %); can exceed 1 when the hypotheses insert many words.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(refs, hyps):
        r, h = normalize_words(ref), normalize_words(hyp)
        edits += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("the references contain no words")
    return edits / words
