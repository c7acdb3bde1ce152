"""Exact references computed the plainest way, in float64 NumPy, for checking embedkit's own
search and its recall measurement against something that does not share their code."""

from __future__ import annotations

import numpy as np


def top_k(queries, vectors, k: int, block: int = 512) -> np.ndarray:
    """Row indices of the k highest inner products per query, best first (float64; queries in
    blocks, so 6,000 x 6,000 never needs 288 MB at once)."""
    x = np.asarray(vectors, np.float64)
    q = np.asarray(queries, np.float64)
    return np.concatenate([np.argsort(-(q[i:i + block] @ x.T), axis=1, kind="stable")[:, :k]
                           for i in range(0, len(q), block)])


def recall(index, unit, rows, k: int = 10) -> float:
    """recall@k of `index` (fitted on `unit`) for the queries `unit[rows]`: the mean share of each
    query's exact top k that the index returned."""
    truth = top_k(np.asarray(unit)[rows], unit, k)
    _, found = index.search(np.asarray(unit, np.float32)[rows], k)
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
