"""Queries over vectors: cosine, nearest neighbours (faiss), analogies, and vector evaluation.

`VectorSpace` holds keys (words, or the ids of an EmbeddingSet) and their vectors, with the
unit-normalised copy and the search indexes derived once, on first use:
- nearest neighbours by cosine = inner product of L2-normalised vectors: exact (the default,
  blocked matrix products), or approximate with faiss (`ivf`: IndexIVFFlat; `hnsw`:
  IndexHNSWFlat), whose recall@k is measured against exact search (`measure_recall`);
- queries accepted in every style, normalised at the boundary: a key, a list of keys, raw
  vectors, `positive=` / `negative=` lists, (key, weight) pairs.  Every term is unit-normalised,
  then combined as sum(w_i t_i) / sum|w_i| (gensim's `most_similar` arithmetic);
- the query keys themselves are DROPPED from the answers by default, as gensim does and as the
  analogy literature evaluates; `keep_query_words=True` keeps them (each result says which);
- analogies a : b :: c : ?  ("b - a + c") by 3CosAdd, argmax cos(d, b - a + c) on unit vectors,
  and 3CosMul (Levy & Goldberg 2014), argmax cos'(d,b) cos'(d,c) / (cos'(d,a) + eps) with
  cos' = (1 + cos) / 2 and eps = 0.001 as in the paper (gensim uses 1e-6);
- unknown keys raise NotFoundError listing close spellings.

`evaluate_analogies` and `evaluate_word_pairs` reproduce gensim's `evaluate_word_analogies` /
`evaluate_word_pairs` (restrict_vocab = 300,000 most frequent words, case-insensitive, the
same OOV skipping), but solve every question at once: blocks of questions against blocks of the
vocabulary by matrix products, keeping only the candidates that can still reach the top 5.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from .errors import BadInputError, NotFoundError, UsageError

INDEX_KINDS = ("exact", "ivf", "hnsw")
METHODS = ("add", "mul")
RESTRICT_VOCAB = 300_000
COSMUL_EPSILON = 1e-3


# --------------------------------------------------------------------------------------------
# Cosine


def cosine(a, b):
    """Cosine similarity (float64).  Two vectors give a float; [n, d] against [d] gives [n];
    [n, d] against [m, d] gives the [n, m] matrix."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] != b.shape[-1]:
        raise UsageError(f"cosine: vectors of different length ({a.shape[-1]} and "
                         f"{b.shape[-1]})")
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    if (na == 0).any() or (nb == 0).any():
        raise UsageError("cosine of a zero vector is undefined")
    sims = (a / na) @ np.swapaxes(b / nb, -1, -2) if b.ndim > 1 else (a / na) @ (b / nb[..., 0])
    return float(sims) if np.ndim(sims) == 0 else sims


