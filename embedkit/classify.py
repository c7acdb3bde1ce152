"""Light classifiers on frozen embeddings: train, judge, save, and apply to raw inputs.

`train(features, "svm-linear")` fits, for each label column (task) of an EmbeddingSet, a
scikit-learn Pipeline (StandardScaler or L2 Normalizer, then the classifier) whose
hyper-parameters are chosen by stratified K-fold cross-validation with a stated seed.  Small and
imbalanced data: `class_weight="balanced"`, random over- / under-sampling done inside the training
folds only (`Resampled`), augmented views as extra training rows (again only inside training
folds: an image's views never validate its own original), and splits that refuse a class with
too few examples and name it.

A `TrainedClassifier` records how its features were made (backbone name, layer, pooling,
normalisation, fingerprint, test-time augmentation), so `embed(inputs)` goes from raw images or
texts to predictions, and features from any other backbone are refused by name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.utils.metaestimators import available_if

from .embeddings import EmbeddingSet, is_embeddings_file
from .errors import BackboneMismatch, UsageError
from .options import AUGMENT_MODES, CLASSIFIER_NAMES, RESAMPLING, SCALERS

__all__ = ["CLASSIFIERS", "DEFAULT_CV", "build_pipeline", "check_class_counts", "check_options",
           "ClassifierChoice", "describe_features", "embed_with_recipe", "fold_splits",
           "head_scores", "holdout_split", "labelled_class_counts", "resample_rows", "Resampled",
           "train", "train_command", "TrainedClassifier", "training_features"]

#: Folds of the grid search that `train` (and `embedkit train`) runs by default.
DEFAULT_CV = 5



@dataclass(frozen=True)
class ClassifierChoice:
    """A classifier by name: how to build it, its search grid, whether it takes class weights."""

    build: Callable[[int], BaseEstimator]  # seed -> estimator
    grid: Callable[[int, int], dict]  # (n_features, smallest training fold) -> param grid
    class_weight: bool = True


def _knn_grid(d, smallest):
    ks = [k for k in (1, 3, 5, 9, 15) if k <= smallest] or [1]
    return {"n_neighbors": ks, "weights": ["uniform", "distance"]}


def _build(name):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {
        "svm-linear": lambda s: SVC(kernel="linear", random_state=s),
        "svm-rbf": lambda s: SVC(kernel="rbf", random_state=s),
        "logreg": lambda s: LogisticRegression(max_iter=5000, random_state=s),
        "knn": lambda s: KNeighborsClassifier(),
        "ridge": lambda s: RidgeClassifier(),
        "random-forest": lambda s: RandomForestClassifier(n_estimators=100, random_state=s),
        "mlp": lambda s: MLPClassifier(hidden_layer_sizes=(256,), solver="lbfgs",
                                          max_iter=500, random_state=s),
    }[name]


CLASSIFIERS: dict[str, ClassifierChoice] = {
    "svm-linear": ClassifierChoice(_build("svm-linear"),
                                   lambda d, m: {"C": [1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0]}),
    # gamma around 1/d: the 'scale' value for standardised features
    "svm-rbf": ClassifierChoice(_build("svm-rbf"), lambda d, m: {
        "C": [0.1, 1.0, 10.0, 100.0], "gamma": [g / d for g in (0.1, 1.0, 10.0)]}),
    "logreg": ClassifierChoice(_build("logreg"), lambda d, m: {"C": [0.01, 0.1, 1.0, 10.0]}),
    "knn": ClassifierChoice(_build("knn"), _knn_grid, class_weight=False),
    "ridge": ClassifierChoice(_build("ridge"),
                              lambda d, m: {"alpha": [1.0, 10.0, 100.0, 1e3, 1e4]}),
    "random-forest": ClassifierChoice(_build("random-forest"), lambda d, m: {
        "max_features": ["sqrt", "log2"], "min_samples_leaf": [1, 3]}),
    "mlp": ClassifierChoice(_build("mlp"), lambda d, m: {"alpha": [1e-4, 1e-2, 1.0]},
                            class_weight=False),
}


# --------------------------------------------------------------------------------------------
# Resampling inside the training folds


def resample_rows(y, strategy: str, seed: int = 0) -> np.ndarray:
    """Row indices that balance the classes of y: 'over' draws extra rows of the smaller classes
    (with replacement) up to the largest; 'under' keeps a random subset of every class the size
    of the smallest.  Sorted, so the original order is kept."""
    RESAMPLING.check(strategy)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max() if strategy == "over" else counts.min()
    rows = []
    for c, n in zip(classes, counts):
        idx = np.flatnonzero(y == c)
        if strategy == "over":
            rows += [idx, rng.choice(idx, target - n, replace=True)]
        else:
            rows.append(rng.choice(idx, target, replace=False))
    return np.sort(np.concatenate(rows))


def _inner_has(method):
    return lambda self: hasattr(self.estimator, method)


class Resampled(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """A classifier fitted on a class-balanced resample of whatever rows `fit` receives.

    Inside a Pipeline under cross-validation `fit` only ever sees a training fold, so the
    validation fold is never resampled and no copy of a validation row reaches training.
    `fit_counts_` holds the class counts it was fitted on.
    """

    def __init__(self, estimator=None, strategy: str = "over", random_state: int = 0):
        self.estimator = estimator
        self.strategy = strategy
        self.random_state = random_state

    def fit(self, X, y):
        X, y = np.asarray(X), np.asarray(y)
        rows = resample_rows(y, self.strategy, self.random_state)
        self.estimator_ = clone(self.estimator).fit(X[rows], y[rows])
        self.classes_ = self.estimator_.classes_
        classes, counts = np.unique(y[rows], return_counts=True)
        self.fit_counts_ = {str(c): int(n) for c, n in zip(classes, counts)}
        return self

    def predict(self, X):
        return self.estimator_.predict(X)

    @available_if(_inner_has("predict_proba"))
    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)

    @available_if(_inner_has("decision_function"))
    def decision_function(self, X):
        return self.estimator_.decision_function(X)


# --------------------------------------------------------------------------------------------
# Pipelines and splits


def check_options(classifier: str, *, scale: str = "standard", class_weight: str | None = None,
                  resample: str | None = None):
    """Refuse an unknown or ill-fitting choice before any work is done."""
    CLASSIFIER_NAMES.check(classifier)
    SCALERS.check(scale)
    if class_weight is not None:
        if class_weight != "balanced":
            raise UsageError(f"class weight '{class_weight}': only 'balanced' is offered")
        if not CLASSIFIERS[classifier].class_weight:
            raise UsageError(f"{classifier} takes no class weights; balance it with "
                             "--resample over (or under) instead")
    if resample is not None:
        RESAMPLING.check(resample)


def build_pipeline(classifier: str = "svm-linear", *, scale: str = "standard",
                   class_weight: str | None = None, resample: str | None = None,
                   seed: int = 0):
    """Pipeline([scale, clf]) and the prefix of the classifier's parameters in it."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    check_options(classifier, scale=scale, class_weight=class_weight, resample=resample)
    estimator = CLASSIFIERS[classifier].build(seed)
    if class_weight is not None:
        estimator.set_params(class_weight="balanced")
    prefix = "clf__"
    if resample is not None:
        estimator = Resampled(estimator, resample, seed)
        prefix = "clf__estimator__"
    scaler = StandardScaler() if scale == "standard" else Normalizer()
    return Pipeline([("scale", scaler), ("clf", estimator)]), prefix


