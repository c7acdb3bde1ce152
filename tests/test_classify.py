"""Training, artifacts, backbone checks, multi-task, imbalance options and the CLI, on real data:
the digits pixels for the classifier logic, EfficientNet-Lite0 features of real exported digit
images for everything that goes through a backbone."""

import csv
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from embedkit.artifacts import load_artifact
from embedkit.errors import ArtifactError, BackboneMismatch
from embedkit.classify import (CLASSIFIERS, Resampled, TrainedClassifier,
                               build_pipeline, fold_splits, resample_rows, train)
from embedkit.embeddings import EmbeddingSet
from embedkit.errors import UsageError
from one_line_error import assert_one_line_error


def pixels(index, labels, **more) -> EmbeddingSet:
    d = load_digits()
    columns = {"label": labels, **more}
    return EmbeddingSet([str(i) for i in index], d.data[index], columns,
                        {"model": "pixels", "fingerprint": "digits-pixels-8x8", "layer": None})


@pytest.fixture(scope="module")
def digits_split():
    t = load_digits().target
    train_rows, test_rows = np.arange(0, 500), np.arange(500, 900)
    return (pixels(train_rows, t[train_rows].astype(str)),
            pixels(test_rows, t[test_rows].astype(str)))


@pytest.fixture(scope="module")
def trained_svm(digits_split):
    return train(digits_split[0], "svm-linear", cv=3, seed=0)


# -- training ------------------------------------------------------------------------------

def test_grid_search_picks_from_the_grid_and_generalises(trained_svm, digits_split):
    rec = trained_svm.info["tasks"]["label"]
    assert rec["best_params"]["C"] in CLASSIFIERS["svm-linear"].grid(64, 100)["C"]
    assert len(rec["grid"]) == 6 and rec["cv_score"] == max(g["mean"] for g in rec["grid"])
    assert rec["train_counts"] == {str(d): int(n) for d, n in
                                   zip(*np.unique(load_digits().target[:500], return_counts=True))}
    report = trained_svm.evaluate(digits_split[1])["label"]
    assert report["accuracy"] > 0.85 and report["n"] == 400
    assert trained_svm.info["seed"] == 0 and trained_svm.info["cv"] == 3


def test_training_is_reproducible_with_a_seed(digits_split):
    small = digits_split[0].subset(slice(0, 150))
    a, b, c = (train(small, "logreg", cv=2, seed=s, resample="over") for s in (3, 3, 4))
    test = digits_split[1]
    np.testing.assert_array_equal(a.heads["label"].predict_proba(test.vectors),
                                  b.heads["label"].predict_proba(test.vectors))
    assert a.info["tasks"]["label"]["grid"] == b.info["tasks"]["label"]["grid"]
    assert a.info["tasks"]["label"]["grid"] != c.info["tasks"]["label"]["grid"]  # other folds


@pytest.mark.parametrize("name", ["svm-rbf", "logreg", "knn", "ridge"])
def test_every_cheap_classifier_trains_and_round_trips(name, digits_split, tmp_path):
    model = train(digits_split[0].subset(slice(0, 150)), name, cv=2)
    model.save(tmp_path / "m.skops")
    back = TrainedClassifier.load(tmp_path / "m.skops")
    test = digits_split[1]
    np.testing.assert_array_equal(back.predict(test)["label"], model.predict(test)["label"])
    assert back.evaluate(test)["label"]["accuracy"] > 0.6


#: The reference: the two heavier classifiers built in scikit-learn directly, with the settings
#: embedkit.classify gives them (100 trees; one hidden layer of 256 units, L-BFGS, 500 iterations)
SCIKIT_LEARN = {
    "random-forest": lambda **params: RandomForestClassifier(n_estimators=100, **params),
    "mlp": lambda **params: MLPClassifier(hidden_layer_sizes=(256,), solver="lbfgs",
                                          max_iter=500, **params),
}


