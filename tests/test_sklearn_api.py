"""EmbeddingTransformer as a scikit-learn estimator: the common API checks that apply, path-based
versions of the numeric-data checks, pickling, and a GridSearchCV over real images.

scikit-learn's `estimator_checks` that feed random 2-D float matrices (fit/score signatures,
overwritten parameters, fit returns self, read-only memmaps, idempotent fit, sample-order and
subset invariance, pickling, dtypes, NaN/inf, 1-sample and 1-feature fits, n_features_in_) cannot
apply to a transformer whose input is a list of file paths or texts: each is re-stated below on
real image paths instead.  The tags say so (`two_d_array=False`, `string=True`), which is also why
`check_estimator` itself skips the estimator as a whole.
"""

import pickle

import numpy as np
import pytest
import sklearn.utils.estimator_checks as checks
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from embedkit.errors import UsageError
from embedkit.sklearn import EmbeddingTransformer

API_CHECKS = [
    checks.check_estimator_cloneable,
    checks.check_estimator_tags_renamed,
    checks.check_valid_tag_types,
    checks.check_estimator_repr,
    checks.check_no_attributes_set_in_init,
    checks.check_parameters_default_constructible,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_mixin_order,
    checks.check_estimators_unfitted,
    checks.check_transformers_unfitted,
    checks.check_get_feature_names_out_error,
]


@pytest.mark.parametrize("check", API_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_check(check):
    check("EmbeddingTransformer", EmbeddingTransformer(model="efficientnet_lite0"))


def test_check_estimator_skips_it_for_the_stated_reason():
    tags = EmbeddingTransformer().__sklearn_tags__()
    assert tags.input_tags.two_d_array is False and tags.input_tags.string is True
    with pytest.warns(checks.SkipTestWarning, match="requires input"):
        checks.check_estimator(EmbeddingTransformer())


@pytest.fixture(scope="module")
def paths(digits_small):
    return np.asarray(sorted(str(p) for p in digits_small.rglob("*.png")))


@pytest.fixture(scope="module")
def fitted(paths):
    return EmbeddingTransformer(model="efficientnet_lite0").fit(paths)


def test_vectors_equal_the_backbone_applied_by_hand(fitted, paths):
    out = fitted.transform(paths[:5])
    assert out.shape == (5, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(out, _features_by_hand(paths[:5], "pre_logits"), rtol=1e-4,
                               atol=1e-5)


def test_fit_returns_self_and_leaves_parameters_alone(paths):
    est = EmbeddingTransformer(model="efficientnet_lite0", layer="blocks.5", pool="gem")
    before = est.get_params()
    assert est.fit(paths) is est
    assert est.get_params() == before
    assert est.fingerprint_ and est.dim_ == est.get_feature_names_out().shape[0]


def test_sample_order_and_subset_invariance(fitted, paths):
    full = fitted.transform(paths)
    perm = np.random.default_rng(0).permutation(len(paths))
    np.testing.assert_array_equal(fitted.transform(paths[perm]), full[perm])
    halves = np.vstack([fitted.transform(paths[:7]), fitted.transform(list(paths[7:]))])
    np.testing.assert_array_equal(halves, full)
    again = clone(fitted).fit(paths).transform(paths)  # idempotent fit
    np.testing.assert_array_equal(again, full)


def test_unfitted_and_non_path_inputs_are_refused(paths, fitted):
    with pytest.raises(NotFittedError):
        EmbeddingTransformer().transform(paths)
    with pytest.raises(UsageError, match=r"1-D list .* shape \(3, 4\)"):
        fitted.transform(np.zeros((3, 4)))
    with pytest.raises(UsageError, match="not one string"):
        fitted.transform(paths[0])
    with pytest.raises(UsageError, match="got a float"):
        fitted.transform([0.5, 1.5])


def test_clone_and_pickle_carry_no_torch_module(fitted, paths):
    fitted.transform(paths[:2])  # weights are loaded now
    blob = pickle.dumps(fitted)
    assert b"torch" not in blob and len(blob) < 10_000
    back = pickle.loads(blob)
    assert back.get_params() == fitted.get_params() and back.fingerprint_ == fitted.fingerprint_
    np.testing.assert_array_equal(back.transform(paths[:3]), fitted.transform(paths[:3]))
    fresh = clone(fitted)
    assert fresh.get_params() == fitted.get_params() and not hasattr(fresh, "fingerprint_")


def test_grid_search_over_layers_inside_a_pipeline(paths):
    """The search through the adapter scores, picks and predicts exactly as scikit-learn does on
    features computed beforehand by each layer's backbone (the reference, without the adapter)."""
    labels = np.asarray([p.split("/")[-2] for p in paths])
    pipe = make_pipeline(EmbeddingTransformer(model="efficientnet_lite0"), SVC(kernel="linear"))
    search = GridSearchCV(pipe, {"embeddingtransformer__layer": ["pre_logits", "blocks.5"],
                                 "svc__C": [0.01, 1.0]}, cv=2, error_score="raise")
    search.fit(paths, labels)
    features = {layer: _features_by_hand(paths, layer) for layer in ("pre_logits", "blocks.5")}
    expected = {}
    for layer, X in features.items():
        reference = GridSearchCV(SVC(kernel="linear"), {"C": [0.01, 1.0]}, cv=2).fit(X, labels)
        for params, score in zip(reference.cv_results_["params"],
                                 reference.cv_results_["mean_test_score"]):
            expected[layer, params["C"]] = score
    got = {(p["embeddingtransformer__layer"], p["svc__C"]): score
           for p, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])}
    assert got == pytest.approx(expected, abs=1e-12)
    assert search.best_score_ == max(expected.values())
    best = search.best_params_
    X = features[best["embeddingtransformer__layer"]]
    refit = SVC(kernel="linear", C=best["svc__C"]).fit(X, labels)
    assert search.predict(paths).tolist() == refit.predict(X).tolist()


def _features_by_hand(paths, layer) -> np.ndarray:
    """The layer's vectors from the backbone's own preprocess and embed, in one batch."""
    import torch

    from embedkit.inputs import Item
    from embedkit.registry import create_backbone

    backbone = create_backbone("efficientnet_lite0", layer=layer)
    return np.asarray(backbone.embed(torch.stack([backbone.preprocess(Item(p, path=p))
                                                  for p in paths])))


def test_texts_go_through_the_default_text_model():
    from embedkit.registry import list_models

    if "glove-6b-50d" not in [n for n, _ in list_models("text")]:
        pytest.skip("the bundled GloVe backbone is not registered in this checkout")
    texts = ["a moving and funny film", "dull, slow and far too long", "a moving film"]
    out = EmbeddingTransformer().fit(texts).transform(texts)
    assert out.shape[0] == 3 and np.isfinite(out).all()
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    assert cos(out[0], out[2]) > cos(out[0], out[1])
