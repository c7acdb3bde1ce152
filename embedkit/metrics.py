"""How good a classifier is, computed with scikit-learn's own metric functions, as one dict.

`classification_report(y_true, y_pred, classes, scores)` gives accuracy, balanced accuracy, macro
and weighted F1, per-class precision / recall / F1 / support, the confusion matrix, and, when
scores are given, ROC-AUC and PR-AUC (average precision): for the positive class when there are
two classes, macro one-vs-rest otherwise.  Scores are probabilities or decision-function values
with one column per entry of `classes` (a single column, or 1-D, for binary decision functions).
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError

__all__ = ["classification_report", "ranking_scores"]


def classification_report(y_true, y_pred, classes=None, scores=None,
                          score_kind: str | None = None) -> dict:
    """One report dict; `classes` is the model's class order (the columns of `scores`)."""
    from sklearn import metrics

    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray([str(v) for v in y_pred], dtype=object)
    if len(y_true) != len(y_pred):
        raise UsageError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise UsageError("nothing to evaluate: no labelled item")
    classes = [str(c) for c in (classes if classes is not None else sorted(set(y_true)))]
    # every label that occurs, the model's classes first: a class the model never saw still
    # gets its row (recall 0), a class absent from the data still gets its column
    labels = classes + sorted(set(y_true) - set(classes))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    report = {
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, labels=labels, average="macro",
                                           zero_division=0)),
        "f1_weighted": float(metrics.f1_score(y_true, y_pred, labels=labels, average="weighted",
                                              zero_division=0)),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                       "support": int(s)}
                      for c, p, r, f, s in zip(labels, precision, recall, f1, support)],
        "labels": labels,
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "roc_auc": None,
        "pr_auc": None,
        "auc_from": None,
    }
    if scores is not None:
        report.update(ranking_scores(y_true, np.asarray(scores, dtype=float), classes))
        report["auc_from"] = score_kind
    return report


def _balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in y_true (predicting a class absent from the data
    is an ordinary mistake here, not a warning)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def ranking_scores(y_true, scores, classes) -> dict:
    """ROC-AUC and PR-AUC: binary for two classes, else macro one-vs-rest over the classes that
    occur in y_true (a class with no positive example has no AUC).  None when undefined."""
    from sklearn import metrics
    from sklearn.preprocessing import label_binarize

    classes = [str(c) for c in classes]
    present = set(y_true)
    if len(classes) < 2 or len(present) < 2 or not present <= set(classes):
        return {"roc_auc": None, "pr_auc": None,
                "auc_note": "undefined: needs two or more classes, all known to the model"}
    if len(classes) == 2:
        positive = scores if scores.ndim == 1 else scores[:, -1]
        truth = (y_true == classes[1]).astype(int)
        return {"roc_auc": float(metrics.roc_auc_score(truth, positive)),
                "pr_auc": float(metrics.average_precision_score(truth, positive)),
                "auc_note": f"positive class '{classes[1]}'"}
    cols = [i for i, c in enumerate(classes) if c in present]
    truth = label_binarize(y_true, classes=classes)[:, cols]
    kept = scores[:, cols]
    return {"roc_auc": float(metrics.roc_auc_score(truth, kept, average="macro")),
            "pr_auc": float(metrics.average_precision_score(truth, kept, average="macro")),
            "auc_note": f"macro one-vs-rest over {len(cols)} classes"}