@pytest.mark.parametrize("name", sorted(SCIKIT_LEARN))
def test_forest_and_mlp_equal_scikit_learn_run_directly(name, digits_split, tmp_path):
    """The random-forest and mlp heads are scikit-learn's estimators with the same parameters
    and seed: the recorded cross-validated score is what scikit-learn's own `cross_val_score`
    gives for the chosen parameters on the same folds, predictions and probabilities equal a
    pipeline refitted directly, `evaluate` reports that pipeline's accuracy, and the saved head
    loads back (its tree and network types are on the allow-list) predicting the same."""
    three = [es.subset(np.isin(es.labels, ["0", "1", "2"])) for es in digits_split]
    train_set, test, seed = three[0].subset(slice(0, 60)), three[1], 7
    model = train(train_set, name, cv=2, seed=seed)
    chosen = model.info["tasks"]["label"]
    reference = make_pipeline(StandardScaler(),
                              SCIKIT_LEARN[name](random_state=seed, **chosen["best_params"]))
    folds = StratifiedKFold(2, shuffle=True, random_state=seed)
    score = cross_val_score(reference, train_set.vectors, train_set.labels, cv=folds,
                            scoring="balanced_accuracy").mean()
    assert chosen["cv_score"] == pytest.approx(score, abs=1e-12)
    expected = reference.fit(train_set.vectors, train_set.labels).predict(test.vectors)
    np.testing.assert_array_equal(model.predict(test)["label"], expected)
    np.testing.assert_allclose(model.heads["label"].predict_proba(test.vectors),
                               reference.predict_proba(test.vectors), rtol=0, atol=1e-12)
    assert model.evaluate(test)["label"]["accuracy"] == pytest.approx(
        accuracy_score(test.labels, expected), abs=1e-12)
    model.save(tmp_path / "m.skops")
    np.testing.assert_array_equal(TrainedClassifier.load(tmp_path / "m.skops").predict(test)[
        "label"], expected)


def test_a_class_with_too_few_examples_is_refused_by_name(digits_split):
    es = digits_split[0]
    y = es.labels.copy()
    keep = np.flatnonzero(y != "7")
    rare = np.flatnonzero(y == "7")[:2]
    small = es.subset(np.sort(np.concatenate([keep, rare])))
    with pytest.raises(UsageError, match=r"class '7' has only 2 example\(s\); --cv 3"):
        train(small, "svm-linear", cv=3)
    with pytest.raises(UsageError, match="class '7' has only 1"):
        train(es.subset(np.sort(np.concatenate([keep, rare[:1]]))), "svm-linear", cv=2,
              holdout=0.5)
    train(small, "svm-linear", cv=2)  # two folds can stratify two examples


def test_options_that_do_not_fit_the_classifier_are_refused(digits_split):
    for name in ("knn", "mlp"):
        with pytest.raises(UsageError, match="--resample"):
            build_pipeline(name, class_weight="balanced")
    with pytest.raises(UsageError, match="unknown classifier"):
        build_pipeline("svm-quantum")
    with pytest.raises(UsageError, match="--cv must be at least 2"):
        train(digits_split[0], cv=1)
    with pytest.raises(UsageError, match="no label column 'colour'"):
        train(digits_split[0], tasks=["colour"])


def test_holdout_reports_metrics_the_saved_head_never_trained_on(digits_split):
    model = train(digits_split[0], "logreg", cv=3, holdout=0.3, seed=1)
    rec = model.info["tasks"]["label"]
    assert rec["holdout"]["n"] == 150 and sum(rec["train_counts"].values()) == 350
    assert 0.8 < rec["holdout"]["accuracy"] <= 1.0


# -- imbalance -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imbalanced():
    """Digit 9 (150 training images) against digit 3 (12): the minority is hard to see."""
    t = load_digits().target
    nines, threes = np.flatnonzero(t == 9), np.flatnonzero(t == 3)
    tr = np.concatenate([nines[:150], threes[:12]])
    te = np.concatenate([nines[150:], threes[100:]])
    name = lambda rows: np.where(t[rows] == 3, "three", "nine")  # noqa: E731
    return pixels(tr, name(tr)), pixels(te, name(te))


