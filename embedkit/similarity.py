"""Label-free dataset similarity: how close two sets of embeddings are, as distributions.

Every measure takes two EmbeddingSets (or plain [n, d] arrays) embedded by the same probe model
and layer, and computes in float64:

- ``cosine-mean``: cosine of the two mean embeddings (the course's seed method). 1 = same
  direction. Cheap, but blind to spread and shape: two sets with equal means look identical.
- ``emd``: Earth Mover's Distance domain similarity (Cui, Song, Sun, Howard, Belongie, "Large
  Scale Fine-Grained Categorization and Domain-Specific Transfer Learning", CVPR 2018, eq. 1-2).
  Each set is summarised by its per-class mean features weighted by class size; the EMD between
  the two weighted point sets (Euclidean ground distance, solved exactly as a transport linear
  programme) gives ``similarity = exp(-gamma * EMD)`` with gamma = 0.01 as in the paper. Where a
  set has no labels, k-means clusters (k = 10, fixed seed) stand in for its classes.
- ``frechet``: Fréchet distance between Gaussians fitted to the two sets (the FID formula,
  Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the
  matrix square root is computed exactly as a nuclear norm (below), never with a complex
  ``sqrtm`` whose imaginary noise must be discarded. 0 = same mean and covariance.
- ``mmd``: squared Maximum Mean Discrepancy (Gretton et al., JMLR 2012), unbiased estimator
  (eq. 3), RBF kernel ``exp(-|x - y|^2 / (2 sigma^2))`` with sigma = the median pairwise distance
  of the pooled sample (median heuristic). Near 0 (it can dip below) for two samples of one
  distribution. Sets larger than ``max_items`` are subsampled (fixed seed) to bound memory.
- ``cka``: linear Centered Kernel Alignment (Kornblith et al., ICML 2019) between two
  representations of the *same items* (paired by id): e.g. one dataset through two models or two
  layers. Undefined for different datasets (no shared ids): NaN with a note.

``dataset_similarity`` computes one value, ``similarity_matrix`` all pairs of several datasets,
``rank_sources`` orders candidate source datasets by their similarity to a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .embeddings import EmbeddingSet
from .errors import UsageError
from .options import Options

__all__ = ["EMD_CLUSTERS", "EMD_GAMMA", "MEASURE_NAMES", "MEASURES", "MMD_MAX_ITEMS", "as_array",
           "check_same_probe", "class_means", "cosine_mean", "dataset_names", "dataset_similarity",
           "earth_movers_distance", "emd_similarity", "frechet_distance", "has_labels",
           "linear_cka", "measure", "Measure", "median_bandwidth", "metric_names", "mmd2",
           "paired", "rank_sources", "similarity_matrix", "SimilarityMatrix", "trace_sqrt_product"]

#: Cui et al. (CVPR 2018) use gamma = 0.01 in exp(-gamma * EMD).
EMD_GAMMA = 0.01
#: Clusters standing in for classes when a set has no labels (EMD only).
EMD_CLUSTERS = 10
#: MMD works on at most this many items per set (random subsample, fixed seed).
MMD_MAX_ITEMS = 2000


# -- inputs ------------------------------------------------------------------------------------
def as_array(x) -> np.ndarray:
    """[n, d] float64 vectors of an EmbeddingSet or array."""
    vectors = x.vectors if isinstance(x, EmbeddingSet) else x
    a = np.asarray(vectors, dtype=np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise UsageError(f"expected a non-empty [n, d] set of vectors, got shape {a.shape}")
    return a


def _same_dim(a: np.ndarray, b: np.ndarray):
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"the two sets have different dimensions ({a.shape[1]} vs {b.shape[1]}):"
                         " embed both with the same --model and --layer")


def check_same_probe(sets: dict):
    """Distribution measures need every set from one model, layer and pooling."""
    prints = {name: s.meta.get("fingerprint") for name, s in sets.items()
              if isinstance(s, EmbeddingSet) and s.meta.get("fingerprint")}
    if len(set(prints.values())) > 1:
        detail = ", ".join(f"{n}: {sets[n].meta.get('model')}@{sets[n].meta.get('layer')}"
                           for n in prints)
        raise UsageError(f"these sets were embedded differently ({detail}); compare sets from "
                         "the same --model/--layer (cka is the measure for two models)")


# -- the measures ------------------------------------------------------------------------------
def cosine_mean(a, b) -> float:
    """Cosine of the mean embeddings (the seed method): 1 same direction, 0 orthogonal."""
    a, b = as_array(a), as_array(b)
    _same_dim(a, b)
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    na, nb = np.linalg.norm(ma), np.linalg.norm(mb)
    if na == 0 or nb == 0:
        raise UsageError("a set has a zero mean embedding: cosine-mean is undefined for it")
    return float(ma @ mb / (na * nb))


def has_labels(x) -> bool:
    """Whether an EmbeddingSet (or a label array) labels every item."""
    labels = x.labels if isinstance(x, EmbeddingSet) else x
    return labels is not None and all(v is not None and v == v for v in labels)


def class_means(x, labels=None, n_clusters: int = EMD_CLUSTERS, seed: int = 0):
    """(means [k, d], weights [k] summing to 1, how): per-class mean features weighted by class
    size; k-means clusters when there are no labels."""
    a = as_array(x)
    if labels is None and isinstance(x, EmbeddingSet):
        labels = x.labels
    if has_labels(labels):
        how = "labels"
    else:
        from sklearn.cluster import KMeans

        k = min(n_clusters, len(np.unique(a, axis=0)))
        labels = KMeans(k, n_init=4, random_state=seed).fit_predict(a) if k > 1 \
            else np.zeros(len(a), int)
        how = f"k-means ({k} clusters)"
    names, index, counts = np.unique(np.asarray(labels).astype(str), return_inverse=True,
                                     return_counts=True)
    means = (np.eye(len(names))[index].T @ a) / counts[:, None]
    return means, counts / counts.sum(), how


def earth_movers_distance(points_a, weights_a, points_b, weights_b) -> float:
    """Exact EMD between two weighted point sets (weights each summing to 1), Euclidean ground
    distance, solved as the transport linear programme min <F, D> s.t. F 1 = wa, F' 1 = wb,
    F >= 0 (scipy HiGHS)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack
    from scipy.spatial.distance import cdist

    wa, wb = np.asarray(weights_a, float), np.asarray(weights_b, float)
    wa, wb = wa / wa.sum(), wb / wb.sum()
    cost = cdist(np.asarray(points_a, float), np.asarray(points_b, float))
    k, m = cost.shape
    if k == 1 or m == 1:  # one side is a single point: every unit of mass moves straight there
        return float((cost * (wa[:, None] * wb[None, :])).sum())
    rows = np.repeat(np.arange(k), m)
    cols = np.tile(np.arange(m), k)
    flows = np.arange(k * m)
    a_eq = vstack([coo_matrix((np.ones(k * m), (rows, flows)), shape=(k, k * m)),
                   coo_matrix((np.ones(k * m), (cols, flows)), shape=(m, k * m))]).tocsr()
    res = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([wa, wb]), bounds=(0, None),
                  method="highs")
    if res.status != 0:
        raise UsageError(f"the EMD transport problem did not solve: {res.message}")
    return float(res.fun)


