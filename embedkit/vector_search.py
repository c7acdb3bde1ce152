"""Vector maths and nearest-neighbour search: the low floor, which imports nothing of embedkit
but the ground floor (errors, option declarations, the record schemas, atomic writes).

- cosine similarity (float64) and unit-normalised rows;
- nearest neighbours by cosine = inner product of L2-normalised vectors: exact (the default,
  blocked matrix products that keep only the candidates that can still reach the top k,
  `blockwise_topk`), or approximate with faiss (`ivf`: IndexIVFFlat; `hnsw`: IndexHNSWFlat,
  Malkov & Yashunin 2018), whose recall@k is measured against exact search (`measure_recall`);
  an approximate index is saved in faiss' own format next to a JSON sidecar that says which set
  it indexes and records the sha256 of the index file's bytes, and is loaded back only when
  those bytes, the sidecar's fields (`SIDECAR_FIELDS`) and what faiss reads agree
  (`NeighborIndex.save` / `.load`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from . import schema
from .errors import ArtifactError, NotFoundError, UsageError
from .files import atomic_write
from .options import INDEXES

# The names embedkit.neighbors has always re-exported (tests/test_query_layers.py holds them
# fixed); `sidecar_path`, `rebuild_hint` and the sidecar's schema (`SIDECAR_FIELDS`) are
# public too, imported from here.
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
        """Write the faiss index to `path` and, to `path`.json, its parameters, size, the sha256
        of the bytes written and `about` (what the caller needs to recognise the vectors later:
        a checksum, ids, a model).  Each file is written atomically, the index first: a run
        stopped between the two leaves the new index beside the old sidecar, whose sha256 it
        does not match, which `load` refuses."""
        if self.kind == "exact":
            raise UsageError("an exact index is the vectors themselves; save an ivf or hnsw one")
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self.index_).tobytes()
        atomic_write(path, data)
        params = {"nlist": getattr(self, "nlist_", self.nlist), "nprobe": self.nprobe,
                  "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "seed": self.seed}
        sidecar = {"kind": self.kind, "params": params, "ntotal": self.ntotal_,
                   "dim": int(self.index_.d), "index_sha256": hashlib.sha256(data).hexdigest(),
                   "about": about or {}}
        atomic_write(sidecar_path(path), json.dumps(sidecar, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, about_fields: dict | None = None) -> "NeighborIndex":
        """An index written by `save`, ready to search; its sidecar is `about_` (with `kind`,
        `params`, `ntotal`, `dim`, `index_sha256`, `about`).

        Nothing is trusted before it is checked, in this order: the sidecar against
        `SIDECAR_FIELDS` (its `about` against `about_fields`, the caller's schema, when given),
        the file's bytes against the sha256 the sidecar recorded (before faiss parses them), and
        what faiss read against the sidecar.  A failure is an ArtifactError (bad input, exit 5)
        naming the file and the command that rebuilds it: an index swapped for another, edited
        or cut short would otherwise answer with wrong neighbours, or crash faiss.
        """
        import faiss

        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path}: no such index file")
        sidecar = _read_sidecar(path, about_fields)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sidecar["index_sha256"]:
            raise ArtifactError(f"{path}: its bytes are not those {sidecar_path(path)} recorded "
                                "(sha256 differs): it was changed, damaged or replaced after it "
                                f"was built; {rebuild_hint(path, sidecar)}")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ArtifactError(f"{path}: faiss cannot read it ({_one_line(exc)}); "
                                f"{rebuild_hint(path, sidecar)}") from None
        _check_read_back(index, sidecar, path)
        loaded = cls(sidecar["kind"], **sidecar["params"])
        loaded.index_, loaded.ntotal_, loaded.about_ = index, int(index.ntotal), sidecar
        if sidecar["kind"] == "ivf":
            loaded.nlist_ = int(index.nlist)
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


def rebuild_hint(path, sidecar=None) -> str:
    """What to do about a saved index that cannot be used: the command that builds it again
    (with the kind its sidecar names, when that is one)."""
    kind = sidecar.get("kind") if isinstance(sidecar, dict) else None
    kind = kind if SIDECAR_FIELDS["kind"].test(kind) else "|".join(FAISS_TYPES)
    return f"rebuild it: embedkit index build FEATS --index {kind} -o {path}"


# --------------------------------------------------------------------------------------------
# the sidecar's schema

#: The faiss class each saved kind is (the approximate kinds of INDEXES).
FAISS_TYPES = {"ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}

#: Everything a sidecar holds, as `NeighborIndex.save` writes it (embedkit.schema); its
#: `about` is the caller's (`load(about_fields=...)`).  Missing and unknown fields are refused.
SIDECAR_FIELDS = {
    "kind": schema.one_of(*FAISS_TYPES),
    "params": {"nlist": schema.integer(1, optional=True),
               "nprobe": schema.integer(1, optional=True),
               "hnsw_m": schema.integer(1),
               "ef_search": schema.integer(1, optional=True),
               "seed": schema.integer(0)},
    "ntotal": schema.integer(1),
    "dim": schema.integer(1),
    "index_sha256": schema.SHA256,
    "about": schema.OBJECT,
}


def _one_line(exc: Exception) -> str:
    """faiss' message on one short line: its end says what failed (its start, where in C++)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][-160:]


def _read_sidecar(path: Path, about_fields: dict | None) -> dict:
    """The sidecar of the index at `path`, parsed and checked against SIDECAR_FIELDS (and its
    `about` against `about_fields`)."""
    side = sidecar_path(path)
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{side}: missing; an index is saved with the JSON file that says "
                            f"which vectors it holds; {rebuild_hint(path)}") from None
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ArtifactError(f"{side}: not an index description ({type(exc).__name__}); "
                            f"{rebuild_hint(path)}") from None
    fields = SIDECAR_FIELDS if about_fields is None else {**SIDECAR_FIELDS,
                                                          "about": about_fields}
    schema.check(sidecar, fields, side, rebuild_hint(path, sidecar), ArtifactError)
    return sidecar


def _check_read_back(index, sidecar: dict, path: Path):
    """What faiss read must be what the sidecar describes: the class of its kind, inner
    product, and its size (a check on the sidecar: the bytes already matched their sha256)."""
    import faiss

    expected = FAISS_TYPES[sidecar["kind"]]
    if type(index).__name__ != expected or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ArtifactError(f"{path}: faiss reads a {type(index).__name__} (metric "
                            f"{index.metric_type}) but {sidecar_path(path)} describes an "
                            f"inner-product {expected}; {rebuild_hint(path, sidecar)}")
    if (index.ntotal, index.d) != (sidecar["ntotal"], sidecar["dim"]):
        raise ArtifactError(f"{path}: holds {index.ntotal} x {index.d} vectors but its sidecar "
                            f"says {sidecar['ntotal']} x {sidecar['dim']}; "
                            f"{rebuild_hint(path, sidecar)}")


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
