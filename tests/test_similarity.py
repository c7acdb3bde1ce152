"""Dataset similarity: each measure against an independent computation, plus invariances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.embeddings import EmbeddingSet
from embedkit.errors import UsageError
from embedkit.similarity import (class_means, cosine_mean, earth_movers_distance,
                                 emd_similarity, frechet_distance, linear_cka,
                                 median_bandwidth, mmd2, rank_sources, similarity_matrix)


def make_set(vectors, labels=None, ids=None, fingerprint="probe", name="set"):
    vectors = np.asarray(vectors, dtype=np.float32)
    ids = ids if ids is not None else [f"{name}/{i}" for i in range(len(vectors))]
    columns = {"label": np.asarray(labels, dtype=object)} if labels is not None else {}
    return EmbeddingSet(ids, vectors, columns,
                        {"model": "probe", "layer": "pre_logits", "fingerprint": fingerprint,
                         "dataset": name})


# -- cosine of mean embeddings -------------------------------------------------------------------
def test_cosine_mean_is_the_seeds_worked_example():
    # SEEDS.md: (-0.4, 0.8) vs (-0.3, 0.2) gives 0.87; vs (-0.5, -0.4) gives -0.20 (truncated):
    # 0.28 / (sqrt(0.8) sqrt(0.13)) = 0.8682 and -0.12 / (sqrt(0.8) sqrt(0.41)) = -0.2095
    assert cosine_mean([[-0.4, 0.8]], [[-0.3, 0.2]]) == pytest.approx(0.8682, abs=1e-4)
    assert cosine_mean([[-0.4, 0.8]], [[-0.5, -0.4]]) == pytest.approx(-0.2095, abs=1e-4)
    # a set is summarised by its mean: (0,1) and (1,0) average to (0.5, 0.5)
    assert cosine_mean([[0, 1], [1, 0]], [[1, 1]]) == pytest.approx(1.0)


# -- EMD -----------------------------------------------------------------------------------------
def test_emd_matches_scipy_wasserstein_in_one_dimension():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.normal(size=4), rng.normal(size=6) + 1
        wa, wb = rng.random(4), rng.random(6)
        expected = wasserstein_distance(a, b, wa, wb)
        assert earth_movers_distance(a[:, None], wa, b[:, None], wb) == pytest.approx(expected,
                                                                                      rel=1e-7)


def test_emd_with_equal_masses_is_the_optimal_assignment():
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    assert earth_movers_distance(a, np.ones(5), b, np.ones(5)) == pytest.approx(
        cost[rows, cols].sum() / 5, rel=1e-7)


def test_emd_similarity_uses_class_means_weighted_by_class_size():
    # target: class x (3 items at (0, 0)) and class y (1 item at (4, 0)); source: one class at (0, 3)
    target = make_set([[0, 0], [0, 0], [0, 0], [4, 0]], ["x", "x", "x", "y"])
    source = make_set([[0, 3], [0, 3]], ["s", "s"])
    emd = 0.75 * 3 + 0.25 * 5  # mass 3/4 moves 3, mass 1/4 moves 5
    assert emd_similarity(target, source) == pytest.approx(np.exp(-0.01 * emd))
    assert emd_similarity(target, source, gamma=0.1) == pytest.approx(np.exp(-0.1 * emd))


def test_unlabelled_sets_are_grouped_by_kmeans():
    rng = np.random.default_rng(3)
    blobs = np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(10, 0.1, (10, 2))])
    means, weights, how = class_means(make_set(blobs), n_clusters=2)
    assert how.startswith("k-means")
    order = np.argsort(means[:, 0])
    np.testing.assert_allclose(means[order], [blobs[:20].mean(0), blobs[20:].mean(0)], atol=1e-6)
    np.testing.assert_allclose(weights[order], [2 / 3, 1 / 3])
    assert emd_similarity(make_set(blobs), make_set(blobs)) == pytest.approx(1.0)


# -- Fréchet -------------------------------------------------------------------------------------
def reference_frechet(a, b):
    """The FID reference formula with scipy's complex sqrtm (its real part)."""
    from scipy.linalg import sqrtm

    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * sqrtm(sa @ sb).real))