def unit_rows(vectors) -> np.ndarray:
    """float32 rows scaled to length 1 (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


# --------------------------------------------------------------------------------------------
# faiss indexes


class NeighborIndex:
    """Top-k inner-product search over unit vectors (= cosine), exact or approximate.

    kind:
    - "exact": every score computed, blocks of queries times blocks of rows through NumPy's
      BLAS, keeping only candidates that can still reach the top k (`blockwise_topk`); on the
      reference machine 3-5x faster than faiss' IndexFlatIP, whose bundled BLAS is older;
    - "ivf": faiss IndexIVFFlat, `nlist` k-means cells trained on up to 64 points per cell,
      `nprobe` cells visited per query (defaults sqrt(n) and nlist / 8);
    - "hnsw": faiss IndexHNSWFlat, `hnsw_m` links per node, `ef_search` candidates per query
      (defaults 32 and 128).
    `fit` returns self; the faiss index of ivf / hnsw is `index_`.
    """

    def __init__(self, kind: str = "exact", nlist: int | None = None, nprobe: int | None = None,
                 hnsw_m: int = 32, ef_search: int | None = None, seed: int = 0):
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.seed = seed

    def fit(self, vectors) -> "NeighborIndex":
        if self.kind not in INDEX_KINDS:
            raise UsageError(f"unknown index '{self.kind}': choose {', '.join(INDEX_KINDS)}")
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        self.ntotal_ = n
        if self.kind == "exact":
            self.vectors_ = x
            return self
        import faiss

        if self.kind == "ivf":
            nlist = self.nlist or max(1, min(int(round(math.sqrt(n))), n // 39 or 1))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(self.seed)
            sample = x if n <= 64 * nlist else x[np.sort(rng.choice(n, 64 * nlist, False))]
            index.cp.seed = self.seed
            index.train(sample)
            index.nprobe = self.nprobe or max(1, nlist // 8)
            self.nlist_ = nlist
        else:
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 40
            index.hnsw.efSearch = self.ef_search or 128
        index.add(x)
        self.index_ = index
        return self

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], row indices [q, k]), best first; -1 where fewer than k were found."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.ntotal_)
        if self.kind == "exact":
            x = self.vectors_
            rows = blockwise_topk(lambda q0, q1, r0, r1: q[q0:q1] @ x[r0:r1].T, len(x), len(q),
                                  k, np.full((len(q), 1), -1))
            scores = np.einsum("qd,qkd->qk", q, x[rows])
            return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows
        if self.kind == "hnsw":
            self.index_.hnsw.efSearch = max(self.index_.hnsw.efSearch, k)
        return self.index_.search(q, k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k rows that `found` returned (rows = queries)."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 0.0


def measure_recall(index: NeighborIndex, vectors, k: int = 10, queries: int = 200,
                   seed: int = 0) -> float:
    """recall@k of a fitted index against exact search, on a sample of its own rows."""
    x = np.asarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), min(queries, len(x)), replace=False)
    exact = NeighborIndex("exact").fit(x)
    _, truth = exact.search(x[rows], k)
    _, found = index.search(x[rows], k)
    return recall_at_k(found, truth)


# --------------------------------------------------------------------------------------------
# Vector spaces and queries


class Neighbor(NamedTuple):
    key: str
    score: float


@dataclass
class _Term:
    vector: np.ndarray  # unit length, float32
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

    def index(self, kind: str = "exact", **params) -> NeighborIndex:
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
                    terms.append(_Term(self.unit[i], weight, i))
                else:
                    v = np.asarray(item, dtype=np.float32)
                    if v.shape != (self.dim,):
                        raise UsageError(f"a query vector must have {self.dim} values, not "
                                         f"shape {v.shape}")
                    norm = np.linalg.norm(v)
                    if norm == 0:
                        raise UsageError("a query vector is all zeros")
                    terms.append(_Term(v / norm, weight, None))
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
        if method not in METHODS:
            raise UsageError(f"unknown analogy method '{method}': choose add or mul")
        if topn < 1:
            raise UsageError(f"-k must be at least 1, not {topn}")
        terms = self._terms(positive, negative)
        excluded = set() if keep_query_words else {t.index for t in terms if t.index is not None}
        want = min(len(self), topn + len(excluded))
        if method == "add":
            q = sum(t.weight * t.vector for t in terms) / sum(abs(t.weight) for t in terms)
            norm = np.linalg.norm(q)
            if norm == 0:
                raise UsageError("the query terms cancel out (their combination is zero)")
            scores, rows = self.index(index, **index_params).search(q / norm, want)
            scores, rows = scores[0], rows[0]
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
    for t in positive:
        out *= (1.0 + unit @ t.vector) / 2.0
    den = np.ones(len(unit), dtype=np.float64)
    for t in negative:
        den *= (1.0 + unit @ t.vector) / 2.0
    return out / (den + epsilon) if negative else out


def parse_expression(expr: str) -> tuple[list[str], list[str]]:
    """'king - man + woman' -> (['king', 'woman'], ['man']).  Terms are separated by spaced
    + / - signs (a sign glued to a word also works: 'king -man +woman'); hyphenated words such
    as 'e-mail' stay whole."""
    positive, negative, sign = [], [], 1
    for tok in expr.split():
        while tok[:1] in "+-" and tok:
            sign = -1 if tok[0] == "-" else 1
            tok = tok[1:]
        if tok:
            (positive if sign > 0 else negative).append(tok)
            sign = 1
    if not positive:
        raise UsageError(f"'{expr}': an analogy needs at least one positive word, e.g. "
                         "'king - man + woman'")
    return positive, negative


def as_space(vectors, name: str | None = None) -> VectorSpace:
    """A VectorSpace from a VectorSpace, gensim KeyedVectors or an EmbeddingSet."""
    if isinstance(vectors, VectorSpace):
        return vectors
    if hasattr(vectors, "index_to_key"):
        return VectorSpace.from_keyed_vectors(vectors, name or "word vectors")
    if hasattr(vectors, "ids") and hasattr(vectors, "vectors"):
        return VectorSpace.from_embeddings(vectors)
    raise UsageError(f"expected word vectors or an EmbeddingSet, not {type(vectors).__name__}")


def word_space(model: str | None = None, limit: int | None = None) -> VectorSpace:
    """The vocabulary of a word-vectors backbone (default: the bundled GloVe) as a VectorSpace."""
    from .registry import create_backbone, default_model

    name = model or default_model("text")
    backbone = create_backbone(name, limit=limit)
    kv = getattr(backbone, "keyed_vectors", None)
    if kv is None:
        raise UsageError(f"{name} has no word vocabulary (it embeds whole texts); use word "
                         "vectors (glove-6b-50d, or a .kv/.bin/.txt/.vec file), or compare "
                         f"texts with: embedkit cosine TEXT1 TEXT2 --model {name}")
    return VectorSpace.from_keyed_vectors(kv, name)


def parse_vector(text) -> np.ndarray | None:
    """'-0.4,0.8' / '-0.4 0.8' / '[-0.4, 0.8]' -> a float vector; None if `text` is not one."""
    if not isinstance(text, str):
        return None
    parts = [p for p in re.split(r"[\s,;]+", text.strip().strip("[]()")) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return np.asarray(values, dtype=np.float64) if len(values) >= 2 else None


def set_query(emb, query: str):
    """What `query` means for the EmbeddingSet `emb`: one of its ids (returned as the key), the
    path of one of its files (its id), or a new item (an image file or a text) embedded with the
    set's own model and options (returned as a vector)."""
    import os

    if query in set(emb.ids):
        return query
    root = emb.meta.get("dataset")
    if root and os.path.exists(query):
        rel = os.path.relpath(os.path.abspath(query), root).replace(os.sep, "/")
        if rel in set(emb.ids):
            return rel
    if emb.meta.get("modality") == "image" and not os.path.isfile(query):
        raise NotFoundError(f"'{query}' is neither an id of the set nor an image file; "
                            f"ids look like '{emb.ids[0]}'")
    return embed_like(emb, [query])[0]


