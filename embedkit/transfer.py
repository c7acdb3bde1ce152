"""Transferability: which pretrained model, read at which layer, will serve a labelled target.

Each score looks at the target's embeddings (or the source classifier's outputs) under one
candidate and its labels, without training the candidate; higher = better expected transfer.

- ``logme``: log maximum evidence of a Bayesian linear model on the features, per class
  (one-hot target), averaged and divided by n. You, Liu, Wang, Long, "LogME: Practical Assessment
  of Pre-trained Models for Transfer Learning", ICML 2021; the fixed-point maximisation is
  from their JMLR 2022 version ("Ranking and Tuning Pre-trained Models").
- ``leep``: log expected empirical prediction from the source classifier's softmax over source
  classes. Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations", ICML 2020.
- ``nce``: negative conditional entropy H(Y | Z) of target labels given the source classifier's
  hard predictions. Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
  Classification Tasks", ICCV 2019.
- ``hscore``: regularised H-score, tr(cov_a(f)^-1 (1 - a) cov(E[f|y])) with a Ledoit-Wolf
  shrinkage covariance. Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking
  transferability metrics, their peculiarities, stability and performance", ECML-PKDD 2022
  (the H-score itself: Bao et al., ICIP 2019).
- ``gbc``: Gaussian Bhattacharyya Coefficient, minus the summed Bhattacharyya coefficients
  between per-class Gaussians (diagonal covariance) after PCA to 64 dimensions. Pándy,
  Agostinelli, Uijlings, Ferrari, Mensink, "Transferability Estimation using Bhattacharyya Class
  Separability", CVPR 2022.
- ``transrate``: coding-rate mutual information between features and labels. Huang, Huang,
  Rong, Yang, Wei, "Frustratingly Easy Transferability Estimation", ICML 2022.
- ``sfda``: own-class probability under a regularised Fisher discriminant after a
  self-challenging mix. Shao, Zhao, Ge, Wang, Zhang, Luo, "Not All Models Are Equal: Predicting
  Model Transferability in a Self-challenging Fisher Space", ECCV 2022.
- ``knn``: leave-one-out k-nearest-neighbour accuracy (cosine, k = 5).
- ``linear-probe``: stratified 5-fold cross-validated accuracy of a logistic regression on
  standardised features (the measured transfer every score is validated against).
- ``holdout-probe``: the same classifier on one stratified 70/30 split: the cheap baseline a
  score must beat or match to earn its place.

The default (``DEFAULT_SCORE``) is ``budgeted-probe``: a repeated cross-validated linear probe
on every candidate a time budget affords, LogME beyond it, with intervals and ties
(embedkit.ranking), chosen by evidence (docs/compare.md, benchmarks/rank_lite_layers.py).
``rank_models`` ranks candidates (``MODEL`` or ``MODEL@LAYER`` or saved EmbeddingSets) on a
target; with ``validate=True`` it also measures each candidate's cross-validated linear-probe
accuracy on its own folds and reports Kendall's tau and weighted tau between every score and
that accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .embeddings import EmbeddingSet, is_embeddings_file, load_embeddings
from .errors import NotFoundError, UsageError
from .options import Options

__all__ = ["BUDGETED", "DEFAULT_SCORE", "FALLBACK_SCORE", "GBC_PCA_DIM", "KNN_NEIGHBOURS",
           "LINEAR_PROBE_FOLDS", "SCORE_NAMES", "SCORES", "SFDA_MIN_SHRINKAGE", "TRANSRATE_EPS",
           "budgeted_probe_accuracy", "Candidate", "coding_rate", "encode_labels",
           "feature_spectrum", "gbc", "holdout_probe_accuracy", "hscore", "knn_accuracy",
           "ledoit_wolf_shrinkage", "leep", "linear_evidence", "linear_probe_accuracy", "logme",
           "maximise_evidence", "nce", "parse_candidate", "probe_fold_accuracies", "rank_models",
           "Ranking", "row_sum_tolerance", "Score", "score_names", "sfda",
           "shrunk_lda_probabilities", "softmax", "thin_eigh", "transferability", "transrate",
           "validation_table"]

#: What `rank_models` ranks by when no score is named: a repeated cross-validated linear probe
#: on every candidate the budget affords (embedkit.ranking). On the ranking benchmark
#: (docs/compare.md, benchmarks/rank_lite_layers.py) it orders candidates closer to the
#: held-out truth than any closed-form score.
BUDGETED = "budgeted-probe"
DEFAULT_SCORE = BUDGETED
#: The closed-form score the budgeted probe falls back on beyond its budget: the best mean
#: Kendall tau of the closed-form scores on the same benchmark.
FALLBACK_SCORE = "logme"
LINEAR_PROBE_FOLDS = 5
KNN_NEIGHBOURS = 5
GBC_PCA_DIM = 64
TRANSRATE_EPS = 1e-4  # the authors' distortion
SFDA_MIN_SHRINKAGE = 1e-10  # the authors' floor on the adaptive shrinkage


# -- labels ------------------------------------------------------------------------------------
def encode_labels(labels, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y int [n] in 0..C-1, class names [C]); refuses missing labels and a single class."""
    if labels is None:
        raise UsageError("transferability needs a labelled target (class subfolders or a label "
                         "column in the manifest)")
    labels = np.asarray(labels, dtype=object)
    if n is not None and len(labels) != n:
        raise UsageError(f"{len(labels)} labels for {n} feature rows")
    if any(v is None or v != v for v in labels):
        raise UsageError("some target items have no label; every item needs one")
    classes, y = np.unique(labels.astype(str), return_inverse=True)
    if len(classes) < 2:
        raise UsageError(f"the target has a single class ({classes[0] if len(classes) else '-'})"
                         ": transferability compares how well classes separate, it needs 2+")
    return y, classes


