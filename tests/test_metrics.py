"""The metrics report against scikit-learn's own functions and float64 NumPy by hand, on real
predictions of classifiers fitted to the digits pixels."""

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from embedkit.errors import UsageError
from embedkit.metrics import classification_report


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    labels = np.asarray([f"d{v}" for v in d.target], dtype=object)
    return d.data[:900], labels[:900], d.data[900:1300], labels[900:1300]


def test_multiclass_report_matches_sklearn(digits):
    X, y, Xt, yt = digits
    clf = LogisticRegression(C=0.001, max_iter=2000).fit(X, y)  # weak on purpose: errors to count
    pred, proba = clf.predict(Xt), clf.predict_proba(Xt)
    r = classification_report(yt, pred, clf.classes_, proba, "probability")
    assert r["accuracy"] == pytest.approx(metrics.accuracy_score(yt, pred))
    assert r["accuracy"] == pytest.approx(np.mean(yt == pred))
    assert r["accuracy"] < 0.99  # the report has real mistakes to describe
    assert r["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(yt, pred))
    recalls = [np.mean(pred[yt == c] == c) for c in clf.classes_]  # by hand, float64
    assert r["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert r["f1_macro"] == pytest.approx(metrics.f1_score(yt, pred, average="macro"))
    assert r["f1_weighted"] == pytest.approx(metrics.f1_score(yt, pred, average="weighted"))
    p, rec, f1, s = metrics.precision_recall_fscore_support(yt, pred, labels=clf.classes_)
    assert [c["class"] for c in r["per_class"]] == list(clf.classes_)
    np.testing.assert_allclose([c["precision"] for c in r["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in r["per_class"]], rec)
    np.testing.assert_allclose([c["recall"] for c in r["per_class"]], recalls)
    np.testing.assert_allclose([c["f1"] for c in r["per_class"]], f1)
    assert [c["support"] for c in r["per_class"]] == list(s)
    assert r["confusion_matrix"] == metrics.confusion_matrix(yt, pred,
                                                             labels=clf.classes_).tolist()
    assert r["roc_auc"] == pytest.approx(metrics.roc_auc_score(yt, proba, multi_class="ovr"))
    per_class_ap = [metrics.average_precision_score(yt == c, proba[:, i])
                    for i, c in enumerate(clf.classes_)]
    assert r["pr_auc"] == pytest.approx(np.mean(per_class_ap))
    assert r["auc_from"] == "probability"


def test_binary_report_uses_the_positive_class_decision_function(digits):
    X, y, Xt, yt = digits
    keep, keep_t = np.isin(y, ["d3", "d8"]), np.isin(yt, ["d3", "d8"])
    clf = SVC(kernel="linear", C=1e-4).fit(X[keep], y[keep])
    score = clf.decision_function(Xt[keep_t])
    pred = clf.predict(Xt[keep_t])
    truth = yt[keep_t]
    r = classification_report(truth, pred, clf.classes_, score, "decision function")
    assert r["roc_auc"] == pytest.approx(metrics.roc_auc_score(truth == "d8", score))
    assert r["pr_auc"] == pytest.approx(metrics.average_precision_score(truth == "d8", score))
    assert "positive class 'd8'" in r["auc_note"]
    assert 0.5 < r["roc_auc"] <= 1.0


def test_one_vs_rest_covers_only_the_classes_present(digits):
    X, y, Xt, yt = digits
    clf = LogisticRegression(C=0.001, max_iter=2000).fit(X, y)
    part = np.isin(yt, ["d0", "d1", "d2"])  # evaluation data with 3 of the 10 classes
    proba = clf.predict_proba(Xt[part])
    r = classification_report(yt[part], clf.predict(Xt[part]), clf.classes_, proba)
    by_hand = np.mean([metrics.roc_auc_score(yt[part] == c, proba[:, i])
                       for i, c in enumerate(clf.classes_) if c in ("d0", "d1", "d2")])
    assert r["roc_auc"] == pytest.approx(by_hand)
    assert "3 classes" in r["auc_note"]


def test_a_label_the_model_never_saw_gets_a_row_and_no_auc(digits):
    X, y, Xt, yt = digits
    keep = y != "d9"
    clf = LogisticRegression(max_iter=2000).fit(X[keep], y[keep])
    pred, proba = clf.predict(Xt), clf.predict_proba(Xt)
    r = classification_report(yt, pred, clf.classes_, proba)
    assert r["labels"][-1] == "d9"
    unseen = r["per_class"][-1]
    assert unseen["class"] == "d9" and unseen["recall"] == 0.0
    assert unseen["support"] == int(np.sum(yt == "d9"))
    assert r["roc_auc"] is None and r["pr_auc"] is None
    assert len(r["confusion_matrix"]) == 10 and sum(map(sum, r["confusion_matrix"])) == len(yt)


def test_nothing_to_evaluate_is_a_usage_error():
    with pytest.raises(UsageError):
        classification_report([], [])
    with pytest.raises(UsageError):
        classification_report(["a", "b"], ["a"])
