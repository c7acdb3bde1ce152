"""Transferability scores against independent computations, invariances, edge cases, ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.embeddings import EmbeddingSet
from embedkit.errors import UsageError
from embedkit.transfer import (feature_spectrum, gbc, hscore, knn_accuracy, leep,
                               linear_evidence, linear_probe_accuracy, logme, maximise_evidence,
                               nce, rank_models, softmax, validation_table)


# -- LogME ---------------------------------------------------------------------------------------
def dense_evidence(f, y, alpha, beta):
    """log N(y; 0, F F' / alpha + I / beta): the evidence with w integrated out, no SVD."""
    n = len(f)
    cov = f @ f.T / alpha + np.eye(n) / beta
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (logdet + y @ np.linalg.solve(cov, y) + n * np.log(2 * np.pi))


def direct_max_evidence(f, y):
    """Maximise the dense evidence over (log alpha, log beta) with scipy, from several starts."""
    from scipy.optimize import minimize

    best = None
    with np.errstate(over="ignore"):
        for start in [(-4, 0), (0, 0), (4, 0), (0, 4), (4, 4)]:
            r = minimize(lambda p: -dense_evidence(f, y, *np.exp(p)), start,
                         method="Nelder-Mead",
                         options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
            best = r if best is None or r.fun < best.fun else best
    return -best.fun


def class_features(rng, n, d, classes=3, signal=1.0):
    y = rng.integers(0, classes, n)
    f = rng.normal(size=(n, d))
    f[:, :classes] += signal * np.eye(classes)[y] * 3
    return f, y


@pytest.mark.parametrize("n,d", [(10, 200), (20, 50), (25, 25), (60, 8)])
def test_logme_evidence_equals_the_dense_gaussian_for_any_alpha_beta(n, d):
    rng = np.random.default_rng(n + d)
    f, labels = class_features(rng, n, d)
    y = (labels == 0).astype(float)
    s, z = feature_spectrum(f, y[:, None])
    for alpha, beta in [(0.1, 1.0), (3.0, 0.5), (100.0, 20.0)]:
        assert linear_evidence(s, z[:, 0], y @ y, n, alpha, beta) == pytest.approx(
            dense_evidence(f, y, alpha, beta), rel=1e-9)


def test_the_authors_d_over_2_log_alpha_term_is_wrong_when_d_exceeds_n():
    # With d > n only n singular values exist; counting d/2 log(alpha) (as the reference code
    # does) instead of r/2 log(alpha) is off by (d - n)/2 log(alpha).
    rng = np.random.default_rng(0)
    f, labels = class_features(rng, 10, 200)
    y = (labels == 1).astype(float)
    s, z = feature_spectrum(f, y[:, None])
    alpha, beta = 5.0, 2.0
    right = linear_evidence(s, z[:, 0], y @ y, 10, alpha, beta)
    assert right == pytest.approx(dense_evidence(f, y, alpha, beta), rel=1e-9)
    naive = right + (200 - len(s)) / 2 * np.log(alpha)
    assert abs(naive - dense_evidence(f, y, alpha, beta)) > 10


@pytest.mark.parametrize("n,d", [(10, 200), (20, 50), (25, 25), (60, 8), (15, 3)])
def test_logme_fixed_point_reaches_the_direct_maximum(n, d):
    rng = np.random.default_rng(100 + n)
    f, labels = class_features(rng, n, d)
    targets = np.eye(3)[labels]
    s, z = feature_spectrum(f, targets)
    evidences = []
    for c in range(3):
        ours = maximise_evidence(s, z[:, c], targets[:, c].sum(), n)[0]
        assert ours == pytest.approx(direct_max_evidence(f, targets[:, c]), rel=1e-6, abs=1e-6)
        evidences.append(ours)
    assert logme(f, labels) == pytest.approx(np.mean(evidences) / n, rel=1e-12)


def test_logme_prefers_features_that_separate_classes():
    rng = np.random.default_rng(1)
    f, labels = class_features(rng, 90, 300)  # n < d, as with 1,280-d features on a small set
    noise = rng.normal(size=(90, 300))
    assert logme(f, labels) > logme(noise, labels) + 0.1
    assert logme(f, labels) > logme(f, rng.permutation(labels)) + 0.1


def test_logme_edge_cases():
    rng = np.random.default_rng(2)
    labels = np.array([0, 1] * 10)
    with pytest.raises(UsageError, match="single class"):
        logme(rng.normal(size=(20, 5)), np.zeros(20))
    zero = logme(np.zeros((20, 5)), labels)  # no signal: the evidence of the noise model only
    expected = np.mean([0.5 * np.log(20 / 10) - 0.5 - 0.5 * np.log(2 * np.pi)] * 2)
    assert zero == pytest.approx(expected, rel=1e-9)
    constant = logme(np.ones((20, 5)), labels)
    assert np.isfinite(constant) and constant > zero  # a constant column explains the class mean
    with pytest.raises(UsageError, match="labelled"):
        logme(np.ones((4, 2)), None)


# -- LEEP and NCE ---------------------------------------------------------------------------------
def test_leep_matches_the_papers_formula_by_hand():
    theta = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.1, 0.3]])
    y = np.array(["cat", "dog", "dog", "cat"])
    n, classes = 4, ["cat", "dog"]
    joint = {(c, z): sum(theta[i, z] for i in range(n) if y[i] == c) / n
             for c in classes for z in range(3)}
    pz = {z: sum(joint[(c, z)] for c in classes) for z in range(3)}
    expected = np.mean([np.log(sum(joint[(y[i], z)] / pz[z] * theta[i, z] for z in range(3)))
                        for i in range(n)])
    assert leep(theta, y) == pytest.approx(expected, rel=1e-12)
    logits = np.log(theta) + 5.0  # logits are turned into the same softmax
    assert leep(logits, y) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(softmax(logits), theta)