def _features(x) -> np.ndarray:
    a = np.asarray(x.vectors if isinstance(x, EmbeddingSet) else x, dtype=np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise UsageError(f"expected [n, d] features, got shape {a.shape}")
    return a


def _one_hot(y: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((len(y), c))
    out[np.arange(len(y)), y] = 1.0
    return out


# -- LogME -------------------------------------------------------------------------------------
def thin_eigh(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w [r], V [d, r]): the non-zero eigenpairs of f' f, largest first, from the smaller Gram
    matrix (d x d when n >= d, else n x n, mapped back with V = f' U / sqrt(w)). Numerically
    zero directions (below 10 eps max(n, d) of the largest) are dropped."""
    n, d = f.shape
    w, vecs = np.linalg.eigh(f.T @ f if n >= d else f @ f.T)
    keep = w > max(w.max(initial=0.0), 0.0) * max(n, d) * np.finfo(float).eps * 10
    w, vecs = w[keep][::-1], vecs[:, keep][:, ::-1]
    return (w, vecs) if n >= d else (w, f.T @ vecs / np.sqrt(w))


def feature_spectrum(f: np.ndarray, targets: np.ndarray):
    """(s, z): the non-zero squared singular values s [r] of f (n x d) and the targets'
    coordinates z [r, k] along the matching left singular vectors u = f v / sqrt(s). The zero
    directions carry no signal; the evidence formula accounts for them exactly."""
    s, v = thin_eigh(f)
    return s, (v.T @ (f.T @ targets)) / np.sqrt(s)[:, None]


def linear_evidence(s, z, y_norm2: float, n: int, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of Bayesian ridge regression y = F w + e, w ~ N(0, I / alpha),
    e ~ N(0, I / beta), in the spectral coordinates of F (see `feature_spectrum`).

    Equal to log N(y; 0, F F' / alpha + I / beta). The d - r zero singular values contribute
    log(alpha) each to log|A| (A = alpha I + beta F'F), cancelling d/2 log(alpha) down to
    r/2 log(alpha): the term the authors' code gets wrong when d > n. The residual |y - F m|^2
    includes the part of y outside F's column space (y_norm2 - |z|^2)."""
    z2 = z ** 2
    lam = alpha / beta
    rest = max(y_norm2 - z2.sum(), 0.0)
    residual = (lam ** 2 * z2 / (lam + s) ** 2).sum() + rest  # |y - F m|^2
    m_norm2 = (s * z2 / (lam + s) ** 2).sum()  # |m|^2
    return float(n / 2 * np.log(beta) - 0.5 * np.log1p(s / lam).sum()
                 - beta / 2 * residual - alpha / 2 * m_norm2 - n / 2 * np.log(2 * np.pi))


def maximise_evidence(s, z, y_norm2: float, n: int, max_iter: int = 1000,
                      tol: float = 1e-10) -> tuple[float, float, float]:
    """(evidence, alpha, beta) at the MacKay fixed point: gamma = sum s / (s + alpha / beta),
    alpha = gamma / |m|^2, beta = (n - gamma) / |y - F m|^2, iterated on lambda = alpha / beta
    until it moves by less than `tol` (relative).

    Written to stay exact where the evidence peaks at a boundary (n <= d lets F fit a target
    perfectly: beta -> infinity): n - gamma is summed as (n - r) + sum lambda / (lambda + s)
    instead of subtracted, beta is then n / (|y - F m|^2 + lambda |m|^2) (the same value at the
    fixed point, without the cancellation), and lambda is kept within 1e+-12 of the largest s,
    where the evidence has flattened out."""
    z2 = z ** 2
    r = len(s)
    rest = max(y_norm2 - z2.sum(), 0.0)
    if r == 0 or y_norm2 == 0:  # no signal in the features (or an all-zero target)
        beta = n / max(y_norm2, np.finfo(float).tiny)
        return float(n / 2 * np.log(beta) - n / 2 - n / 2 * np.log(2 * np.pi)), np.inf, beta
    lo, hi = s.max() * 1e-12, s.max() * 1e12

    def terms(lam):
        m_norm2 = (s * z2 / (lam + s) ** 2).sum()  # |m|^2
        residual = (lam ** 2 * z2 / (lam + s) ** 2).sum() + rest  # |y - F m|^2
        return m_norm2, residual

    lam = float(np.clip(s.mean(), lo, hi))
    for _ in range(max_iter):
        m_norm2, residual = terms(lam)
        gamma = (s / (lam + s)).sum()
        n_minus_gamma = (n - r) + (lam / (lam + s)).sum()
        if m_norm2 <= 0 or residual <= 0:
            new = hi if m_norm2 <= 0 else lo
        else:
            new = float(np.clip(gamma / m_norm2 * residual / n_minus_gamma, lo, hi))
        done = abs(np.log(new / lam)) < tol
        lam = new
        if done:
            break
    m_norm2, residual = terms(lam)
    beta = n / max(residual + lam * m_norm2, np.finfo(float).tiny)
    alpha = lam * beta
    return linear_evidence(s, z, y_norm2, n, alpha, beta), alpha, beta


def logme(features, labels) -> float:
    """LogME (You et al., ICML 2021): the mean over classes of the maximum log evidence of a
    Bayesian linear model predicting that class's one-hot column from the features, divided by
    n. Computed in float64 on the thin spectrum of the features, so it is exact (and cheap) when
    d > n. Features are used as given (not centred), as in the paper."""
    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    targets = _one_hot(y, len(classes))
    s, z = feature_spectrum(f, targets)
    n = len(f)
    evidences = [maximise_evidence(s, z[:, c], float(targets[:, c].sum()), n)[0]
                 for c in range(len(classes))]
    return float(np.mean(evidences) / n)


# -- scores from the source classifier ---------------------------------------------------------
def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64 (max subtracted first)."""
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def row_sum_tolerance(dtype) -> float:
    """How far from 1 the rows of a softmax stored in `dtype` may sum: 1e-4, or 8 machine
    epsilons where the dtype is coarser (float16: 7.8e-3). Each stored probability carries a
    relative rounding error of at most eps / 2, so a row of them sums to 1 within eps / 2
    plus the summation's own rounding; 8 eps leaves room for a softmax computed in that dtype.
    Logits pass this test only by accident: they would have to be non-negative and sum to 1."""
    dtype = np.dtype(dtype)
    eps = float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0
    return max(1e-4, 8 * eps)


def _source_probabilities(outputs) -> np.ndarray:
    """Source-classifier outputs as float64 probabilities. Rows that are non-negative and sum
    to 1 within `row_sum_tolerance` of their dtype are probabilities (renormalised in float64);
    anything else is taken for logits and softmaxed. A fixed 1e-4 tolerance took float16
    softmax rows (sums off by up to ~5e-4) for logits and softmaxed them twice, flattening
    LEEP to about -ln C."""
    tolerance = row_sum_tolerance(getattr(outputs, "dtype", np.float64))
    p = _features(outputs)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=tolerance):
        return softmax(p)  # logits were given
    return p / p.sum(axis=1, keepdims=True)


def leep(source_outputs, labels) -> float:
    """LEEP (Nguyen et al., ICML 2020): (1/n) sum_i log sum_z P(y_i | z) theta(x_i)_z, where theta
    is the source classifier's softmax over source classes z and P(y | z) the empirical
    conditional from the joint P(y, z) = (1/n) sum_i theta(x_i)_z [y_i = y]. Takes
    probabilities or logits: rows that are distributions within their dtype's rounding
    (`row_sum_tolerance`: float16 softmax rows qualify) are used as probabilities, anything
    else is softmaxed. <= 0."""
    p = _source_probabilities(source_outputs)
    y, classes = encode_labels(labels, len(p))
    joint = _one_hot(y, len(classes)).T @ p / len(p)  # [C, Z]
    pz = joint.sum(axis=0)
    conditional = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = (p * conditional[y]).sum(axis=1)
    return float(np.mean(np.log(eep)))


def nce(source_outputs, labels) -> float:
    """NCE (Tran et al., ICCV 2019): -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), with Z the source
    classifier's hard prediction (argmax) and empirical probabilities. <= 0."""
    z = np.argmax(_features(source_outputs), axis=1)  # argmax of logits = argmax of softmax
    y, classes = encode_labels(labels, len(z))
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((len(classes), z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    pz = joint.sum(axis=0)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / pz)[nz])).sum())