def embed_like(emb, items: list) -> np.ndarray:
    """New items embedded exactly as the set `emb` was (same model, layer, pooling, norm)."""
    from .extract import extract

    meta = emb.meta
    if not meta.get("model"):
        raise UsageError("this embeddings file does not say which model made it, so new items "
                         "cannot be embedded like it; query it by id")
    got = extract(list(items), meta["model"], layer=meta.get("layer"), pool=meta.get("pool"),
                  normalize=bool(meta.get("normalize")), progress=False)
    _raise_skipped(got, items)
    if meta.get("fingerprint") and got.meta["fingerprint"] != meta["fingerprint"]:
        raise UsageError(f"the set was embedded by {meta['model']} with options that cannot be "
                         "reproduced here (its fingerprint differs); query it by id")
    return got.vectors


def _raise_skipped(result, items: list):
    if len(result) == len(items):
        return
    ident, reason = result.summary.skipped[0] if result.summary.skipped else ("?", "skipped")
    item = items[int(ident)] if str(ident).isdigit() and int(ident) < len(items) else ident
    raise BadInputError(f"{item!r}: {reason}")


def item_vectors(items: list, model: str | None = None, embeddings=None) -> np.ndarray:
    """Vectors for a few query items, each one of: a raw vector ('-0.4,0.8'); with `embeddings`
    (an EmbeddingSet or its file) an id, file or text resolved by `set_query`; otherwise an image
    path or a text embedded by `model` (default: efficientnet_lite0 for images, glove-6b-50d
    for texts).  An out-of-vocabulary word is reported with close spellings."""
    raw = [parse_vector(x) for x in items]
    if all(v is not None for v in raw):
        return np.stack(raw) if len({len(v) for v in raw}) == 1 else _mismatch(raw)
    if embeddings is not None:
        from .extract import embeddings_of

        emb = embeddings_of(embeddings)
        space = VectorSpace.from_embeddings(emb)
        out = []
        for x in items:
            q = set_query(emb, x)
            out.append(space.vectors[space.index_of(q)] if isinstance(q, str) else q)
        return np.stack(out).astype(np.float64)
    from .extract import extract

    try:
        got = extract(list(items), model, progress=False)
    except BadInputError:
        _raise_oov_word(items, model)
        raise
    if len(got) != len(items):
        _raise_oov_word(items, model)
        _raise_skipped(got, items)
    return got.vectors.astype(np.float64)