def emd_similarity(a, b, gamma: float = EMD_GAMMA, labels_a=None, labels_b=None,
                   n_clusters: int = EMD_CLUSTERS) -> float:
    """Cui et al. (CVPR 2018) domain similarity exp(-gamma * EMD) between class-mean features.

    Labels come from the EmbeddingSets (or `labels_a` / `labels_b`); a set without labels is
    grouped by k-means into `n_clusters` clusters. The result depends on the feature scale:
    gamma = 0.01 was chosen by the paper for ResNet features; compare values from one probe."""
    ea, eb = as_array(a), as_array(b)
    _same_dim(ea, eb)
    pa, wa, _ = class_means(a, labels_a, n_clusters)
    pb, wb, _ = class_means(b, labels_b, n_clusters)
    return float(np.exp(-gamma * earth_movers_distance(pa, wa, pb, wb)))


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0, keepdims=True)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) for the sample covariances (ddof 1) of a and b, exactly.

    The eigenvalues of S_a S_b are real and non-negative; they are the squared singular values
    of S_a^(1/2) S_b^(1/2), and also of Xa' Xb / sqrt((na-1)(nb-1)) (centred data), so the trace
    is a nuclear norm, computed in whichever space is smaller (items or dimensions)."""
    ca, cb = _centred(a), _centred(b)
    na, nb, d = len(a), len(b), a.shape[1]
    if na * nb <= d * d:
        cross = ca @ cb.T / np.sqrt((na - 1) * (nb - 1))
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    sa = _psd_sqrt(ca.T @ ca / (na - 1))
    sb = _psd_sqrt(cb.T @ cb / (nb - 1))
    return float(np.linalg.svd(sa @ sb, compute_uv=False).sum())


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussian fits: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2).

    Covariances use ddof = 1 (as the FID reference code); each set needs at least 2 items.
    0 for identical sets; tiny negative round-off is clipped to 0."""
    a, b = as_array(a), as_array(b)
    _same_dim(a, b)
    if len(a) < 2 or len(b) < 2:
        raise UsageError("the Fréchet distance needs at least 2 items per set (a covariance)")
    mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    tr_a = float((_centred(a) ** 2).sum() / (len(a) - 1))
    tr_b = float((_centred(b) ** 2).sum() / (len(b) - 1))
    value = mean_term + tr_a + tr_b - 2 * trace_sqrt_product(a, b)
    scale = mean_term + tr_a + tr_b
    return max(value, 0.0) if value > -1e-9 * max(scale, 1.0) else value