# -- scores from the features ------------------------------------------------------------------
def ledoit_wolf_shrinkage(f: np.ndarray, eigenvalues: np.ndarray) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity for centred f [n, d], from the eigenvalues of
    cov(f) = f'f / n (as scikit-learn's `ledoit_wolf_shrinkage`, without its d x d products):
    sum_k |x_k x_k' - S|_F^2 = sum_k |x_k|^4 - n |S|_F^2 and |S|_F^2 = sum of squared
    eigenvalues."""
    n, d = f.shape
    fro2 = float((eigenvalues ** 2).sum())
    mu = float(eigenvalues.sum()) / d
    beta = (float(((f ** 2).sum(axis=1) ** 2).sum()) / n - fro2) / (d * n)
    delta = (fro2 - d * mu ** 2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else beta / delta


def hscore(features, labels, shrinkage: float | None = None) -> float:
    """Regularised H-score (Ibrahim et al. 2022): tr(cov_a(f)^-1 (1 - a) cov(E[f | y])), where
    cov_a = (1 - a) cov(f) + a (tr cov(f) / d) I is the Ledoit-Wolf shrinkage estimate (a from
    the data unless `shrinkage` is given; a = 0 is Bao et al.'s original H-score, a pseudo-
    inverse then). Features are centred; covariances are the biased (1/n) estimates. Computed
    in the eigenbasis of cov(f): cov(E[f | y]) lives in its span, so the trace is exact."""
    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    f = f - f.mean(axis=0)
    n, d = f.shape
    w, v = thin_eigh(f)
    w = w / n  # the non-zero eigenvalues of cov(f)
    a = ledoit_wolf_shrinkage(f, w) if shrinkage is None else float(shrinkage)
    shrunk = (1 - a) * w + a * w.sum() / d
    counts = np.bincount(y)
    projected = (_one_hot(y, len(classes)).T @ f) @ v / counts[:, None]  # class means [C, r]
    between = (counts[:, None] / n * projected ** 2).sum(axis=0)  # diag of V' cov_g V
    return float(((1 - a) * between / shrunk).sum())


def gbc(features, labels, pca_dim: int | None = GBC_PCA_DIM, gaussian: str = "diagonal",
        min_variance: float = 1e-4) -> float:
    """GBC (Pándy et al., CVPR 2022): -sum_{i != j} exp(-D_B(c_i, c_j)) over ordered class pairs,
    D_B the Bhattacharyya distance between per-class Gaussians (diagonal covariance; or
    'spherical': one variance per class). Features are first reduced by PCA to `pca_dim`
    dimensions (64, as in the authors' released setup; None keeps them) and variances are
    floored at `min_variance` as in their code. In (-C(C-1), 0]: 0 = classes fully separated."""
    if gaussian not in ("diagonal", "spherical"):
        raise UsageError(f"gbc gaussian must be diagonal or spherical, not '{gaussian}'")
    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    if pca_dim and pca_dim < f.shape[1]:
        f = f - f.mean(axis=0)
        f = f @ thin_eigh(f)[1][:, :pca_dim]  # principal components (fewer if rank < pca_dim)
    means = np.stack([f[y == c].mean(axis=0) for c in range(len(classes))])
    var = np.stack([f[y == c].var(axis=0) for c in range(len(classes))])
    if gaussian == "spherical":
        var = np.repeat(var.mean(axis=1, keepdims=True), f.shape[1], axis=1)
    var = np.maximum(var, min_variance)
    total = 0.0
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            avg = (var[i] + var[j]) / 2
            d_b = (((means[i] - means[j]) ** 2 / avg).sum() / 8
                   + 0.5 * (np.log(avg).sum() - 0.5 * np.log(var[i]).sum()
                            - 0.5 * np.log(var[j]).sum()))
            total += 2 * np.exp(-d_b)  # (i, j) and (j, i)
    return float(-total)


def coding_rate(f: np.ndarray, eps: float = TRANSRATE_EPS) -> float:
    """R(Z, eps) = 1/2 log det(I + Z'Z / (n eps)) for Z [n, d], from the non-zero eigenvalues
    of Z'Z (the zero ones add log 1 = 0), so d > n costs an n x n eigenproblem."""
    if len(f) == 0:
        return 0.0
    s = thin_eigh(f)[0]
    return float(0.5 * np.log1p(s / (len(f) * eps)).sum())


def transrate(features, labels, eps: float = TRANSRATE_EPS) -> float:
    """TransRate (Huang, Huang, Rong, Yang, Wei, "Frustratingly Easy Transferability
    Estimation", ICML 2022): the mutual information between features and labels measured by
    coding rate, R(Z, eps) - R(Z | Y, eps), with R(Z | Y) the mean of the classes' coding rates.
    As in the authors' released code: features centred once (over all items), each class's
    rows used as they are, R scaled by 1 / (n eps) with eps = 1e-4, and the classes weighted
    equally (the paper weighs by class frequency: the same for a balanced target)."""
    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    f = f - f.mean(axis=0)
    return coding_rate(f, eps) - float(np.mean([coding_rate(f[y == c], eps)
                                                for c in range(len(classes))]))


def _largest_eigenvalue_estimate(within: np.ndarray, iterations: int = 3) -> float:
    """The authors' estimate of the largest eigenvalue of S = within' within / n: power
    iteration from the row sums of S, `iterations` double steps, x' S y at the end."""
    n = len(within)

    def times_s(x):
        return within.T @ (within @ x) / n

    x = times_s(np.ones(within.shape[1]))
    y = x
    for _ in range(iterations):
        t = times_s(x)
        y = t / np.linalg.norm(t)
        t = times_s(y)
        x = t / np.linalg.norm(t)
    return float(x @ times_s(y))


def shrunk_lda_probabilities(f: np.ndarray, y: np.ndarray, c: int,
                             shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """(P(class | x) [n, C], shrinkage) of linear discriminant analysis with the shrunk
    within-class covariance S_a = (1 - a) S_w + a (tr S_w / d) I used by SFDA.

    SFDA's classifier keeps every generalised eigenvector V of (S_b, S_a), normalised so that
    V' S_a V = I; then V V' = S_a^-1, so its scores are the plain LDA ones
    x' S_a^-1 m_c - m_c' S_a^-1 m_c / 2 + log prior_c. S_a^-1 is applied in the eigenbasis
    of S_w (rank <= n - C), the rest of the space scaled by 1 / (a tr S_w / d): exact, and
    no d x d matrix when d > n. a = max(exp(-5 lambda_max(S_w)), 1e-10) unless given."""
    n, d = f.shape
    counts = np.bincount(y, minlength=c)
    means = _one_hot(y, c).T @ f / counts[:, None]
    within = f - means[y]
    w, v = thin_eigh(within)
    w = w / n  # non-zero eigenvalues of S_w = sum_c prior_c cov_c (biased)
    if shrinkage is None:
        lam = _largest_eigenvalue_estimate(within) if len(w) else 0.0
        shrinkage = max(float(np.exp(-5 * lam)), SFDA_MIN_SHRINKAGE)
    floor = shrinkage * w.sum() / d  # the eigenvalue of S_a outside S_w's span
    if floor <= 0:
        raise UsageError("sfda needs features that vary within classes (every class's items "
                         "have identical features)")
    in_span = means @ v
    precision_means = (in_span / ((1 - shrinkage) * w + floor)) @ v.T  # rows: S_a^-1 m_c
    if len(w) < d:  # only then is there a rest of the space (else its residual is rounding,
        precision_means += (means - in_span @ v.T) / floor  # which 1 / floor would amplify)
    logits = (f @ precision_means.T - 0.5 * (means * precision_means).sum(axis=1)
              + np.log(counts / n))
    return softmax(logits), shrinkage


def sfda(features, labels) -> float:
    """SFDA (Shao, Zhao, Ge, Wang, Zhang, Luo, "Not All Models Are Equal: Predicting Model
    Transferability in a Self-challenging Fisher Space", ECCV 2022): the mean probability of
    the true class under a regularised Fisher discriminant (`shrunk_lda_probabilities`), after
    the self-challenge ConfMix: each item moves towards the mean of the other classes' means
    by one minus its (softened: softmax of the probabilities, as the authors) probability of
    its own class, and a second discriminant with the same shrinkage scores the mixed items.
    Follows the authors' released code; in [0, 1]."""
    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    c = len(classes)
    p, shrinkage = shrunk_lda_probabilities(f, y, c)
    own = softmax(p)[np.arange(len(f)), y][:, None]
    means = _one_hot(y, c).T @ f / np.bincount(y)[:, None]
    others = (means.sum(axis=0) - means) / (c - 1)
    mixed = own * f + (1 - own) * others[y]
    p, _ = shrunk_lda_probabilities(mixed, y, c, shrinkage)
    return float(p[np.arange(len(f)), y].mean())


def knn_accuracy(features, labels, k: int = KNN_NEIGHBOURS) -> float:
    """Leave-one-out k-NN accuracy with cosine similarity: each item is classified by majority
    vote of its k nearest other items (ties go to the first class in sorted order, as in
    scikit-learn)."""
    from sklearn.neighbors import NearestNeighbors

    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    if len(f) <= k:
        raise UsageError(f"knn with k={k} needs more than {k} items, the target has {len(f)}")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norms > 0, norms, 1.0)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(f).kneighbors(f)
    correct = 0
    for i, row in enumerate(idx):
        others = row[row != i][:k]  # the item itself (usually first) is left out
        votes = np.bincount(y[others], minlength=len(classes))
        correct += int(np.argmax(votes) == y[i])
    return correct / len(f)


def linear_probe_accuracy(features, labels, folds: int = LINEAR_PROBE_FOLDS,
                          seed: int = 0) -> float:
    """Accuracy of a logistic regression (C = 1, lbfgs) on standardised features: stratified
    `folds`-fold cross-validation (shuffled with `seed`), or one stratified 70/30 hold-out split
    when folds == 1. Folds are reduced to the smallest class's size; a class with a single item
    is refused."""
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    f = _features(features)
    y, classes = encode_labels(labels, len(f))
    smallest = np.bincount(y).min()
    if smallest < 2:
        rare = classes[np.bincount(y).argmin()]
        raise UsageError(f"class '{rare}' has one item: a linear probe needs 2+ per class")
    if folds <= 1:
        splitter = StratifiedShuffleSplit(1, test_size=0.3, random_state=seed)
    else:
        splitter = StratifiedKFold(min(folds, smallest), shuffle=True, random_state=seed)
    return float(np.mean(probe_fold_accuracies(f, y, splitter)))


def probe_fold_accuracies(features, y: np.ndarray, splitter) -> list[float]:
    """Accuracy on each test fold of `splitter` of the probe every measurement here uses:
    logistic regression (C = 1, lbfgs) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    return [float(a) for a in cross_val_score(model, _features(features), y, cv=splitter,
                                              scoring="accuracy")]


def holdout_probe_accuracy(features, labels, seed: int = 1) -> float:
    """The cheap baseline: one stratified 70/30 split (a different shuffle from validation)."""
    return linear_probe_accuracy(features, labels, folds=1, seed=seed)


def budgeted_probe_accuracy(features, labels) -> float:
    """One candidate on its own: its mean accuracy over the budgeted probe's full measurement
    (embedkit.ranking.MAX_REPEATS repetitions of 5 folds, shuffled with PROBE_SEED + r), the
    count a candidate in contention gets in `rank_models`."""
    from .ranking import budgeted_probe

    return budgeted_probe({"features": (features, labels)}, budget=float("inf"))[0].value


# -- registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    name: str
    compute: Callable[[np.ndarray, np.ndarray], float]
    needs: str  # "features" | "source classifier"
    reference: str


SCORES = {s.name: s for s in [
    Score(BUDGETED, budgeted_probe_accuracy, "features",
          "repeated 5-fold CV logistic regression within a time budget, successive halving"),
    Score("logme", logme, "features", "You et al., ICML 2021"),
    Score("leep", leep, "source classifier", "Nguyen et al., ICML 2020"),
    Score("nce", nce, "source classifier", "Tran et al., ICCV 2019"),
    Score("hscore", hscore, "features", "Ibrahim et al., ECML-PKDD 2022 (regularised)"),
    Score("gbc", gbc, "features", "Pándy et al., CVPR 2022"),
    Score("transrate", transrate, "features", "Huang et al., ICML 2022"),
    Score("sfda", sfda, "features", "Shao et al., ECCV 2022"),
    Score("knn", knn_accuracy, "features", "leave-one-out 5-NN accuracy, cosine"),
    Score("linear-probe", linear_probe_accuracy, "features",
          "5-fold CV logistic regression accuracy"),
    Score("holdout-probe", holdout_probe_accuracy, "features",
          "one 70/30 split, logistic regression accuracy"),
]}


SCORE_NAMES = Options("transferability score", tuple(SCORES))  # lists also take "all"


def score_names(spec: str | Sequence[str] | None) -> list[str]:
    """'all', one name or several -> validated score names (default: DEFAULT_SCORE)."""
    if spec is None:
        return [DEFAULT_SCORE]
    names = [spec] if isinstance(spec, str) else list(spec)
    if "all" in names:
        return list(SCORES)
    for n in names:
        SCORE_NAMES.check(n)
    return names


def transferability(features, labels, metric: str = DEFAULT_SCORE, **options) -> float:
    """One score on [n, d] features (or source-classifier outputs for leep / nce) and labels."""
    return SCORES[score_names(metric)[0]].compute(features, labels, **options)


# -- candidates and ranking --------------------------------------------------------------------
@dataclass
class Candidate:
    """A model read at a layer (extracted through the cache), or a saved EmbeddingSet."""

    label: str
    model: str | None = None
    layer: str | None = None
    saved: str | None = None  # path of a saved EmbeddingSet


def parse_candidate(spec, layers: Sequence[str] | None = None) -> list[Candidate]:
    """'MODEL', 'MODEL@LAYER' or a saved .parquet set; `layers` expands a bare MODEL to one
    candidate per layer."""
    spec = str(spec)
    if spec.endswith(".parquet"):
        return [Candidate(os.path.basename(spec), saved=spec)]
    model, _, layer = spec.partition("@")
    if layer:
        return [Candidate(spec, model, layer)]
    if layers:
        return [Candidate(f"{model}@{l}", model, l) for l in layers]
    return [Candidate(model, model, None)]


@dataclass
class Ranking:
    metrics: list[str]
    rows: list[dict]  # rank, candidate, model, layer, dim, one value per metric, [accuracy];
    #                   with budgeted-probe also low, high, tied, method, seconds
    validation: list[dict] = field(default_factory=list)  # per metric: tau, weighted tau
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # what was measured, ties

    @property
    def tied(self) -> list[dict]:
        """The rows the data cannot separate from the leader (empty when it can)."""
        return [r for r in self.rows if r.get("tied")]

    def as_dict(self) -> dict:
        """JSON-ready: NaN (a score that does not apply) becomes None."""
        def plain(rows):
            return [{k: None if isinstance(v, float) and np.isnan(v) else v
                     for k, v in row.items()} for row in rows]

        return {"metrics": self.metrics, "ranking": plain(self.rows),
                "validation": plain(self.validation), "notes": self.notes,
                "summary": self.summary}


def _target_dataset(target):
    """The dataset a candidate model must embed: the spec, or a saved set's dataset folder."""
    if isinstance(target, EmbeddingSet) or is_embeddings_file(target):
        saved = target if isinstance(target, EmbeddingSet) else load_embeddings(target)
        root = saved.meta.get("dataset")
        if not root or not os.path.exists(root):
            raise UsageError(f"the saved target's dataset ({root or 'unknown'}) is not on this "
                             "machine: pass the dataset folder so candidates can embed it")
        return root, next(iter(saved.label_columns), None)
    return target, None


def _aligned(a: EmbeddingSet, b: EmbeddingSet) -> tuple[EmbeddingSet, EmbeddingSet]:
    if a.ids == b.ids:
        return a, b
    where = {ident: i for i, ident in enumerate(b.ids)}
    keep = [i for i, ident in enumerate(a.ids) if ident in where]
    return a.subset(keep), b.subset([where[a.ids[i]] for i in keep])


def rank_models(target, candidates: Sequence, metrics: str | Sequence[str] | None = None,
                validate: bool = False, layers: Sequence[str] | None = None,
                budget: float | None = None, progress: bool | None = None,
                log: Callable[[str], None] | None = None, **extract_options) -> Ranking:
    """Rank candidates (``MODEL``, ``MODEL@LAYER``, a saved .parquet set, or a Candidate) for
    a labelled target dataset (folder, manifest, bundled name, or a saved set whose dataset
    folder still exists), best first by the first metric.

    Args:
        metrics: score name(s); the first orders the ranking. Default ``budgeted-probe``: a
            repeated cross-validated linear probe on every candidate the `budget` affords,
            successive halving on the ones in contention, the fallback score beyond it
            (embedkit.ranking); its rows carry the method, the seconds spent, a probe accuracy
            interval and whether the candidate is tied with the leader.
        validate: also measure every candidate's 5-fold CV linear-probe accuracy (seed 0,
            folds the budgeted probe never uses) and report Kendall's tau-b and weighted tau
            of each score against it (scipy.stats).
        layers: expand every bare MODEL into one candidate per layer.
        budget: seconds the budgeted probe may spend after extraction (default 60).
        progress, log: extraction progress bar; a callable for progress lines.
        extract_options: cache, batch_size, device, ... for extraction.

    leep / nce need the candidate's source classifier: its ``logits`` layer (ImageNet classes
    for the image backbones), extracted through the cache; they score the model, whatever the
    layer. A candidate without one gets NaN and a note."""
    import time

    from .extract import embeddings_of
    from .ranking import DEFAULT_BUDGET, budgeted_probe, tie_summary

    names = score_names(metrics)
    log = log or (lambda message: None)
    dataset, label = _target_dataset(target)
    if label and "label" not in extract_options:
        extract_options["label"] = label
    cands = [c for spec in candidates for c in
             ([spec] if isinstance(spec, Candidate) else parse_candidate(spec, layers))]
    if not cands:
        raise UsageError("name at least one candidate model (--models M1 M2@LAYER ...)")
    rows, notes, logits_of, sets = [], [], {}, {}
    labels = [c.label for c in cands]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:  # each once: a second copy would be ranked as an unmeasured twin
        notes.append(f"given more than once, ranked once: {', '.join(repeated)}")
        cands = [c for i, c in enumerate(cands) if c.label not in labels[:i]]
    for cand in cands:
        log(f"embedding the target with {cand.label}")
        try:
            emb = load_embeddings(cand.saved) if cand.saved else embeddings_of(
                dataset, cand.model, layer=cand.layer, progress=progress, **extract_options)
        except NotFoundError as exc:  # unknown model or layer, weights not on this machine
            notes.append(f"{cand.label} skipped: {exc}")
            continue
        labels = emb.labels
        encode_labels(labels, len(emb))  # refuse unlabelled / single-class targets early
        sets[cand.label] = emb
        row = {"candidate": cand.label, "model": emb.meta.get("model", cand.model),
               "layer": emb.meta.get("layer", cand.layer), "dim": emb.dim}
        for name in names:
            score = SCORES[name]
            if name == BUDGETED:
                continue  # measured over all candidates together, below
            started = time.perf_counter()
            if score.needs == "source classifier":
                source = _source_outputs(cand, emb, dataset, logits_of, progress,
                                         extract_options)
                if isinstance(source, str):
                    if source not in notes:
                        notes.append(source)
                    row[name] = float("nan")
                    continue
                feats, outs = _aligned(emb, source)
                row[name] = score.compute(outs.vectors, feats.labels)
            else:
                row[name] = score.compute(emb.vectors, labels)
            row[f"{name} seconds"] = time.perf_counter() - started
            log(f"  {name} = {row[name]:.4g}")
        if validate:
            row["accuracy"] = row["linear-probe"] if "linear-probe" in row else \
                linear_probe_accuracy(emb.vectors, labels)
            smallest = np.unique(np.asarray(labels, dtype=str), return_counts=True)[1].min()
            log(f"  linear-probe accuracy ({min(LINEAR_PROBE_FOLDS, smallest)}-fold CV) = "
                f"{row['accuracy']:.4f}")
        rows.append(row)
    if not rows:
        raise NotFoundError("no candidate could be scored: " + "; ".join(notes))
    summary = []
    order = None
    if BUDGETED in names:
        budget = DEFAULT_BUDGET if budget is None else float(budget)
        log(f"probing {len(sets)} candidate{'s' if len(sets) != 1 else ''} within "
            f"{budget:g} s")
        measured = budgeted_probe({k: (e.vectors, e.labels) for k, e in sets.items()},
                                  budget=budget)
        by_label = {r["candidate"]: r for r in rows}
        for m in measured:
            by_label[m.candidate].update({
                BUDGETED: m.value, "low": m.low, "high": m.high, "tied": m.tied,
                "method": m.method, "seconds": m.seconds, FALLBACK_SCORE: m.fallback})
        if names[0] == BUDGETED:
            order = [m.candidate for m in measured]
        probed = sum(1 for m in measured if m.repeats)
        spent = sum(m.seconds for m in measured)
        summary.append(f"{probed} of {len(measured)} candidates measured by the probe within "
                       f"the {budget:g} s budget ({spent:.1f} s spent)"
                       + (f"; {len(measured) - probed} over budget, ranked by "
                          f"{FALLBACK_SCORE}" if probed < len(measured) else ""))
        line = tie_summary(measured)
        if line:
            summary.append(line)
    if order is not None:
        rows.sort(key=lambda r: order.index(r["candidate"]))
    else:
        first = names[0]
        rows.sort(key=lambda r: (np.isnan(r[first]), -np.nan_to_num(r[first], nan=-np.inf)))
    rows = [{"rank": i, **r} for i, r in enumerate(rows, 1)]
    ranking = Ranking(names, rows, notes=notes, summary=summary)
    if validate:
        ranking.validation = validation_table(rows, names)
    return ranking


def _source_outputs(cand: Candidate, emb: EmbeddingSet, dataset, known: dict, progress,
                    extract_options: dict):
    """The candidate model's source-classifier outputs (its `logits` layer) on the target, or
    the line saying why leep / nce do not apply. `known` remembers them per model."""
    from .extract import embeddings_of
    from .registry import create_backbone

    if emb.meta.get("layer") == "logits":
        return emb
    if cand.saved:
        return (f"{cand.label}: leep/nce not applicable to a saved set; pass MODEL@LAYER so the "
                "model's classifier head can be read")
    model = cand.model
    if model not in known:
        try:
            has_head = "logits" in create_backbone(model).layers()
            why = "it has no classifier head over source classes (no 'logits' layer)"
        except Exception as exc:  # a model that cannot be described has no usable head either
            has_head, why = False, f"{type(exc).__name__}: {exc}"
        if not has_head:
            known[model] = f"{model}: leep/nce not applicable: {why}"
        else:  # raw class scores: no pooling, no L2 normalisation before the softmax
            options = {k: v for k, v in extract_options.items() if k not in ("pool", "normalize")}
            known[model] = embeddings_of(dataset, model, layer="logits", progress=progress,
                                         **options)
    return known[model]


def validation_table(rows: list[dict], metrics: Sequence[str]) -> list[dict]:
    """Kendall's tau-b and weighted tau (top-weighted, scipy defaults) between each score and
    the measured accuracy, over the candidates where both are defined."""
    from scipy.stats import kendalltau, weightedtau

    out = []
    for name in metrics:
        pairs = [(r[name], r["accuracy"]) for r in rows
                 if not np.isnan(r[name]) and not np.isnan(r["accuracy"])]
        entry = {"metric": name, "candidates": len(pairs), "kendall_tau": float("nan"),
                 "p_value": float("nan"), "weighted_tau": float("nan")}
        if len(pairs) >= 2:
            s, acc = map(np.asarray, zip(*pairs))
            if np.ptp(s) > 0 and np.ptp(acc) > 0:
                tau = kendalltau(s, acc)
                entry.update(kendall_tau=float(tau.statistic), p_value=float(tau.pvalue),
                             weighted_tau=float(weightedtau(s, acc).statistic))
        out.append(entry)
    return out
