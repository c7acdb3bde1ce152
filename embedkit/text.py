"""Texts to vectors from word vectors: the tokeniser, mean and SIF pooling, the OOV policy.

Tokeniser (`tokenize`), stated once and used both to train word2vec and to embed texts, so a
trained model sees at inference exactly the tokens it was trained on:
  1. Unicode NFC, curly apostrophes become ', then lowercase (GloVe 6B is all lowercase);
  2. tokens are runs of word characters (letters, digits, underscore, any script); inside a
     token, hyphens, dots and apostrophes between word characters are kept (e-mail, 3.5,
     o'neill) and so are digit groups (1,000);
  3. English clitics split off as in the Penn Treebank / Stanford tokeniser GloVe was trained
     with: don't -> do n't, can't -> ca n't, king's -> king 's, they're -> they 're;
  4. everything else (punctuation, symbols, whitespace) separates tokens and is dropped;
  5. (at lookup, `token_ids`) a compound token missing from the vocabulary is replaced by its
     parts: baseball-playing -> baseball playing.

Pooling:
  - `mean`: the average of the in-vocabulary token vectors.
  - `sif` (Arora, Liang & Ma 2017, "A simple but tough-to-beat baseline for sentence
    embeddings"): the average weighted by a / (a + p(w)), a = 1e-3, then the projection on the
    first principal component u removed: v - u u^T v.  p(w) comes from the vectors' own word
    counts when they carry real ones (word2vec trained by embedkit); otherwise it
    is estimated from the frequency rank with Zipf's law, p(rank r) = 1 / (r H_N), which needs
    the vocabulary sorted by frequency (GloVe and word2vec files are).  The paper estimates u
    on the batch being embedded; a cached vector must not depend on its batch, so u is estimated
    once per backbone on a fixed reference corpus (gensim's `lee_background.cor`, 300 news
    documents, or your own one-text-per-line file) and frozen; its hash is part of the
    fingerprint.  A single text therefore gets the same vector alone as in a batch.

OOV policy: tokens missing from the vocabulary are dropped from the average and counted; a text
with no in-vocabulary token raises BadInputError (the extractor reports and skips it: never a
silent zero vector).  `OOVStats` turns the counts into notes such as
"OOV: 3.2% of 5,012 tokens; 1 text fully out of vocabulary".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from .errors import BadInputError, UsageError
from .options import TEXT_POOLINGS

__all__ = ["SIF_A", "TEXT_POOLING_VERSION", "all_oov_error", "OOVStats", "TextPooler",
           "token_ids", "tokenize", "word_probabilities"]

#: Bumped when the tokeniser or the pooling arithmetic changes (part of the fingerprint).
TEXT_POOLING_VERSION = 1
SIF_A = 1e-3

_TOKEN = re.compile(r"""
      \w+(?=n't\b)                  # do|n't, ca|n't, wo|n't
    | n't\b
    | \w+(?='(?:s|re|ve|ll|d|m)\b)  # king|'s, they|'re
    | '(?:s|re|ve|ll|d|m)\b
    | \d+(?:[.,]\d+)+               # 3.5, 1,000
    | \w+(?:[-.]\w+|'(?!(?:s|re|ve|ll|d|m)\b)\w+)*   # words, e-mail, o'neill('s)
""", re.VERBOSE)


_JOINERS = re.compile(r"[-.,']")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split a text into tokens (see the module docstring for the rules)."""
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").replace("\u2018", "'")
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)


@dataclass
class OOVStats:
    """Token and text counts of what was embedded, for the extraction summary."""

    tokens: int = 0
    oov_tokens: int = 0
    texts: int = 0
    empty_texts: int = 0  # texts with no in-vocabulary token (skipped)
    examples: dict[str, int] = field(default_factory=dict)  # most frequent OOV tokens

    def add(self, n_tokens: int, oov: list[str]):
        self.texts += 1
        self.tokens += n_tokens
        self.oov_tokens += len(oov)
        if n_tokens == len(oov):
            self.empty_texts += 1
        for tok in oov:
            self._example(tok, 1)

    def _example(self, tok: str, n: int):
        if tok in self.examples or len(self.examples) < 10_000:
            self.examples[tok] = self.examples.get(tok, 0) + n

    def merge(self, other: "OOVStats"):
        """Add counts gathered elsewhere (another process's texts)."""
        self.texts += other.texts
        self.tokens += other.tokens
        self.oov_tokens += other.oov_tokens
        self.empty_texts += other.empty_texts
        for tok, n in other.examples.items():
            self._example(tok, n)

    @property
    def rate(self) -> float:
        return self.oov_tokens / self.tokens if self.tokens else 0.0

    def notes(self) -> list[str]:
        if not self.texts:
            return []
        line = f"OOV: {100 * self.rate:.1f}% of {self.tokens:,} tokens"
        if self.empty_texts:
            line += (f"; {self.empty_texts:,} text{'s' if self.empty_texts != 1 else ''} fully "
                     "out of vocabulary (skipped)")
        notes = [line]
        if self.examples:
            top = sorted(self.examples.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
            notes.append("most frequent OOV tokens: " + ", ".join(f"{t} ({n})" for t, n in top))
        return notes


def word_probabilities(kv) -> tuple[np.ndarray, str]:
    """p(w) per vocabulary index and where it came from ("counts" or "zipf")."""
    n = len(kv.index_to_key)
    counts = None
    if "count" in getattr(kv, "expandos", {}):
        counts = np.asarray(kv.expandos["count"], dtype=np.float64)[:n]
        # gensim invents counts N, N-1, ..., 1 for word2vec files without a vocabulary file
        if np.array_equal(counts, np.arange(n, 0, -1, dtype=np.float64)) or counts.sum() <= 0:
            counts = None
    if counts is not None:
        return counts / counts.sum(), "counts"
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return 1.0 / (ranks * np.sum(1.0 / ranks)), "zipf"


_BLOCK = 65536  # tokens per block when averaging


class TextPooler:
    """Token ids -> one sentence vector, by mean or SIF pooling (module docstring).

    `vectors` is the [V, d] matrix of the vocabulary; for SIF, `probabilities` is p(w) per row
    and `component` the frozen first principal component (None until `fit_component`).
    """

    def __init__(self, vectors, pooling: str = "mean", probabilities=None, a: float = SIF_A,
                 component=None):
        TEXT_POOLINGS.check(pooling)
        if pooling == "sif" and probabilities is None:
            raise UsageError("SIF pooling needs word probabilities")
        self.vectors = vectors
        self.pooling = pooling
        self.a = a
        self.weights = (a / (a + np.asarray(probabilities, dtype=np.float64))
                        if pooling == "sif" else None)
        self.component = component

    def weighted_average(self, ids: np.ndarray) -> np.ndarray:
        """Mean (or SIF-weighted mean) of the ids' vectors in float64, summed in blocks so a
        very long text (a 10 MB line) needs memory for one block, not for all its tokens."""
        total = np.zeros(self.vectors.shape[1], dtype=np.float64)
        for start in range(0, len(ids), _BLOCK):
            block = ids[start:start + _BLOCK]
            vecs = np.asarray(self.vectors[block], dtype=np.float64)
            total += (vecs if self.weights is None else self.weights[block][:, None] * vecs
                      ).sum(axis=0)
        return total / len(ids)

    def fit_component(self, token_id_lists: list[np.ndarray]) -> "TextPooler":
        """First right singular vector of the (uncentred) weighted averages, as in the paper."""
        rows = np.stack([self.weighted_average(ids) for ids in token_id_lists if len(ids)])
        _, _, vt = np.linalg.svd(rows, full_matrices=False)
        self.component = vt[0]
        return self

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        v = self.weighted_average(ids)
        if self.pooling == "sif":
            if self.component is None:
                raise UsageError("SIF pooling: the common component has not been estimated")
            v = v - self.component * (self.component @ v)
        return v.astype(np.float32)


def token_ids(tokens: list[str], key_to_index: dict) -> tuple[np.ndarray, list[str], int]:
    """(ids of the in-vocabulary tokens, the out-of-vocabulary tokens, the token count).

    A compound token missing from the vocabulary (e-mail, 3.5, o'neill) is looked up by its
    parts instead (baseball-playing -> baseball playing); the count is of the tokens used."""
    ids, oov, n = [], [], 0
    for tok in tokens:
        i = key_to_index.get(tok)
        parts = [tok] if i is not None or not _JOINERS.search(tok) else \
            [p for p in _JOINERS.split(tok) if p]
        for part in parts:
            n += 1
            i = key_to_index.get(part)
            (oov.append(part) if i is None else ids.append(i))
    return np.asarray(ids, dtype=np.int64), oov, n


def all_oov_error(n_tokens: int, oov: list[str]) -> BadInputError:
    if not n_tokens:
        return BadInputError("no tokens (empty or punctuation-only text)")
    shown = ", ".join(repr(t) for t in oov[:5]) + (", ..." if len(oov) > 5 else "")
    return BadInputError(f"all {n_tokens} token{'s' if n_tokens != 1 else ''} out of "
                         f"vocabulary ({shown})")