def _raise_oov_word(items: list, model: str | None):
    """For single words missing from a word-vectors model: the error with close spellings."""
    import os

    from .text import tokenize

    if any(os.path.isfile(str(x)) for x in items):
        return
    words = [x for x in items if isinstance(x, str) and len(tokenize(x)) == 1]
    if not words or (model and not _is_word_model(model)):
        return
    space = word_space(model)
    for w in words:
        if tokenize(w)[0] not in space:
            raise NotFoundError(space.missing_message(tokenize(w)[0]))


def _is_word_model(model: str) -> bool:
    from .registry import resolve_family

    return getattr(resolve_family(model), "name", "") == "word_vectors"


def _mismatch(raw):
    raise UsageError(f"vectors of different lengths: {', '.join(str(len(v)) for v in raw)}")


# --------------------------------------------------------------------------------------------
# Batched top-k


def blockwise_topk(score_block, n_rows: int, n_queries: int, k: int, exclude: np.ndarray,
                   query_batch: int = 512, first: int = 8192, chunk: int = 16384) -> np.ndarray:
    """Exact top-k row indices [n_queries, k], best first, of a score matrix never held whole.

    `score_block(q0, q1, r0, r1)` returns the float32 scores of queries q0:q1 against rows r0:r1;
    `exclude` [n_queries, m] lists rows each query must skip (-1 = none).  The k-th best score
    among the first `first` rows is a lower bound on the final k-th best, so later blocks only
    keep entries at or above it: the top k is exact and the candidate lists stay short.
    """
    out = np.full((n_queries, k), -1, dtype=np.int64)
    for q0 in range(0, n_queries, query_batch):
        q1 = min(n_queries, q0 + query_batch)
        ex = exclude[q0:q1]
        cand_rows, cand_cols, cand_scores = [], [], []
        threshold = None
        for r0, r1 in _row_blocks(n_rows, first, chunk):
            s = score_block(q0, q1, r0, r1)
            hit = (ex >= r0) & (ex < r1)
            if hit.any():
                qi, slot = np.divmod(np.flatnonzero(hit), hit.shape[1])
                s[qi, ex[qi, slot] - r0] = -np.inf
            if threshold is None:
                kk = min(k, r1 - r0)
                threshold = np.partition(s, -kk, axis=1)[:, -kk]
            rows, cols = np.divmod(np.flatnonzero(s >= threshold[:, None]), r1 - r0)
            cand_rows.append(rows)
            cand_cols.append(cols + r0)
            cand_scores.append(s[rows, cols])
        rows = np.concatenate(cand_rows)
        cols = np.concatenate(cand_cols)
        scores = np.concatenate(cand_scores)
        order = np.lexsort((cols, -scores, rows))  # by query, then best score, then lower row
        rows, cols, scores = rows[order], cols[order], scores[order]
        starts = np.searchsorted(rows, np.arange(q1 - q0))
        rank = np.arange(len(rows)) - starts[rows]
        keep = (rank < k) & np.isfinite(scores)
        out[q0 + rows[keep], rank[keep]] = cols[keep]
    return out


def _row_blocks(n_rows: int, first: int, chunk: int):
    yield 0, min(first, n_rows)
    for r0 in range(min(first, n_rows), n_rows, chunk):
        yield r0, min(n_rows, r0 + chunk)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class SectionScore:
    section: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class AnalogyReport:
    path: str
    method: str
    restrict_vocab: int
    sections: list[SectionScore]
    questions: int  # well-formed questions in the file
    oov_questions: int  # skipped: a word outside the restricted vocabulary

    @property
    def correct(self) -> int:
        return sum(s.correct for s in self.sections)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.sections)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def oov_ratio(self) -> float:
        return self.oov_questions / self.questions if self.questions else 0.0

    def as_dict(self) -> dict:
        return {"path": self.path, "method": self.method, "restrict_vocab": self.restrict_vocab,
                "accuracy": self.accuracy, "correct": self.correct, "evaluated": self.total,
                "questions": self.questions, "oov_questions": self.oov_questions,
                "oov_ratio": self.oov_ratio,
                "sections": [{**asdict(s), "accuracy": s.accuracy} for s in self.sections]}