def labelled_class_counts(values) -> tuple[np.ndarray, np.ndarray]:
    """(classes, counts) of the items that carry a label: None and "" do not (train leaves
    those items out)."""
    return np.unique([str(v) for v in values if v is not None and str(v) != ""],
                     return_counts=True)


def train_command(target: str, model: str, classifier: str, layer: str | None = None,
                  label: str | None = None, label_columns: dict | None = None) -> str:
    """The `embedkit train` command for a target, as advice and the study print it: with
    `--cv` lowered to the smallest class where it holds fewer than DEFAULT_CV items (train
    refuses folds a class cannot fill), so the printed command runs.  The classes counted are
    those train will learn: `label`'s, else every column of `label_columns`; unlabelled items
    do not count, as train leaves them out."""
    import shlex

    parts = ["embedkit train", shlex.quote(target), "--model", shlex.quote(model)]
    if layer:
        parts += ["--layer", shlex.quote(layer)]
    parts += ["--classifier", classifier]
    if label:
        parts += ["--label", shlex.quote(label)]
    columns = {k: v for k, v in (label_columns or {}).items() if not label or k == label}
    counts = [n for values in columns.values() for n in labelled_class_counts(values)[1]]
    if counts and 2 <= min(counts) < DEFAULT_CV:
        parts += ["--cv", str(min(counts))]
    return " ".join([*parts, "-o", "model.skops"])


