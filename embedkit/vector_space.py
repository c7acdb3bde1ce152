"""Keys (words, or the ids of an EmbeddingSet) and their vectors, ready for queries, as gensim's
KeyedVectors: nearest neighbours and analogies by key, vector or weighted combination.

`VectorSpace` derives the unit-normalised copy and the search indexes once, on first use:
- queries accepted in every style, normalised at the boundary: a key, a list of keys, raw
  vectors, `positive=` / `negative=` lists, (key, weight) pairs.  Every term is unit-normalised,
  then combined as sum(w_i t_i) / sum|w_i| (gensim's `most_similar` arithmetic);
- the query keys themselves are DROPPED from the answers by default, as gensim does and as the
  analogy literature evaluates; `keep_query_words=True` keeps them (each result says which);
- analogies a : b :: c : ?  ("b - a + c") by 3CosAdd, argmax cos(d, b - a + c) on unit vectors,
  and 3CosMul (Levy & Goldberg 2014), argmax cos'(d,b) cos'(d,c) / (cos'(d,a) + eps) with
  cos' = (1 + cos) / 2 and eps = 0.001 as in the paper (gensim uses 1e-6);
- an index (exact or approximate) picks the candidates with float32 products; the cosines
  reported for them are computed again in float64 from the stored vectors, so a score does not
  drift with the width of the vectors;
- unknown keys raise NotFoundError listing close spellings.
It knows nothing of backbones or files: what a query string means is `query_resolution`'s.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import NotFoundError, UsageError
from .options import ANALOGY_METHODS, at_least
from .vector_search import NeighborIndex, unit_rows

__all__ = ["COSMUL_EPSILON", "METHODS", "Neighbor", "VectorSpace", "as_space"]

METHODS = ANALOGY_METHODS.values  # declared in embedkit.options
COSMUL_EPSILON = 1e-3


class Neighbor(NamedTuple):
    key: str
    score: float


@dataclass
class _Term:
    vector: np.ndarray  # unit length, float64
    weight: float
    index: int | None  # row of a key, None for a raw vector


class VectorSpace:
    """Keys and their vectors, ready for queries; derived state (norms, unit rows, indexes)
    is computed on first use and kept."""

    def __init__(self, keys, vectors, name: str = "vectors"):
        self.keys = list(keys)
        self.vectors = vectors if isinstance(vectors, np.memmap) else np.asarray(vectors)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.keys):
            raise UsageError(f"{name}: need one vector per key, got {self.vectors.shape} for "
                             f"{len(self.keys)} keys")
        self.name = name
        self._key_to_index = None
        self._unit = None
        self._norms = None
        self._indexes: dict[tuple, NeighborIndex] = {}

    @classmethod
    def from_keyed_vectors(cls, kv, name: str = "word vectors") -> "VectorSpace":
        space = cls(kv.index_to_key, kv.vectors, name)
        space._key_to_index = kv.key_to_index
        return space

    @classmethod
    def from_embeddings(cls, emb) -> "VectorSpace":
        model = emb.meta.get("model")
        return cls(emb.ids, emb.vectors, f"the embeddings of {model}" if model else "the set")

    def __len__(self):
        return len(self.keys)

    def __contains__(self, key):
        return key in self.key_to_index

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def key_to_index(self) -> dict:
        if self._key_to_index is None:
            self._key_to_index = {k: i for i, k in enumerate(self.keys)}
        return self._key_to_index

    @property
    def norms(self) -> np.ndarray:
        if self._norms is None:
            self._norms = np.linalg.norm(np.asarray(self.vectors, dtype=np.float32), axis=1)
        return self._norms

    @property
    def unit(self) -> np.ndarray:
        if self._unit is None:
            self._unit = unit_rows(self.vectors)
        return self._unit

    def index(self, kind: "str | NeighborIndex" = "exact", **params) -> NeighborIndex:
        """The index of this kind and parameters over the unit rows, built once; a fitted
        NeighborIndex (one loaded from a file) is used as it is."""
        if isinstance(kind, NeighborIndex):
            if kind.ntotal_ != len(self):
                raise UsageError(f"the index holds {kind.ntotal_} rows, the space {len(self)}")
            return kind
        key = (kind, tuple(sorted(params.items())))
        if key not in self._indexes:
            self._indexes[key] = NeighborIndex(kind, **params).fit(self.unit)
        return self._indexes[key]

    # -- keys -------------------------------------------------------------------------------
    def index_of(self, key: str) -> int:
        i = self.key_to_index.get(key)
        if i is None:
            raise NotFoundError(self.missing_message(key))
        return i

    def close_keys(self, key: str, n: int = 5) -> list[str]:
        """Keys spelled like `key`: the same word in another case first, then difflib matches
        among the 100,000 first keys that start with the same letter and have a similar length."""
        exact = [k for k in (key.lower(), key.capitalize(), key.upper())
                 if k != key and k in self.key_to_index]
        low = key.lower()
        pool = [k for k in self.keys[:100_000]
                if k[:1].lower() == low[:1] and abs(len(k) - len(low)) <= 2]
        fuzzy = difflib.get_close_matches(low, pool, n=n, cutoff=0.7)
        return list(dict.fromkeys(exact + fuzzy))[:n]

    def missing_message(self, key: str) -> str:
        close = self.close_keys(key)
        hint = f"; close spellings: {', '.join(close)}" if close else "; no close spelling found"
        return f"'{key}' is not in the vocabulary of {self.name} ({len(self):,} keys){hint}"

    # -- queries ----------------------------------------------------------------------------
    def _terms(self, positive, negative) -> list[_Term]:
        terms = []
        for items, sign in ((positive, 1.0), (negative, -1.0)):
            for item in _as_items(items):
                item, weight = _split_weight(item, sign)
                if isinstance(item, str):
                    i = self.index_of(item)
                    terms.append(_Term(_unit64(self.vectors[i]), weight, i))
                else:
                    v = np.asarray(item, dtype=np.float32)
                    if v.shape != (self.dim,):
                        raise UsageError(f"a query vector must have {self.dim} values, not "
                                         f"shape {v.shape}")
                    if not v.any() or not np.isfinite(v).all():
                        raise UsageError("a query vector must be finite and not all zeros")
                    terms.append(_Term(_unit64(v), weight, None))
        if not any(t.weight > 0 for t in terms):
            raise UsageError("a query needs at least one positive key or vector")
        return terms

    def most_similar(self, positive=None, negative=None, topn: int = 10,
                     keep_query_words: bool = False, index: str = "exact",
                     **index_params) -> list[Neighbor]:
        """Nearest keys by cosine to the (weighted, normalised) combination of the terms."""
        return self.analogy(positive, negative, "add", topn, keep_query_words, index=index,
                            **index_params)

    def analogy(self, positive=None, negative=None, method: str = "add", topn: int = 10,
                keep_query_words: bool = False, epsilon: float = COSMUL_EPSILON,
                index: str = "exact", **index_params) -> list[Neighbor]:
        """Rank keys for `positive - negative` by 3CosAdd ("add") or 3CosMul ("mul")."""
        ANALOGY_METHODS.check(method)
        at_least("the number of answers (topn, -k)", topn, 1)
        terms = self._terms(positive, negative)
        excluded = set() if keep_query_words else {t.index for t in terms if t.index is not None}
        want = min(len(self), topn + len(excluded))
        if method == "add":
            q = sum(t.weight * t.vector for t in terms) / sum(abs(t.weight) for t in terms)
            norm = np.linalg.norm(q)
            if norm == 0:
                raise UsageError("the query terms cancel out (their combination is zero)")
            rows = self.index(index, **index_params).search(q / norm, want)[1][0]
            rows = rows[rows >= 0]
            scores = self._cosines(rows, q / norm)
            order = np.argsort(-scores, kind="stable")
            scores, rows = scores[order], rows[order]
        else:
            if index != "exact":
                raise UsageError("3CosMul ranks every key exactly; it has no approximate index")
            dense = _cosmul(self.unit, [t for t in terms if t.weight > 0],
                            [t for t in terms if t.weight < 0], epsilon)
            rows = np.argpartition(-dense, want - 1)[:want] if want < len(dense) else \
                np.arange(len(dense))
            rows = rows[np.argsort(-dense[rows], kind="stable")]
            scores = dense[rows]
        out = [Neighbor(self.keys[r], float(s)) for s, r in zip(scores, rows)
               if r >= 0 and r not in excluded]
        return out[:topn]


    def _cosines(self, rows: np.ndarray, unit_query: np.ndarray) -> np.ndarray:
        """Cosines of the stored vectors at `rows` with a unit-length query, in float64.  The
        index ranks candidates with float32 sums, which drift over many dimensions (a 1e6-wide
        all-ones row scored 0.9986 with itself); the few rows it returns are scored exactly."""
        v = np.asarray(self.vectors[rows], dtype=np.float64)
        norms = np.linalg.norm(v, axis=1)
        return np.divide(v @ unit_query, norms, out=np.zeros(len(rows)), where=norms > 0)


def _unit64(vector) -> np.ndarray:
    """`vector` scaled to length 1 in float64 (a zero vector stays zero), so that a query
    loses nothing to float32 rounding before it is scored."""
    v = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _split_weight(item, sign: float):
    """(key or vector, weight): a (key, weight) pair carries its own weight (gensim style)."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (str, np.ndarray)) \
            and isinstance(item[1], (int, float)) and not isinstance(item[1], bool):
        return item[0], float(item[1])
    return item, sign