def _subsample(a: np.ndarray, max_items: int | None, rng) -> np.ndarray:
    if max_items is None or len(a) <= max_items:
        return a
    return a[np.sort(rng.choice(len(a), max_items, replace=False))]


def median_bandwidth(a: np.ndarray, b: np.ndarray) -> float:
    """The median heuristic: median Euclidean distance between distinct pooled items."""
    from scipy.spatial.distance import pdist

    d = pdist(np.vstack([a, b]))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def mmd2(a, b, bandwidth: float | None = None, max_items: int | None = MMD_MAX_ITEMS,
         seed: int = 0) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with an RBF kernel of width `bandwidth`
    (default: the median heuristic on the pooled sample). Needs at least 2 items per set."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    a = _subsample(as_array(a), max_items, rng)
    b = _subsample(as_array(b), max_items, rng)
    _same_dim(a, b)
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise UsageError("MMD needs at least 2 items per set")
    sigma = bandwidth or median_bandwidth(a, b)
    gamma = 1.0 / (2 * sigma ** 2)
    kaa = np.exp(-gamma * cdist(a, a, "sqeuclidean"))
    kbb = np.exp(-gamma * cdist(b, b, "sqeuclidean"))
    kab = np.exp(-gamma * cdist(a, b, "sqeuclidean"))
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1))
                 + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean())


def paired(a, b, min_items: int = 3):
    """The rows of a and b for the items both hold (by id for EmbeddingSets; arrays are taken as
    already paired row by row), or None when fewer than `min_items` are shared."""
    if isinstance(a, EmbeddingSet) and isinstance(b, EmbeddingSet):
        where_b = {ident: i for i, ident in enumerate(b.ids)}
        rows = [(i, where_b[ident]) for i, ident in enumerate(a.ids) if ident in where_b]
        if len(rows) < min_items:
            return None
        ia, ib = map(list, zip(*rows))
        return as_array(a)[ia], as_array(b)[ib]
    a, b = as_array(a), as_array(b)
    if len(a) != len(b):
        raise UsageError(f"cka pairs items row by row: got {len(a)} and {len(b)} rows")
    return (a, b) if len(a) >= min_items else None


def linear_cka(a, b) -> float:
    """Linear CKA (Kornblith et al. 2019, eq. 5) between two representations of the same items:
    |Yc' Xc|_F^2 / (|Xc' Xc|_F |Yc' Yc|_F). Dimensions may differ. NaN when the sets share
    fewer than 3 items (different datasets: use a distribution measure)."""
    pair = paired(a, b)
    if pair is None:
        return float("nan")
    x, y = _centred(pair[0]), _centred(pair[1])
    if len(x) < max(x.shape[1], y.shape[1]):  # Gram form: n x n matrices
        kx, ky = x @ x.T, y @ y.T
        cross, self_x, self_y = (kx * ky).sum(), (kx * kx).sum(), (ky * ky).sum()
    else:
        cross = ((y.T @ x) ** 2).sum()
        self_x, self_y = ((x.T @ x) ** 2).sum(), ((y.T @ y) ** 2).sum()
    if self_x == 0 or self_y == 0:
        raise UsageError("cka is undefined for a representation that is constant over the items")
    return float(cross / np.sqrt(self_x * self_y))


# -- registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    name: str
    compute: Callable[..., float]
    higher_is_more_similar: bool
    description: str
    paired: bool = False  # compares two representations of the same items


MEASURES = {m.name: m for m in [
    Measure("cosine-mean", cosine_mean, True, "cosine of the mean embeddings (seed method)"),
    Measure("emd", emd_similarity, True,
            "exp(-0.01 EMD) between class-mean features (Cui et al. 2018)"),
    Measure("frechet", frechet_distance, False, "Fréchet distance of Gaussian fits (0 = same)"),
    Measure("mmd", mmd2, False, "unbiased MMD^2, RBF kernel, median bandwidth (0 = same)"),
    Measure("cka", linear_cka, True, "linear CKA of paired items (same ids)", paired=True),
]}


MEASURE_NAMES = Options("similarity metric", tuple(MEASURES))  # lists also take "all"


def measure(name: str) -> Measure:
    return MEASURES[MEASURE_NAMES.check(name)]