def check_class_counts(y, need: int, task: str, why: str):
    """Refuse a task with fewer than `need` examples in some class, naming the class."""
    classes, counts = np.unique(np.asarray(y, dtype=str), return_counts=True)
    if len(classes) < 2:
        raise UsageError(f"task '{task}' has a single class ('{classes[0] if len(classes) else ''}'"
                         "); a classifier needs at least two")
    small = [(c, n) for c, n in zip(classes, counts) if n < need]
    if small:
        c, n = min(small, key=lambda cn: cn[1])
        others = f" (and {len(small) - 1} more class(es))" if len(small) > 1 else ""
        raise UsageError(f"task '{task}': class '{c}' has only {n} example(s){others}; {why} "
                         f"needs at least {need} per class. Add examples, lower --cv, or leave "
                         "the class out")


def holdout_split(y, fraction: float, seed: int, task: str):
    """Stratified (train, test) row indices with about `fraction` of every class held out."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--holdout must be a fraction in (0, 1), not {fraction}")
    check_class_counts(y, 2, task, f"a {fraction:g} held-out split")
    n_classes = len(np.unique(y))
    n_test = max(n_classes, int(round(fraction * len(y))))
    if len(y) - n_test < n_classes:
        raise UsageError(f"task '{task}': {len(y)} examples are too few to hold out {fraction:g} "
                         f"and still train on all {n_classes} classes")
    return train_test_split(np.arange(len(y)), test_size=n_test, stratify=y, random_state=seed)


def fold_splits(y, cv: int, seed: int, views: int = 0):
    """Stratified K-fold (train, validation) row indices over n base rows followed by `views`
    blocks of augmented copies (row i + k*n is a view of row i): a base row's views train only
    when the row itself trains, and validation holds originals only."""
    from sklearn.model_selection import StratifiedKFold

    n = len(y)
    owner = np.tile(np.arange(n), views + 1)
    splits = []
    for train, valid in StratifiedKFold(cv, shuffle=True, random_state=seed).split(
            np.zeros(n), y):
        splits.append((np.flatnonzero(np.isin(owner, train)), valid))
    return splits


# --------------------------------------------------------------------------------------------
# Training


def describe_features(meta: dict) -> str:
    parts = [f"layer {meta.get('layer')}"]
    if meta.get("pool"):
        parts.append(f"pool {meta['pool']}")
    if meta.get("normalize"):
        parts.append("L2-normalised")
    if meta.get("augment"):
        a = meta["augment"]
        parts.append(f"averaged over {a['views']} augmented views ({a['recipe']})")
    fp = meta.get("fingerprint")
    parts.append(f"fingerprint {fp[:12] if fp else 'none'}")
    return f"{meta.get('model') or 'unknown model'} ({', '.join(parts)})"


@dataclass
class TrainedClassifier:
    """One fitted head per task on the same features, and the recipe of those features."""

    heads: dict  # task -> fitted Pipeline
    features: dict  # model, layer, pool, normalize, weights, fingerprint, modality, dim, augment
    info: dict = field(default_factory=dict)  # settings, and per task: classes, params, scores
    path: str | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path) -> Path:
        from .artifacts import save_artifact

        return save_artifact({"heads": self.heads, "features": self.features,
                              "info": self.info}, path)

    @classmethod
    def load(cls, path) -> "TrainedClassifier":
        from .artifacts import load_artifact
        from .errors import ArtifactError

        content = load_artifact(path)
        heads = content.get("heads")
        if not isinstance(heads, dict) or not heads or not all(
                hasattr(h, "predict") for h in heads.values()):
            raise ArtifactError(f"{path}: an embedkit classifier file without usable heads")
        return cls(heads, dict(content.get("features") or {}), dict(content.get("info") or {}),
                   str(path))

    # -- features ---------------------------------------------------------------------------
    def check_features(self, es: EmbeddingSet):
        """Refuse features that were not made the way the training features were."""
        mine = self.features
        where = self.path or "the model"
        if es.meta.get("fingerprint") != mine.get("fingerprint"):
            raise BackboneMismatch(
                f"these features come from {describe_features(es.meta)}, but {where} was "
                f"trained on {describe_features(mine)}; give raw inputs (they are embedded with "
                f"the recorded backbone) or features extracted with --model {mine.get('model')}")
        if es.dim != mine.get("dim"):
            raise BackboneMismatch(f"features have {es.dim} dimensions, {where} expects "
                                   f"{mine.get('dim')}")

    def embed(self, inputs, *, cache=None, label: str | None = None,
              **run) -> EmbeddingSet:
        """Features for `inputs` exactly as the training features were made: a saved set (or
        EmbeddingSet) is checked; raw images / texts / datasets go through the recorded backbone
        (and test-time augmentation) and the cache.  `run`: how the backbone runs (batch_size,
        device, precision, progress), passed to `extract`."""
        from .registry import backbone_from_meta

        if isinstance(inputs, EmbeddingSet) or is_embeddings_file(inputs):
            from .extract import embeddings_of

            es = embeddings_of(inputs)
            self.check_features(es)
            return es
        f = self.features
        if not f.get("model"):
            raise UsageError(f"{self.path or 'the model'} was trained on features of unknown "
                             "origin; it can only take saved features, not raw inputs")
        backbone = backbone_from_meta(f)
        base = f.get("base_fingerprint") or f.get("fingerprint")
        if backbone.fingerprint() != base:
            raise BackboneMismatch(
                f"{self.path or 'the model'} was trained on {describe_features(f)}, but "
                f"{f['model']} built here has fingerprint {backbone.fingerprint()[:12]} "
                f"(other weights or another embedkit version); pass the same --weights or "
                f"retrain")
        es = embed_with_recipe(inputs, backbone, f.get("augment"), cache=cache, label=label,
                               **run)
        self.check_features(es)
        return es

    # -- use --------------------------------------------------------------------------------
    def scores(self, es: EmbeddingSet, task: str):
        """(scores, kind) of the task's head on `es` (see `head_scores`)."""
        return head_scores(self.heads[task], es.vectors)

    def predict(self, es: EmbeddingSet) -> dict[str, np.ndarray]:
        self.check_features(es)
        return {task: head.predict(es.vectors) for task, head in self.heads.items()}

    def predictions(self, es: EmbeddingSet) -> list[dict]:
        """One row per item: id, the predicted label per task, and `p(task=class)` columns
        where the head gives probabilities."""
        labels = self.predict(es)
        rows = [{"id": i} for i in es.ids]
        for task, head in self.heads.items():
            proba = head.predict_proba(es.vectors) if hasattr(head, "predict_proba") else None
            for n, row in enumerate(rows):
                row[task] = str(labels[task][n])
                if proba is not None:
                    for c, p in zip(head.classes_, proba[n]):
                        row[f"p({task}={c})"] = round(float(p), 6)
        return rows

    def evaluate(self, es: EmbeddingSet) -> dict[str, dict]:
        """Per task, the metrics report on the items of `es` that carry that task's label."""
        from .metrics import classification_report

        self.check_features(es)
        reports = {}
        for task, head in self.heads.items():
            if task not in es.label_columns:
                have = ", ".join(es.label_columns) or "none"
                raise UsageError(f"the data has no label column '{task}' to evaluate against "
                                 f"(its label columns: {have})")
            y = es.label_columns[task]
            keep = np.flatnonzero([v is not None and str(v) != "" for v in y])
            if not len(keep):
                raise UsageError(f"no item of the data carries a '{task}' label")
            part = es.subset(keep)
            scores, kind = self.scores(part, task)
            reports[task] = classification_report(part.label_columns[task],
                                                  head.predict(part.vectors), head.classes_,
                                                  scores, kind)
            known = {str(c) for c in head.classes_}
            unseen = sorted({str(v) for v in part.label_columns[task]} - known)
            if unseen:  # every such item is an error the model could not avoid
                count = sum(str(v) not in known for v in part.label_columns[task])
                reports[task]["unseen_note"] = (
                    f"{count} of {len(part)} items carry labels the model was never trained on "
                    f"({', '.join(unseen[:5])}{', ...' if len(unseen) > 5 else ''}); they count "
                    "as errors" + ("; is this the data the model was trained for?"
                                   if count == len(part) else ""))
        return reports