def _as_items(items) -> list:
    """None, a key, a vector, or a list of those -> a list of terms."""
    if items is None:
        return []
    if isinstance(items, (str, tuple)):
        return [items]
    if isinstance(items, np.ndarray):
        return list(items) if items.ndim == 2 else [items]
    items = list(items)
    if items and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        return [np.asarray(items, dtype=np.float32)]  # one raw vector given as a list
    return items


def _cosmul(unit, positive: list[_Term], negative: list[_Term], epsilon: float) -> np.ndarray:
    """Levy & Goldberg's multiplicative objective over every row, cosines shifted to [0, 1]."""
    out = np.ones(len(unit), dtype=np.float64)
    for t in positive:  # in the rows' own precision: a float64 term would copy every row
        out *= (1.0 + unit @ t.vector.astype(unit.dtype)) / 2.0
    den = np.ones(len(unit), dtype=np.float64)
    for t in negative:
        den *= (1.0 + unit @ t.vector.astype(unit.dtype)) / 2.0
    return out / (den + epsilon) if negative else out


def as_space(vectors, name: str | None = None) -> VectorSpace:
    """A VectorSpace from a VectorSpace, gensim KeyedVectors or an EmbeddingSet."""
    if isinstance(vectors, VectorSpace):
        return vectors
    if hasattr(vectors, "index_to_key"):
        return VectorSpace.from_keyed_vectors(vectors, name or "word vectors")
    if hasattr(vectors, "ids") and hasattr(vectors, "vectors"):
        return VectorSpace.from_embeddings(vectors)
    raise UsageError(f"expected word vectors or an EmbeddingSet, not {type(vectors).__name__}")