def metric_names(spec: str | Sequence[str] | None, default: str = "cosine-mean") -> list[str]:
    """'all', one name, or several -> validated list of measure names."""
    if spec is None:
        return [default]
    names = [spec] if isinstance(spec, str) else list(spec)
    if "all" in names:
        return list(MEASURES)
    return [measure(n).name for n in names]


def dataset_similarity(a, b, metric: str = "cosine-mean", **options) -> float:
    """One similarity measure between two datasets' embeddings.

    Args:
        a, b: EmbeddingSets (or [n, d] arrays) made by the same probe model and layer.
        metric: "cosine-mean" (the mean embeddings' cosine), "emd" (Cui et al. 2018),
            "frechet", "mmd" (unbiased MMD^2) or "cka" (paired items); see the module
            docstring for each and its direction (higher or lower = more similar).
        options: the measure's own parameters (e.g. `gamma` for emd).
    """
    m = measure(metric)
    if not m.paired and isinstance(a, EmbeddingSet) and isinstance(b, EmbeddingSet):
        check_same_probe({"A": a, "B": b})
    return m.compute(a, b, **options)


def _compute(m: Measure, a, b, options: dict) -> float:
    """One measure, given only the options its function takes (gamma only reaches emd)."""
    import inspect

    accepted = inspect.signature(m.compute).parameters
    return m.compute(a, b, **{k: v for k, v in options.items() if k in accepted})


@dataclass
class SimilarityMatrix:
    names: list[str]
    metric: str
    values: np.ndarray  # [k, k] float64; NaN where undefined
    higher_is_more_similar: bool
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One dict per dataset: its name, then its value against every dataset."""
        return [{"dataset": a, **{b: float(self.values[i, j]) for j, b in enumerate(self.names)}}
                for i, a in enumerate(self.names)]

    def as_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_more_similar": self.higher_is_more_similar,
                "names": self.names, "matrix": [[None if np.isnan(v) else float(v) for v in row]
                                                for row in self.values],
                "notes": self.notes}


def _named(sets) -> dict:
    if isinstance(sets, dict):
        return dict(sets)
    return {str(s.meta.get("dataset", i)) if isinstance(s, EmbeddingSet) else str(i): s
            for i, s in enumerate(sets)}


def similarity_matrix(sets, metric: str = "cosine-mean", **options) -> SimilarityMatrix:
    """All pairs of several sets ({name: set} or a list) under one measure (symmetric)."""
    sets = _named(sets)
    m = measure(metric)
    if not m.paired:
        check_same_probe(sets)
    names = list(sets)
    k = len(names)
    values = np.full((k, k), np.nan)
    for i in range(k):
        if not m.higher_is_more_similar:  # a distance from a set to itself is 0 by definition,
            values[i, i] = 0.0            # not an estimate (unbiased MMD^2 dips below 0 there)
        for j in range(i + (not m.higher_is_more_similar), k):
            values[i, j] = values[j, i] = _compute(m, sets[names[i]], sets[names[j]], options)
    notes = []
    if metric == "emd":
        notes += [f"{n}: class means from " + ("its labels" if has_labels(s) else "k-means "
                  "clusters (no labels)") for n, s in sets.items()]
    if m.paired and np.isnan(values).any():
        notes.append("cka compares the same items under two representations; NaN where two "
                     "sets share fewer than 3 ids")
    return SimilarityMatrix(names, metric, values, m.higher_is_more_similar, notes)


def rank_sources(target, sources, metrics: str | Sequence[str] = "cosine-mean",
                 **options) -> list[dict]:
    """Candidate source datasets ranked by similarity to the target (most similar first).

    `sources` is {name: set} or a list; the first metric orders the ranking, the others are
    reported beside it. Each source stands for the model one would train on it: the more
    similar the source, the better the expected transfer (the course's rule; Cui et al. 2018
    found EMD similarity to track transfer accuracy)."""
    sources = _named(sources)
    names = metric_names(metrics)
    if not all(measure(n).paired for n in names):
        check_same_probe({"target": target, **sources})
    rows = [{"source": name, **{n: _compute(measure(n), target, s, options) for n in names}}
            for name, s in sources.items()]
    first = measure(names[0])
    sign = -1 if first.higher_is_more_similar else 1
    rows.sort(key=lambda r: (np.isnan(r[first.name]), sign * np.nan_to_num(r[first.name])))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return [{"rank": r.pop("rank"), **r} for r in rows]


def dataset_names(specs) -> list[str]:
    """Short unique names for datasets in a comparison: the folder or file name (#2, #3 on a
    clash)."""
    names, taken = [], set()
    for spec in specs:
        base = Path(str(spec).rstrip("/")).name or str(spec)
        base = base.removesuffix(".parquet")
        name, i = base, 2
        while name in taken:
            name, i = f"{base}#{i}", i + 1
        taken.add(name)
        names.append(name)
    return names
