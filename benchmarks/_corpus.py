"""Deterministic corpora for the benchmarks (standard library only).

Two texts are generated, both from a fixed seed, so every run sees the same words:

* the *tokenizer corpus*: every help topic of Python's ``pydoc_data.topics`` plus generated
  sentences over a broad lexicon; the benchmark tokenizers are trained on it;
* the *training set*: CoNLL-2003-like pre-split sentences (14,041 sentences, about 14.5 words
  each, names, numbers and punctuation) over a Zipf-weighted subset of the same lexicon. This is
  what a plan is built from.

The lexicon is the lower-cased words of ``pydoc_data.topics`` plus pronounceable pseudo-words
(syllable combinations) standing in for names and rarer words.
"""

from __future__ import annotations

import itertools
import random
import re
from functools import lru_cache

SEED = 20240611
CONLL_SENTENCES = 14_041  # CoNLL-2003 English train
_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "br",
    "ch",
    "cl",
    "dr",
    "fr",
    "gr",
    "kr",
    "pl",
    "pr",
    "sh",
    "st",
    "th",
    "tr",
    "",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "ie", "y"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "t", "nd", "rt", "st", "ck", "x"]
_BLOCK = ("fuck", "shit", "cunt", "nig", "fag", "slut", "cock", "dick", "rape")
_PUNCT = [",", ".", "(", ")", "-", ":", '"', "'s", "/", ";"]


def _pseudo_word(rng: random.Random) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        for _ in range(rng.choice((1, 2, 2, 2, 3)))
    )


@lru_cache(maxsize=1)
def pydoc_texts() -> tuple[str, ...]:
    """The help topics shipped with CPython (``pydoc_data.topics``), sorted by name."""
    from pydoc_data.topics import topics

    return tuple(topics[k] for k in sorted(topics))


@lru_cache(maxsize=1)
def lexicon(n_pseudo: int = 60_000) -> tuple[str, ...]:
    """Real words of the pydoc topics, then ``n_pseudo`` distinct pseudo-words."""
    rng = random.Random(SEED)
    real = sorted({w.lower() for t in pydoc_texts() for w in re.findall(r"[A-Za-z]{2,}", t)})
    seen = set(real)
    pseudo: list[str] = []
    while len(pseudo) < n_pseudo:
        w = _pseudo_word(rng)
        if len(w) > 1 and w not in seen and not any(b in w for b in _BLOCK):
            seen.add(w)
            pseudo.append(w)
    return tuple(real) + tuple(pseudo)


def _sentence(rng: random.Random, words: list[str], cum: list[float]) -> list[str]:
    out: list[str] = []
    for _ in range(max(2, int(rng.gauss(13.5, 7)))):
        r = rng.random()
        if r < 0.06:
            out.append(rng.choice(_PUNCT))
        elif r < 0.10:
            out.append(
                str(
                    rng.choice(
                        (rng.randint(0, 99), rng.randint(1900, 2030), rng.randint(100, 99999))
                    )
                )
            )
        else:
            w = rng.choices(words, cum_weights=cum)[0]
            if r < 0.30:  # entity-like: capitalised, sometimes upper-case
                w = w.upper() if rng.random() < 0.1 else w.capitalize()
            out.append(w)
    out.append(".")
    return out


def _zipf_cum(n: int, s: float = 1.0) -> list[float]:
    return list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))


@lru_cache(maxsize=4)
def training_set(n_sentences: int = CONLL_SENTENCES, lexicon_size: int = 30_000) -> tuple:
    """CoNLL-like pre-split sentences: a tuple of word lists (as tuples)."""
    rng = random.Random(SEED + 1)
    words = list(lexicon()[:lexicon_size])
    rng.shuffle(words)
    cum = _zipf_cum(len(words), 1.05)
    return tuple(tuple(_sentence(rng, words, cum)) for _ in range(n_sentences))


def tokenizer_corpus(n_sentences: int = 120_000) -> list[str]:
    """Text the benchmark tokenizers are trained on: pydoc topics + generated sentences."""
    rng = random.Random(SEED + 2)
    words = list(lexicon())
    rng.shuffle(words)
    cum = _zipf_cum(len(words), 0.7)
    lines = [line for t in pydoc_texts() for line in t.splitlines() if line.strip()]
    lines += [" ".join(_sentence(rng, words, cum)) for _ in range(n_sentences)]
    return lines


def word_lists(quick: bool = False) -> list[list[str]]:
    """The training set as lists of words: 2,000 sentences with ``quick``, else all of it."""
    return [list(s) for s in training_set(2_000 if quick else CONLL_SENTENCES)]


if __name__ == "__main__":
    ts = training_set()
    n_tok = sum(len(s) for s in ts)
    print(len(lexicon()), len(ts), n_tok, len({w for s in ts for w in s}))
    print(" ".join(ts[0]))
    print(" ".join(ts[1]))