def test_leep_takes_float16_softmax_rows_as_probabilities():
    # 1,000 source classes, softmax stored in float16 (as a half-precision extraction gives):
    # rows sum to 1 only within float16 rounding, beyond the old fixed 1e-4 tolerance.
    from embedkit.transfer import row_sum_tolerance

    rng = np.random.default_rng(12)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(0, 1, (200, 1000))
    logits[np.arange(200), y * 7] += 6  # each target class leans on one source class
    p64 = softmax(logits)
    p16 = p64.astype(np.float16)
    assert np.abs(p16.astype(np.float64).sum(axis=1) - 1).max() > 1e-4  # the case is real
    expected = leep(p64, y)
    assert expected > -np.log(4) + 0.2  # informative, well above the uniform -ln C
    assert leep(p16, y) == pytest.approx(expected, abs=2e-3)
    # what the fixed 1e-4 tolerance did: softmax the probabilities again -> about -ln C
    assert abs(leep(softmax(p16), y) + np.log(4)) < 0.05
    assert row_sum_tolerance(np.float16) > 5e-4 and row_sum_tolerance(np.float32) == 1e-4
    assert leep(logits.astype(np.float16), y) == pytest.approx(expected, abs=2e-3)  # logits


def test_nce_is_minus_the_conditional_entropy():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(3)
    z_hard = rng.integers(0, 6, 200)
    y = (z_hard % 3 + (rng.random(200) < 0.3)) % 3
    logits = np.eye(6)[z_hard] * 4 + rng.normal(0, 0.1, (200, 6))
    counts = np.bincount(y) / 200
    h_y = -(counts * np.log(counts)).sum()
    expected = -(h_y - mutual_info_score(y, z_hard))  # -H(Y|Z) = I(Y;Z) - H(Y)
    assert nce(logits, y) == pytest.approx(expected, rel=1e-10)
    assert nce(np.eye(6)[z_hard], z_hard % 3) == pytest.approx(0.0, abs=1e-12)  # Y = f(Z)


# -- H-score, GBC ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(80, 6), (15, 40)])
def test_regularised_hscore_matches_the_dense_formula(n, d):
    from sklearn.covariance import ledoit_wolf

    rng = np.random.default_rng(n)
    f, y = class_features(rng, n, d)
    fc = f - f.mean(0)
    shrunk, a = ledoit_wolf(fc, assume_centered=True)
    g = np.stack([fc[y == c].mean(0) for c in range(3)])[y]
    expected = np.trace(np.linalg.pinv(shrunk) @ ((1 - a) * g.T @ g / n))
    assert hscore(f, y) == pytest.approx(expected, rel=1e-8)
    if n > d:  # a = 0: Bao et al.'s original H-score
        original = np.trace(np.linalg.inv(fc.T @ fc / n) @ (g.T @ g / n))
        assert hscore(f, y, shrinkage=0.0) == pytest.approx(original, rel=1e-8)