def head_scores(head, X):
    """(scores, kind): class probabilities where the head has them, else its decision function,
    else (None, None)."""
    for method, kind in (("predict_proba", "probability"),
                         ("decision_function", "decision function")):
        if hasattr(head, method):
            return getattr(head, method)(X), kind
    return None, None


def embed_with_recipe(inputs, backbone, augment: dict | None, **extract_options) -> EmbeddingSet:
    """Embed through the cache, averaging augmented views when the recipe says so."""
    from .extract import extract

    base = extract(inputs, backbone, **extract_options)
    if not augment or augment.get("mode") != "average":
        return base
    from .augment import average_views, extract_views

    views = extract_views(inputs, backbone, augment["views"], augment["recipe"], augment["seed"],
                          **extract_options)
    return average_views(base, views, augment["recipe"], augment["seed"])


def training_features(spec, model=None, *, augment: int = 0, augment_mode: str = "rows",
                      recipe: str | None = None, seed: int = 0, layer=None, pool=None,
                      normalize: bool = False, weights=None, label=None,
                      **extract_options) -> tuple[EmbeddingSet, list[EmbeddingSet]]:
    """(features, augmented views as extra rows) for training from a saved set or a dataset.

    With `augment=N` (images only): N augmented views per image, embedded through the cache;
    `augment_mode="rows"` returns them as extra training rows (aligned with the features),
    `"average"` returns the test-time averaged features and no extra rows.
    """
    from .extract import embeddings_of
    from .inputs import open_dataset
    from .registry import chosen_model, create_backbone

    if not augment:
        return embeddings_of(spec, model, layer=layer, pool=pool, normalize=normalize,
                             weights=weights, label=label, **extract_options), []
    AUGMENT_MODES.check(augment_mode)
    if isinstance(spec, EmbeddingSet) or is_embeddings_file(spec):
        raise UsageError("--augment needs the images themselves: give the dataset (and --model), "
                         "not saved features")
    from .augment import AugmentSpec, align, extract_views

    recipe = str(AugmentSpec.parse(recipe))
    ds = open_dataset(spec, label=label)
    backbone = create_backbone(chosen_model(model, ds.modality), layer=layer, pool=pool,
                               normalize=normalize or None, weights=weights)
    if augment_mode == "average":
        plan = {"mode": "average", "views": augment, "recipe": recipe, "seed": seed}
        return embed_with_recipe(ds, backbone, plan, **extract_options), []
    from .extract import extract

    base = extract(ds, backbone, **extract_options)
    views = align(base, extract_views(ds, backbone, augment, recipe, seed, **extract_options))
    for view in views:
        view.meta["augment"] = {"mode": "rows", "views": augment, "recipe": recipe, "seed": seed}
    return base, views


