"""Vector maths and nearest-neighbour search: the low floor, which imports nothing of embedkit
but its errors.

- cosine similarity (float64) and unit-normalised rows;
- nearest neighbours by cosine = inner product of L2-normalised vectors: exact (the default,
  blocked matrix products that keep only the candidates that can still reach the top k,
  `blockwise_topk`), or approximate with faiss (`ivf`: IndexIVFFlat; `hnsw`: IndexHNSWFlat,
  Malkov & Yashunin 2018), whose recall@k is measured against exact search (`measure_recall`);
  an approximate index is saved with faiss' `write_index` next to a JSON sidecar that says which
  set it indexes, and loaded back with `read_index` (`NeighborIndex.save` / `.load`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import NotFoundError, UsageError
from .options import INDEXES

# The names embedkit.neighbors has always re-exported (tests/test_query_layers.py holds them
# fixed); `sidecar_path` is public too, imported from here.
__all__ = ["INDEX_KINDS", "NeighborIndex", "blockwise_topk", "cosine", "measure_recall",
           "recall_at_k", "unit_rows"]

INDEX_KINDS = INDEXES.values  # declared in embedkit.options


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
    `fit` returns self; the faiss index of ivf / hnsw is `index_`.  A fitted approximate index
    is saved with `save` and read back, unchanged, with `NeighborIndex.load`.
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
        INDEXES.check(self.kind)
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

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, about: dict | None = None) -> Path:
        """Write the faiss index to `path` and its parameters, size and `about` (what the caller
        needs to recognise the vectors later: a checksum, ids, a model) to `path`.json."""
        if self.kind == "exact":
            raise UsageError("an exact index is the vectors themselves; save an ivf or hnsw one")
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index_, str(path))
        params = {"nlist": getattr(self, "nlist_", self.nlist), "nprobe": self.nprobe,
                  "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "seed": self.seed}
        sidecar = {"kind": self.kind, "params": params, "ntotal": self.ntotal_,
                   "dim": int(self.index_.d), "about": about or {}}
        sidecar_path(path).write_text(json.dumps(sidecar, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeighborIndex":
        """An index written by `save`, ready to search; its sidecar is `about_` (with `kind`,
        `params`, `ntotal`, `dim`)."""
        import faiss

        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path}: no such index file")
        try:
            sidecar = json.loads(sidecar_path(path).read_text())
            kind, params = sidecar["kind"], sidecar["params"]
        except FileNotFoundError:
            raise NotFoundError(f"{sidecar_path(path)}: missing; an index is saved with the "
                                "JSON file that says which vectors it holds") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{sidecar_path(path)}: not an index description "
                             f"({type(exc).__name__})") from None
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            raise UsageError(f"{path}: not a faiss index file") from None
        if index.ntotal != sidecar.get("ntotal") or index.d != sidecar.get("dim"):
            raise UsageError(f"{path}: holds {index.ntotal} x {index.d} vectors but its sidecar "
                             f"says {sidecar.get('ntotal')} x {sidecar.get('dim')}")
        loaded = cls(kind, **params)
        loaded.index_, loaded.ntotal_, loaded.about_ = index, int(index.ntotal), sidecar
        if kind == "ivf":
            loaded.nlist_ = params["nlist"]
        return loaded

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


def sidecar_path(index_path: str | os.PathLike) -> Path:
    """Where `NeighborIndex.save` describes the index at `index_path`."""
    return Path(f"{index_path}.json")


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k rows that `found` returned (rows = queries)."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, int((t >= 0).sum()))
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 0.0


#: Rows `measure_recall` samples as queries (all of them in a smaller set).
RECALL_QUERIES = 200


def measure_recall(index: NeighborIndex, vectors, k: int = 10, queries: int = RECALL_QUERIES,
                   seed: int = 0) -> float:
    """recall@k of a fitted index against exact search, on a sample of its own rows."""
    x = np.asarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), min(queries, len(x)), replace=False)
    exact = NeighborIndex("exact").fit(x)
    _, truth = exact.search(x[rows], k)
    _, found = index.search(x[rows], k)
    return recall_at_k(found, truth)


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