def _minority(report):
    return next(c["recall"] for c in report["per_class"] if c["class"] == "three")


def test_balancing_raises_minority_recall_and_balanced_accuracy(imbalanced):
    es, test = imbalanced
    plain = train(es, "logreg", cv=3).evaluate(test)["label"]
    for option in ({"class_weight": "balanced"}, {"resample": "over"}, {"resample": "under"}):
        balanced = train(es, "logreg", cv=3, **option).evaluate(test)["label"]
        assert _minority(balanced) > _minority(plain) + 0.2, option
        assert balanced["balanced_accuracy"] > plain["balanced_accuracy"] + 0.1, option


def test_resample_rows_equalises_counts():
    y = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 5)
    over = resample_rows(y, "over", seed=0)
    under = resample_rows(y, "under", seed=0)
    assert dict(zip(*np.unique(y[over], return_counts=True))) == {"a": 10, "b": 10, "c": 10}
    assert dict(zip(*np.unique(y[under], return_counts=True))) == {"a": 3, "b": 3, "c": 3}
    assert set(over) == set(range(18))  # oversampling keeps every original row
    assert len(set(under)) == 9


class Recorder:
    """A classifier that remembers the rows it was fitted on (first column = row id)."""

    def __init__(self):
        pass

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self

    def fit(self, X, y):
        self.seen_ = X[:, 0].astype(int)
        self.seen_y_ = np.asarray(y)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_oversampling_happens_inside_training_folds_only(imbalanced):
    es, _ = imbalanced
    y = es.labels
    rows = np.arange(len(y), dtype=float)[:, None]
    splits = fold_splits(y, 3, seed=0)
    result = cross_validate(Resampled(Recorder(), "over", random_state=0), rows, y, cv=splits,
                            return_estimator=True)
    for (train_rows, valid_rows), fitted in zip(splits, result["estimator"]):
        seen = fitted.estimator_.seen_
        assert set(seen) <= set(train_rows)  # nothing from the validation fold
        assert not set(seen) & set(valid_rows)
        assert set(seen) == set(train_rows)  # and every training row
        counts = np.unique(fitted.estimator_.seen_y_, return_counts=True)[1]
        assert counts[0] == counts[1] == np.sum(y[train_rows] == "nine")  # balanced up
        assert fitted.fit_counts_ == {"nine": counts[0], "three": counts[0]}
    # the trained model records the real counts, its final head the resampled ones
    model = train(es, "svm-linear", cv=3, resample="over")
    assert model.info["tasks"]["label"]["train_counts"] == {"nine": 150, "three": 12}
    assert model.heads["label"].named_steps["clf"].fit_counts_ == {"nine": 150, "three": 150}


# -- multi-task ----------------------------------------------------------------------------

def test_multi_task_heads_equal_separate_training(digits_split):
    es, test = digits_split[0].subset(slice(0, 300)), digits_split[1]
    parity = lambda s: np.asarray(["even" if int(v) % 2 == 0 else "odd" for v in s.labels])  # noqa
    both = EmbeddingSet(es.ids, es.vectors, {"digit": es.labels, "parity": parity(es)}, es.meta)
    model = train(both, "logreg", cv=3)
    assert model.tasks == ["digit", "parity"]
    assert model.info["tasks"]["parity"]["classes"] == ["even", "odd"]
    alone = train(EmbeddingSet(es.ids, es.vectors, {"parity": parity(es)}, es.meta), "logreg",
                  cv=3)
    np.testing.assert_allclose(model.heads["parity"].predict_proba(test.vectors),
                               alone.heads["parity"].predict_proba(test.vectors))
    labelled = EmbeddingSet(test.ids, test.vectors, {"digit": test.labels, "parity": parity(test)},
                            test.meta)
    reports = model.evaluate(labelled)
    assert set(reports) == {"digit", "parity"}
    assert reports["parity"]["accuracy"] > 0.8 and reports["digit"]["accuracy"] > 0.8
    rows = model.predictions(labelled)
    assert {"digit", "parity", "p(parity=odd)", "p(digit=3)"} <= set(rows[0])