def _feature_recipe(es: EmbeddingSet, weights) -> dict:
    meta = es.meta
    recipe = {k: meta.get(k) for k in ("model", "layer", "pool", "normalize", "fingerprint",
                                         "modality", "backbone")}
    recipe.update(dim=es.dim, weights=weights, augment=meta.get("augment"))
    if meta.get("augment"):
        recipe["base_fingerprint"] = meta["augment"].get("base_fingerprint")
    return recipe


def train(features: EmbeddingSet, classifier: str = "svm-linear", *, tasks=None,
          cv: int = DEFAULT_CV,
          scale: str = "standard", class_weight: str | None = None, resample: str | None = None,
          seed: int = 0, holdout: float = 0.0, extra_rows: list[EmbeddingSet] | None = None,
          scoring: str = "balanced_accuracy", n_jobs: int | None = None,
          weights: str | None = None) -> TrainedClassifier:
    """Fit one head per task (label column) of `features`.

    Hyper-parameters: grid search over the classifier's grid by stratified `cv`-fold
    cross-validation (shuffled with `seed`), scored by `scoring`; the best setting is refitted
    on all training rows.

    Args:
        features: a labelled EmbeddingSet.
        classifier: one of embedkit.options.CLASSIFIER_NAMES (svm-linear first).
        tasks: label columns to learn (default: every one).
        cv, seed, scoring, n_jobs: the cross-validated grid search.
        scale: "standard" or "l2" feature scaling inside the pipeline.
        class_weight: "balanced" reweights the loss by class frequency.
        resample: "over" / "under" sampling, inside the training folds only.
        holdout: a stratified fraction of every task's items kept out of training; the metrics
            on it are reported (the saved heads never saw those items).
        extra_rows: augmented views aligned with `features` (extra rows inside training folds).
        weights: the weights file of the backbone that made the features (recorded).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV

    from .metrics import classification_report

    if cv < 2:
        raise UsageError(f"--cv must be at least 2, not {cv}")
    tasks = list(tasks) if tasks else list(features.label_columns)
    if not tasks:
        raise UsageError("the features carry no labels; train on a labelled dataset (class "
                         "subfolders or a manifest with a label column)")
    missing = [t for t in tasks if t not in features.label_columns]
    if missing:
        raise UsageError(f"no label column '{missing[0]}'; the features have "
                         f"{', '.join(features.label_columns) or 'none'}")
    extra_rows = extra_rows or []
    for view in extra_rows:
        if view.ids != features.ids:
            raise UsageError("extra rows must be aligned with the features (same ids, same order)")
    pipeline, prefix = build_pipeline(classifier, scale=scale, class_weight=class_weight,
                                      resample=resample, seed=seed)
    heads, per_task = {}, {}
    for task in tasks:
        y_all = features.label_columns[task]
        labelled = np.flatnonzero([v is not None and str(v) != "" for v in y_all])
        y_all = np.asarray([str(v) for v in y_all[labelled]], dtype=object)
        train_rows, test_rows = np.arange(len(labelled)), None
        if holdout:
            train_rows, test_rows = holdout_split(y_all, holdout, seed, task)
            train_rows = np.sort(train_rows)
        y = y_all[train_rows]
        check_class_counts(y, cv, task, f"--cv {cv}")
        base = labelled[train_rows]
        X = np.concatenate([features.vectors[base], *(v.vectors[base] for v in extra_rows)])
        y_rows = np.tile(y, len(extra_rows) + 1)
        splits = fold_splits(y, cv, seed, views=len(extra_rows))
        smallest = min(len(tr) for tr, _ in splits)
        grid = {prefix + k: v for k, v in
                CLASSIFIERS[classifier].grid(features.dim, smallest).items()}
        search = GridSearchCV(clone(pipeline), grid, cv=splits, scoring=scoring, n_jobs=n_jobs,
                              refit=True, error_score="raise")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            search.fit(X, y_rows)
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        classes, counts = np.unique(y, return_counts=True)
        results = search.cv_results_
        record = {
            "classes": [str(c) for c in classes],
            "train_counts": {str(c): int(n) for c, n in zip(classes, counts)},
            "train_rows": int(len(X)),
            "best_params": {k.removeprefix(prefix): _plain(v)
                            for k, v in search.best_params_.items()},
            "cv_score": float(search.best_score_),
            "cv_std": float(results["std_test_score"][search.best_index_]),
            "grid": [{"params": {k.removeprefix(prefix): _plain(v) for k, v in p.items()},
                      "mean": float(m), "std": float(s)}
                     for p, m, s in zip(results["params"], results["mean_test_score"],
                                        results["std_test_score"])],
            "unconverged_fits": int(unconverged),
        }
        head = search.best_estimator_
        if test_rows is not None:
            X_test = features.vectors[labelled[test_rows]]
            scores, kind = head_scores(head, X_test)
            record["holdout"] = classification_report(
                y_all[test_rows], head.predict(X_test), head.classes_, scores, kind)
        heads[task] = head
        per_task[task] = record
    from . import __version__

    info = {"classifier": classifier, "scale": scale, "cv": cv, "seed": seed,
            "scoring": scoring, "class_weight": class_weight, "resample": resample,
            "holdout": holdout or None,
            "augment_rows": extra_rows[0].meta.get("augment") if extra_rows else None,
            "items": len(features), "dataset": features.meta.get("dataset"),
            "embedkit": __version__, "tasks": per_task}
    return TrainedClassifier(heads, _feature_recipe(features, weights), info)


def _plain(v):
    """Grid values as plain Python (numbers, strings, tuples) for the artifact's info."""
    return v.item() if isinstance(v, np.generic) else v