@pytest.mark.parametrize("n,d", [(200, 4), (40, 6), (6, 3)])
def test_frechet_matches_the_sqrtm_formula(n, d):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(1.0, 2.0, size=(n + 3, d))
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)


def test_frechet_one_dimension_closed_form_and_identity():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, (50, 1)), rng.normal(3, 2, (70, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    closed = (a.mean() - b.mean()) ** 2 + (sa - sb) ** 2
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    wide = rng.normal(size=(10, 300))  # n < d: singular covariances
    assert frechet_distance(wide, wide) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(wide, wide + 1.0) == pytest.approx(300.0, rel=1e-8)


# -- MMD -----------------------------------------------------------------------------------------
def test_mmd_matches_the_unbiased_estimator_written_out():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(5, 2)), rng.normal(1, 1, size=(4, 2))
    sigma = 0.7

    def k(u, v):
        return np.exp(-((u - v) ** 2).sum() / (2 * sigma ** 2))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / (5 * 4)
    assert mmd2(x, y, bandwidth=sigma) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    pooled = np.vstack([x, y])
    distances = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(9) for j in range(i + 1, 9)]
    assert median_bandwidth(x, y) == pytest.approx(np.median(distances))


def test_mmd_is_near_zero_for_one_distribution_and_clearly_positive_when_shifted():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    shifted = rng.normal(0.5, 1, size=(300, 8))
    same, moved = mmd2(a, b), mmd2(a, shifted)
    assert abs(same) < 0.005
    assert moved > 0.05 and moved > 20 * abs(same)