def test_gbc_matches_the_bhattacharyya_formula_with_full_matrices():
    rng = np.random.default_rng(4)
    f, y = class_features(rng, 60, 4, classes=2, signal=0.3)
    stats = [(f[y == c].mean(0), np.diag(f[y == c].var(0))) for c in range(2)]
    (m1, s1), (m2, s2) = stats
    s = (s1 + s2) / 2
    d_b = (m1 - m2) @ np.linalg.inv(s) @ (m1 - m2) / 8 + 0.5 * np.log(
        np.linalg.det(s) / np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    assert gbc(f, y, pca_dim=None) == pytest.approx(-2 * np.exp(-d_b), rel=1e-10)
    separated = gbc(class_features(rng, 60, 4, classes=2, signal=3)[0], y, pca_dim=None)
    overlapping = gbc(rng.normal(size=(60, 4)), y, pca_dim=None)
    assert -2 <= overlapping < separated <= 0
    assert gbc(f, y, gaussian="spherical") <= 0


# -- kNN and linear probe ------------------------------------------------------------------------
def test_knn_is_leave_one_out_cosine_knn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(5)
    f, y = class_features(rng, 40, 6, signal=0.4)
    expected = np.mean([KNeighborsClassifier(5, metric="cosine", algorithm="brute")
                        .fit(np.delete(f, i, 0), np.delete(y, i)).predict(f[i:i + 1])[0] == y[i]
                        for i in range(40)])
    assert knn_accuracy(f, y) == pytest.approx(expected)


def test_linear_probe_separates_signal_from_shuffled_labels():
    rng = np.random.default_rng(6)
    f, y = class_features(rng, 90, 20, signal=2)
    assert linear_probe_accuracy(f, y) > 0.95
    assert linear_probe_accuracy(f, rng.permutation(y)) < 0.6
    with pytest.raises(UsageError, match="one item"):
        linear_probe_accuracy(f[:4], np.array([0, 0, 1, 2]))


def test_validation_taus():
    rows = [{"s": v, "r": -v, "accuracy": a} for v, a in [(1, .5), (2, .6), (3, .8), (4, .9)]]
    out = {v["metric"]: v for v in validation_table(rows, ["s", "r"])}
    assert out["s"]["kendall_tau"] == pytest.approx(1.0)
    assert out["r"]["kendall_tau"] == pytest.approx(-1.0)
    assert out["s"]["weighted_tau"] == pytest.approx(1.0)


# -- ranking on real embeddings ------------------------------------------------------------------
def test_rank_models_on_real_digits(digits_small, tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    ranking = rank_models(str(digits_small), ["efficientnet_lite0@blocks.1",
                                              "efficientnet_lite0@pre_logits"],
                          metrics=["logme", "leep", "knn"], validate=True, progress=False)
    rows = {r["candidate"]: r for r in ranking.rows}
    assert [r["rank"] for r in ranking.rows] == [1, 2]
    assert ranking.rows[0]["logme"] >= ranking.rows[1]["logme"]
    assert rows["efficientnet_lite0@pre_logits"]["dim"] == 1280
    # leep scores the model's ImageNet head: the same value whatever the layer
    assert rows["efficientnet_lite0@blocks.1"]["leep"] == rows["efficientnet_lite0@pre_logits"]["leep"] < 0
    assert all(0 <= r["accuracy"] <= 1 for r in ranking.rows)
    assert [v["metric"] for v in ranking.validation] == ["logme", "leep", "knn"]

    # saved sets as candidates: scored from the file, leep not applicable (no model head)
    saved = tmp_path / "lite0.parquet"
    from embedkit.extract import embeddings_of

    embeddings_of(str(digits_small), "efficientnet_lite0", progress=False).save(saved)
    result = CliRunner().invoke(cli, ["rank-models", str(digits_small), "--models", str(saved),
                                      "--metric", "logme", "--metric", "leep", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ranking"][0]["logme"] == pytest.approx(rows["efficientnet_lite0@pre_logits"]["logme"])
    assert data["ranking"][0]["leep"] is None and "not applicable" in data["notes"][0]


@pytest.mark.parametrize("n,d", [(50, 7), (12, 30)])
def test_ledoit_wolf_shrinkage_matches_scikit_learn(n, d):
    from sklearn.covariance import ledoit_wolf_shrinkage as reference

    from embedkit.transfer import ledoit_wolf_shrinkage, thin_eigh

    rng = np.random.default_rng(d)
    f = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    f -= f.mean(0)
    ours = ledoit_wolf_shrinkage(f, thin_eigh(f)[0] / n)
    assert ours == pytest.approx(reference(f, assume_centered=True), rel=1e-9)


def test_candidates_that_cannot_be_built_are_skipped_with_a_note(digits_small, tmp_path):
    from embedkit.errors import NotFoundError

    rng = np.random.default_rng(11)
    f, y = class_features(rng, 30, 5)
    saved = EmbeddingSet([f"i{i}" for i in range(30)], f, {"label": y.astype(str)},
                         {"model": "probe", "layer": "x"}).save(tmp_path / "probe.parquet")
    ranking = rank_models(str(digits_small), [str(saved), "no_such_model@pre_logits"],
                          metrics="logme")
    assert [r["candidate"] for r in ranking.rows] == ["probe.parquet"]
    assert ranking.rows[0]["logme"] == pytest.approx(logme(f.astype(np.float32), y))
    assert "no_such_model@pre_logits skipped" in ranking.notes[0]
    with pytest.raises(NotFoundError, match="no candidate"):
        rank_models(str(digits_small), ["no_such_model"], metrics="logme")


# -- TransRate, SFDA --------------------------------------------------------------------------
def dense_coding_rate(z, eps):
    """1/2 log det(I_d + Z'Z / (n eps)) with the d x d matrix itself (Huang et al. 2022)."""
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]


@pytest.mark.parametrize("n,d", [(60, 5), (12, 40)])
def test_transrate_matches_the_dense_coding_rates(n, d):
    from embedkit.transfer import transrate

    rng = np.random.default_rng(20 + n)
    f, y = class_features(rng, n, d)
    z = f - f.mean(0)
    expected = dense_coding_rate(z, 1e-4) - np.mean([dense_coding_rate(z[y == c], 1e-4)
                                                     for c in range(3)])
    assert transrate(f, y) == pytest.approx(expected, rel=1e-9)
    if n > d:  # separated classes carry more information about the label than shuffled ones
        assert transrate(f, y) > transrate(f, rng.permutation(y)) + 0.1


def dense_sfda(x, y, shrinkage=None):
    """SFDA written out with d x d matrices and scipy's generalised eigensolver, step by step
    as in Shao et al. 2022 / their code: regularised FDA, softened probabilities, ConfMix
    towards the other classes' mean, a second FDA with the same shrinkage."""
    from scipy import linalg

    def fda(x, y, a):
        n, d = x.shape
        classes = np.unique(y)
        priors = np.array([np.mean(y == c) for c in classes])
        means = np.stack([x[y == c].mean(0) for c in classes])
        sw = sum(p * np.cov(x[y == c].T, bias=True) for p, c in zip(priors, classes))
        if a is None:  # the authors' 3 double steps of power iteration from the row sums
            v = sw.sum(axis=1)
            for _ in range(3):
                u = sw @ v / np.linalg.norm(sw @ v)
                v = sw @ u / np.linalg.norm(sw @ u)
            a = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
        mu = np.trace(sw) / d
        sw_a = (1 - a) * sw + a * mu * np.eye(d)
        st = (1 - a) * np.cov(x.T, bias=True) + a * np.trace(np.cov(x.T, bias=True)) / d * np.eye(d)
        _, vecs = linalg.eigh(st - sw_a, sw_a)
        coef = means @ vecs @ vecs.T
        logits = x @ coef.T - 0.5 * np.diag(means @ coef.T) + np.log(priors)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True), a

    n, c = len(y), len(np.unique(y))
    p, a = fda(x, y, shrinkage)
    p = np.exp(p) / np.exp(p).sum(1, keepdims=True)
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    mixed = x.copy()
    for k in range(c):
        rows = y == k
        own = p[rows, k][:, None]
        mixed[rows] = own * x[rows] + (1 - own) * (means.sum(0) - means[k]) / (c - 1)
    p, _ = fda(mixed, y, a)
    return p[np.arange(n), y].mean()


@pytest.mark.parametrize("n,d,scale", [(90, 6, 0.1), (90, 6, 3.0), (40, 10, 0.05),
                                         (15, 30, 0.05)])
def test_sfda_matches_the_dense_fisher_discriminant(n, d, scale):
    # scale 0.1 / 0.05: small within-class variance, so the adaptive shrinkage is large
    # (exp(-5 lambda) near 1); scale 3: it hits the 1e-10 floor; 15 x 30: n < d, S_w singular.
    from embedkit.transfer import sfda

    rng = np.random.default_rng(30 + d)
    f, y = class_features(rng, n, d, signal=0.5)
    f = f * scale
    assert sfda(f, y) == pytest.approx(dense_sfda(f, y), rel=1e-7)
    assert 0 < sfda(f, rng.permutation(y)) < sfda(f, y) <= 1