def test_multi_task_from_a_manifest_with_two_label_columns(digits_small, tmp_path):
    from embedkit.classify import training_features

    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "digit", "loop"])
        for image in sorted(digits_small.rglob("*.png")):
            digit = image.parent.name
            w.writerow([str(image), digit, "yes" if digit in "689" else "no"])
    features, extra = training_features(manifest, "efficientnet_lite0", progress=False)
    assert list(features.label_columns) == ["digit", "loop"] and extra == []
    model = train(features, "logreg", cv=2)
    assert model.tasks == ["digit", "loop"]
    assert model.info["tasks"]["loop"]["train_counts"] == {"no": 8, "yes": 12}
    reports = model.evaluate(model.embed(manifest, progress=False))
    assert reports["loop"]["n"] == 20 and reports["digit"]["n"] == 20
    single = train(features, "logreg", cv=2, tasks=["loop"])
    assert single.tasks == ["loop"]


# -- artifacts -----------------------------------------------------------------------------

def test_artifact_round_trip_keeps_predictions_and_recipe(trained_svm, digits_split, tmp_path):
    path = trained_svm.save(tmp_path / "svm.skops")
    back = TrainedClassifier.load(path)
    test = digits_split[1]
    np.testing.assert_array_equal(back.predict(test)["label"], trained_svm.predict(test)["label"])
    np.testing.assert_allclose(back.heads["label"].decision_function(test.vectors),
                               trained_svm.heads["label"].decision_function(test.vectors))
    assert back.features["fingerprint"] == "digits-pixels-8x8"
    assert back.info["tasks"]["label"]["best_params"] == \
        trained_svm.info["tasks"]["label"]["best_params"]


def test_resampled_head_round_trips_through_the_allow_list(imbalanced, tmp_path):
    model = train(imbalanced[0], "knn", cv=3, resample="under")
    back = TrainedClassifier.load(model.save(tmp_path / "knn.skops"))
    np.testing.assert_array_equal(back.predict(imbalanced[1])["label"],
                                  model.predict(imbalanced[1])["label"])


def _retarget(node, cls, target):
    """The skops schema with every `cls` node pointing at another (module, class)."""
    if isinstance(node, dict):
        node = {k: _retarget(v, cls, target) for k, v in node.items()}
        if node.get("__class__") == cls:
            node["__module__"], node["__class__"] = target
    elif isinstance(node, list):
        node = [_retarget(v, cls, target) for v in node]
    return node


def test_foreign_and_tampered_files_are_refused(trained_svm, tmp_path):
    import skops.io as sio
    from sklearn.svm import SVC

    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"definitely not a zip file")
    with pytest.raises(ArtifactError, match="not a skops model file"):
        TrainedClassifier.load(junk)

    other = tmp_path / "other.skops"
    sio.dump(SVC(), other)  # a valid skops file, from someone else
    with pytest.raises(ArtifactError, match="not an embedkit classifier"):
        load_artifact(other)

    good = trained_svm.save(tmp_path / "good.skops")
    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry)
            if entry.filename == "schema.json":
                data = json.dumps(_retarget(json.loads(data), "StandardScaler",
                                            ("os", "system"))).encode()
                assert b'"os"' in data
            dst.writestr(entry, data)
    with pytest.raises(ArtifactError, match=r"os\.system"):
        TrainedClassifier.load(tampered)

    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ArtifactError):
        TrainedClassifier.load(truncated)


# -- backbones -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_digits(digits_small):
    from embedkit.extract import extract

    return extract(digits_small, "efficientnet_lite0", progress=False)