# -- CKA -----------------------------------------------------------------------------------------
def hsic_cka(x, y):
    """Kornblith et al. 2019 via HSIC with an explicit centring matrix."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_hsic_and_is_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 5))
    y = x @ rng.normal(size=(5, 8)) + 0.5 * rng.normal(size=(30, 8))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-9)
    wide = rng.normal(size=(10, 40))  # n < d: Gram form
    assert linear_cka(wide, y[:10]) == pytest.approx(hsic_cka(wide, y[:10]), rel=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert linear_cka(x, 3.0 * x @ q + 2.0) == pytest.approx(1.0)


def test_cka_pairs_items_by_id_and_is_undefined_for_different_items():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 4))
    y = np.tanh(x @ rng.normal(size=(4, 6)))
    ids = [f"img{i}" for i in range(12)]
    a = make_set(x, ids=ids, fingerprint="model-a")
    order = rng.permutation(12)
    b = make_set(y[order], ids=[ids[i] for i in order], fingerprint="model-b")
    assert linear_cka(a, b) == pytest.approx(hsic_cka(x, y), rel=1e-6)
    other = make_set(y, ids=[f"other{i}" for i in range(12)])
    assert np.isnan(linear_cka(a, other))


# -- matrix, ranking, probes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_domains():
    rng = np.random.default_rng(9)
    centres = {"digits": 0.0, "animals": 3.0, "faces": -3.0}
    sets = {}
    for name, c in centres.items():
        vectors = rng.normal(c, 1.0, size=(60, 6)) + np.arange(6) * (c != 0)
        sets[name] = make_set(np.abs(vectors) + 0.1, rng.integers(0, 3, 60), name=name)
    return sets


@pytest.mark.parametrize("metric", ["cosine-mean", "emd", "frechet", "mmd"])
def test_every_dataset_is_most_similar_to_itself(three_domains, metric):
    m = similarity_matrix(three_domains, metric)
    best = np.argmax(m.values, axis=1) if m.higher_is_more_similar else np.argmin(m.values, 1)
    assert list(best) == [0, 1, 2]
    np.testing.assert_allclose(m.values, m.values.T)


def test_rank_sources_puts_the_same_distribution_first(three_domains):
    rng = np.random.default_rng(10)
    target = make_set(np.abs(rng.normal(0, 1, (40, 6))) + 0.1, name="target")
    for metric in ["cosine-mean", "emd", "frechet", "mmd"]:
        rows = rank_sources(target, three_domains, [metric, "cosine-mean"])
        assert rows[0]["source"] == "digits", metric
        assert [r["rank"] for r in rows] == [1, 2, 3]


def test_sets_from_different_probes_are_refused(three_domains):
    other = make_set(three_domains["digits"].vectors, fingerprint="another-model")
    with pytest.raises(UsageError, match="embedded differently"):
        similarity_matrix({"a": three_domains["digits"], "b": other}, "mmd")
    with pytest.raises(UsageError, match="different dimensions"):
        cosine_mean(np.ones((3, 2)), np.ones((3, 4)))


def test_cli_similarity_matrix_table_json_csv_and_heatmap(three_domains, tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    paths = []
    for name, s in three_domains.items():
        paths.append(str(s.save(tmp_path / f"{name}.parquet")))
    runner = CliRunner()
    heat = tmp_path / "sim.png"
    result = runner.invoke(cli, ["similarity", *paths, "--metric", "cosine-mean",
                                 "--metric", "mmd", "--heatmap", str(heat)])
    assert result.exit_code == 0, result.output
    assert "cosine-mean (higher = more similar)" in result.output
    assert (tmp_path / "sim-cosine-mean.png").stat().st_size > 1000
    assert (tmp_path / "sim-mmd.png").exists()
    result = runner.invoke(cli, ["similarity", *paths, "--metric", "frechet", "--json"])
    data = json.loads(result.stdout)
    assert data[0]["names"] == ["digits", "animals", "faces"]
    assert data[0]["matrix"][0][0] == pytest.approx(0.0, abs=1e-9)
    result = runner.invoke(cli, ["similarity", *paths, "--csv"])
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "metric,dataset,digits,animals,faces" and len(lines) == 4
    result = runner.invoke(cli, ["rank-sources", paths[0], "--sources", *paths[1:], "--json"])
    assert result.exit_code == 0, result.output
    assert [r["rank"] for r in json.loads(result.stdout)["ranking"]] == [1, 2]
    result = runner.invoke(cli, ["rank-sources", paths[0]])
    assert result.exit_code == 2 and "--sources" in result.output
    result = runner.invoke(cli, ["rank-sources", *paths])  # sources without the option
    assert result.exit_code == 2 and "only --sources takes several values" in result.output
    result = runner.invoke(cli, ["rank-sources", "--sources", *paths])  # the target last
    assert result.exit_code == 2 and "TARGET" in result.output
    assert "It goes before --sources, whose values run up to the next option" in result.output


def test_a_distance_from_a_set_to_itself_is_zero_on_the_diagonal():
    """The unbiased MMD^2 of a sample with itself is below 0 (its cross term keeps k(x, x)):
    the matrix states 0 there, by definition, and estimates only between different sets."""
    from embedkit.embeddings import EmbeddingSet
    from embedkit.similarity import mmd2, similarity_matrix

    rng = np.random.default_rng(0)
    a, b = (EmbeddingSet([str(i) for i in range(30)], rng.normal(size=(30, 8)) + shift)
            for shift in (0.0, 0.5))
    assert mmd2(a, a) < 0  # what the diagonal used to show
    for metric in ("mmd", "frechet"):
        m = similarity_matrix({"a": a, "b": b}, metric)
        assert m.values[0, 0] == m.values[1, 1] == 0.0 and m.values[0, 1] > 0
    assert similarity_matrix({"a": a, "b": b}, "mmd").values[0, 1] == pytest.approx(mmd2(a, b))