def default_test_file(name: str) -> str:
    """A file of gensim's bundled test data (questions-words.txt, wordsim353.tsv, ...)."""
    from gensim.test.utils import datapath

    return datapath(name)


def analogy_sample_lines(per_section: int, path: str | None = None) -> list[str]:
    """The lines of an analogy file (default: the Google set) cut to the first `per_section`
    questions of each section, section headers kept: a quick, representative subset."""
    lines, kept = [], 0
    with open(path or default_test_file("questions-words.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith(": "):
                lines.append(line)
                kept = 0
            elif kept < per_section:
                lines.append(line)
                kept += 1
    return lines


def _restricted_vocab(space: VectorSpace, n: int, case_insensitive: bool):
    """gensim's `ok_vocab` for the first `n` keys: folded key (upper-cased) -> row of its first
    occurrence; and the folded keys by row."""
    folded = [k.upper() for k in space.keys[:n]] if case_insensitive else space.keys[:n]
    return dict(zip(reversed(folded), range(len(folded) - 1, -1, -1))), folded


def read_analogies(path: str, case_insensitive: bool = True):
    """Google-format questions: yields (section, [a, b, c, expected]) and counts bad lines."""
    sections: list[tuple[str, list[list[str]]]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode("utf-8")
            if line.startswith(": "):
                sections.append((line.lstrip(": ").strip(), []))
                continue
            words = line.split()
            if len(words) != 4:
                continue
            if not sections:
                raise BadInputError(f"{path}:{lineno}: a question before the first "
                                    "': section' header")
            sections[-1][1].append([w.upper() for w in words] if case_insensitive else words)
    return sections


def evaluate_analogies(vectors, path: str | None = None, restrict_vocab: int = RESTRICT_VOCAB,
                       case_insensitive: bool = True, method: str = "add",
                       epsilon: float = COSMUL_EPSILON) -> AnalogyReport:
    """Accuracy on an analogy file in the Google `questions-words.txt` format, per section.

    Matches gensim's `KeyedVectors.evaluate_word_analogies` (method "add"): questions with a
    word outside the first `restrict_vocab` keys are skipped and counted; the answer is the best
    of the first `restrict_vocab` keys other than the three question words (in any case).
    """
    if method not in METHODS:
        raise UsageError(f"unknown analogy method '{method}': choose add or mul")
    space = as_space(vectors)
    path = path or default_test_file("questions-words.txt")
    n = min(restrict_vocab, len(space))
    vocab, folded = _restricted_vocab(space, n, case_insensitive)
    sections = read_analogies(path, case_insensitive)
    questions, oov = 0, 0
    per_section, rows = [], []
    for name, quads in sections:
        ok = []
        for quad in quads:
            questions += 1
            if all(w in vocab for w in quad):
                ok.append(quad)
            else:
                oov += 1
        per_section.append((name, len(rows), len(ok)))
        rows.extend(ok)
    idx = np.array([[vocab[w] for w in q[:3]] for q in rows], dtype=np.int64).reshape(-1, 3)
    top = _analogy_top5(space, n, idx, method, epsilon)
    correct = np.zeros(len(rows), dtype=bool)
    for i, quad in enumerate(rows):
        ignore = set(quad[:3])
        predicted = None
        for r in top[i]:
            if r < 0:
                break
            predicted = folded[r]
            if predicted not in ignore:
                break
        correct[i] = predicted == quad[3]
    scores = [SectionScore(name, int(correct[start:start + count].sum()), count)
              for name, start, count in per_section]
    return AnalogyReport(str(path), method, restrict_vocab, scores, questions, oov)


def _analogy_top5(space: VectorSpace, n: int, idx: np.ndarray, method: str,
                  epsilon: float) -> np.ndarray:
    """Top 5 rows (question words excluded) for every question (a, b, c) = idx rows."""
    if not len(idx):
        return np.zeros((0, 5), dtype=np.int64)
    vectors = np.asarray(space.vectors[:n], dtype=np.float32)
    norms = space.norms[:n]
    unit = space.unit
    a, b, c = (unit[idx[:, j]] for j in range(3))
    if method == "add":
        # gensim: mean of the unit vectors (b + c - a), normalised; scores V m / |V|
        q = unit_rows((b + c) - a)

        def score_block(q0, q1, r0, r1):
            return (q[q0:q1] @ vectors[r0:r1].T) / norms[r0:r1]
    else:
        vt = np.ascontiguousarray(vectors.T)

        def score_block(q0, q1, r0, r1):
            m = len(range(q0, q1))
            s = np.concatenate([a[q0:q1], b[q0:q1], c[q0:q1]]) @ vt[:, r0:r1] / norms[r0:r1]
            sa, sb, sc = (1 + s[:m]) / 2, (1 + s[m:2 * m]) / 2, (1 + s[2 * m:]) / 2
            return (sb * sc) / (sa + np.float32(epsilon))
    return blockwise_topk(score_block, n, len(idx), 5, idx)


@dataclass
class PairsReport:
    path: str
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    pairs: int  # pairs scored
    oov_pairs: int  # skipped: a word outside the restricted vocabulary

    @property
    def oov_ratio(self) -> float:
        return self.oov_pairs / (self.pairs + self.oov_pairs) if self.pairs + self.oov_pairs \
            else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "oov_ratio": self.oov_ratio}


def read_word_pairs(path: str, delimiter: str = "\t", case_insensitive: bool = True):
    """(word1, word2, score) triples from WordSim353 / SimLex-999 style files.

    gensim's format (`word1<TAB>word2<TAB>score`, '#' comments) is read as gensim reads it; the
    original SimLex-999.txt (a header with word1, word2, SimLex999 among other columns) is read
    from those columns."""
    triples = []
    fold = str.upper if case_insensitive else (lambda s: s)
    with open(path, encoding="utf8") as f:
        lines = f.readlines()
    header = lines[0].rstrip("\n").split(delimiter) if lines else []
    if {"word1", "word2", "SimLex999"} <= set(header):
        w1, w2, sc = (header.index(c) for c in ("word1", "word2", "SimLex999"))
        for line in lines[1:]:
            parts = line.rstrip("\n").split(delimiter)
            try:
                triples.append((fold(parts[w1]), fold(parts[w2]), float(parts[sc])))
            except (IndexError, ValueError):
                continue
        return triples
    for line in lines:
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) != 3:
            continue
        try:
            triples.append((fold(parts[0]), fold(parts[1]), float(parts[2])))
        except ValueError:
            continue
    return triples


def evaluate_word_pairs(vectors, path: str | None = None, delimiter: str = "\t",
                        restrict_vocab: int = RESTRICT_VOCAB,
                        case_insensitive: bool = True) -> PairsReport:
    """Pearson and Spearman correlation of cosine similarities with human judgements, as gensim's
    `KeyedVectors.evaluate_word_pairs` (pairs with a word outside the first `restrict_vocab`
    keys are skipped and counted)."""
    from scipy import stats

    space = as_space(vectors)
    path = path or default_test_file("wordsim353.tsv")
    vocab, _ = _restricted_vocab(space, min(restrict_vocab, len(space)), case_insensitive)
    triples = read_word_pairs(path, delimiter, case_insensitive)
    ok = [(vocab[a], vocab[b], s) for a, b, s in triples if a in vocab and b in vocab]
    if not ok:
        raise BadInputError(f"{path}: no word pair to score (wrong format, or every pair out of "
                            f"the vocabulary of {space.name})")
    ia, ib, gold = (np.array(col) for col in zip(*ok))
    unit = space.unit
    model = np.einsum("ij,ij->i", unit[ia], unit[ib])
    pearson = stats.pearsonr(gold, model)
    spearman = stats.spearmanr(gold, model)
    return PairsReport(str(path), float(pearson[0]), float(pearson[1]), float(spearman[0]),
                       float(spearman[1]), len(ok), len(triples) - len(ok))