def test_features_from_another_backbone_are_refused_by_name(lite0_digits, digits_small):
    from embedkit.extract import extract

    model = train(lite0_digits, "svm-linear", cv=2)
    other = extract(digits_small, "efficientnet_lite0", layer="blocks.5", progress=False)
    with pytest.raises(BackboneMismatch) as err:
        model.predict(other)
    message = str(err.value)
    assert "layer blocks.5" in message and "layer pre_logits" in message
    assert other.meta["fingerprint"][:12] in message
    assert lite0_digits.meta["fingerprint"][:12] in message
    with pytest.raises(BackboneMismatch, match="efficientnet_lite0"):
        model.evaluate(pixels(range(20), np.asarray(lite0_digits.labels)))
    # raw inputs go through the recorded backbone and come out as the training features
    again = model.embed(digits_small, progress=False)
    np.testing.assert_array_equal(again.vectors, lite0_digits.vectors)


def test_a_recorded_backbone_that_builds_differently_here_is_refused(lite0_digits, digits_small):
    model = train(lite0_digits, "svm-linear", cv=2)
    model.features["fingerprint"] = "0123456789abcdef"  # as if trained with other weights
    with pytest.raises(BackboneMismatch, match="0123456789ab"):
        model.embed(digits_small, progress=False)


# -- command line --------------------------------------------------------------------------

def test_cli_train_evaluate_predict_round_trip(tmp_path):
    from embedkit.cli.main import cli

    runner = CliRunner()
    data = tmp_path / "digits"
    assert runner.invoke(cli, ["datasets", "export", "digits-target", str(data),
                               "--per-class", "6"]).exit_code == 0
    model = tmp_path / "m.skops"
    result = runner.invoke(cli, ["train", str(data), "--classifier", "logreg", "-o", str(model),
                                 "--cv", "3", "--seed", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert "best C=" in result.output and "saved logreg on efficientnet_lite0" in result.output

    result = runner.invoke(cli, ["evaluate", str(model), str(data), "--json", "--confusion",
                                 str(tmp_path / "cm.png"), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["tasks"]["label"]
    assert report["n"] == 30 and report["labels"] == ["5", "6", "7", "8", "9"]
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    preds = tmp_path / "preds.csv"
    result = runner.invoke(cli, ["predict", str(model), str(data), "-o", str(preds), "-q"])
    assert result.exit_code == 0, result.output
    with open(preds) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and set(rows[0]) == {"id", "label", *(f"p(label={d})" for d in
                                                                  "56789")}
    accuracy = np.mean([r["label"] == r["id"].split("/")[0] for r in rows])
    assert accuracy == pytest.approx(report["accuracy"])
    for r in rows:
        assert sum(float(r[f"p(label={d})"]) for d in "56789") == pytest.approx(1, abs=1e-4)

    one = next(data.rglob("*.png"))
    result = runner.invoke(cli, ["predict", str(model), str(one), "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["label"] in "56789"

    plot = tmp_path / "map.png"
    result = runner.invoke(cli, ["plot", str(data), "-o", str(plot), "--method", "pca", "-q"])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:4] == b"\x89PNG"

    junk = tmp_path / "junk.skops"
    junk.write_text("hello")
    result = runner.invoke(cli, ["evaluate", str(junk), str(data)])
    assert_one_line_error(result, 5, str(junk))

    # digits 0-4 against a 5-9 model: every item is an error, and it is said (before: silent)
    assert "unseen_note" not in report
    other = tmp_path / "other"
    runner.invoke(cli, ["datasets", "export", "digits-source", str(other), "--per-class", "2"])
    result = runner.invoke(cli, ["evaluate", str(model), str(other), "-q"])
    assert result.exit_code == 0, result.output
    assert ("note: 10 of 10 items carry labels the model was never trained on (0, 1, 2, 3, 4); "
            "they count as errors; is this the data the model was trained for?") in result.stderr
