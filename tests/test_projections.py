"""The 2-D maps (`plots.project_2d`, used by `embedkit map` and the study page): each method
keeps the neighbourhoods of real data, measured by scikit-learn's trustworthiness (Venna &
Kaski 2001): 1.0 when every point's nearest neighbours in the map were near in the data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness

from embedkit.errors import UsageError
from embedkit.plots import project_2d


@pytest.fixture(scope="module")
def digits():
    return load_digits().data[:300].astype(np.float32)


@pytest.mark.parametrize("method, floor", [("pca", 0.8), ("tsne", 0.95), ("umap", 0.95)])
def test_maps_keep_neighbourhoods_and_are_reproducible(digits, method, floor):
    if method == "umap":
        pytest.importorskip("umap", reason="the extra embedkit[umap] is not installed")
    points = project_2d(digits, method, seed=0)
    assert points.shape == (300, 2) and np.isfinite(points).all()
    assert trustworthiness(digits, points, n_neighbors=5) > floor
    shuffled = np.random.default_rng(0).permutation(points)
    assert trustworthiness(digits, shuffled, n_neighbors=5) < 0.6, "the measure can fail"
    np.testing.assert_allclose(project_2d(digits, method, seed=0), points, rtol=1e-5, atol=1e-5)


def test_a_map_of_two_items_is_refused(digits):
    with pytest.raises(UsageError, match="at least 3 items"):
        project_2d(digits[:2], "pca")
