"""A classifier artifact carries the checksum of what was written, like every artifact embedkit
reads back: edited inside the allowed types (other coefficients, another class list), stripped
of its checksum, or given a second copy of a member, it is refused in one line (exit 5) before
anything is loaded; an untouched one predicts as before."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.artifacts import CHECKSUM_MEMBER
from embedkit.classify import TrainedClassifier, train
from embedkit.cli.main import cli
from embedkit.embeddings import EmbeddingSet
from embedkit.errors import ArtifactError
from one_line_error import assert_one_line_error


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog", "eel"] * 12)
    centre = {"cat": 0.0, "dog": 3.0, "eel": 6.0}
    vectors = (rng.normal(size=(36, 8)) + [[centre[c]] for c in labels]).astype(np.float32)
    es = EmbeddingSet([f"x{i}" for i in range(36)], vectors, label_columns={"label": labels})
    return es.save(tmp_path_factory.mktemp("feats") / "feats.parquet")


@pytest.fixture(scope="module")
def model_file(features, tmp_path_factory):
    from embedkit.embeddings import load_embeddings

    model = train(load_embeddings(features), "logreg", cv=3, seed=0)
    return model.save(tmp_path_factory.mktemp("model") / "model.skops")


def rewrite(src, dst, change=None, drop=(), extra=()):
    """A copy of the archive `src` with members changed (name -> bytes -> bytes), dropped, or
    added (name, bytes) again."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for entry in a.infolist():
            if entry.filename in drop:
                continue
            data = a.read(entry)
            if change and entry.filename in change:
                data = change[entry.filename](data)
            b.writestr(entry, data)
        for name, data in extra:
            b.writestr(name, data)
    return dst


def edited_arrays(src):
    """Every float array in the archive with its sign flipped: still only allowed types."""
    with zipfile.ZipFile(src) as a:
        names = [n for n in a.namelist() if n.endswith(".npy")]

    def flip(data):
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype.kind != "f":
            return data
        out = io.BytesIO()
        np.save(out, -arr)
        return out.getvalue()
    return {n: flip for n in names}


def predict(model, feats):
    return CliRunner().invoke(cli, ["evaluate", str(model), str(feats)])


def test_an_untouched_artifact_predicts(model_file, features):
    result = predict(model_file, features)
    assert result.exit_code == 0, result.output
    assert isinstance(TrainedClassifier.load(model_file), TrainedClassifier)


def test_coefficients_edited_within_the_allowed_types_are_refused(model_file, features,
                                                                  tmp_path):
    tampered = rewrite(model_file, tmp_path / "edited.skops", change=edited_arrays(model_file))
    assert_one_line_error(predict(tampered, features), 5, "checksum it was saved with differs")


def test_a_class_list_edited_in_the_schema_is_refused(model_file, features, tmp_path):
    swap = {"schema.json": lambda d: d.replace(b'"cat"', b'"dog"', 1)}
    with zipfile.ZipFile(model_file) as a:
        assert b'"cat"' in a.read("schema.json")
    tampered = rewrite(model_file, tmp_path / "classes.skops", change=swap)
    with pytest.raises(ArtifactError, match="checksum it was saved with differs"):
        TrainedClassifier.load(tampered)


def test_an_artifact_without_its_checksum_is_refused(model_file, features, tmp_path):
    stripped = rewrite(model_file, tmp_path / "stripped.skops", drop=(CHECKSUM_MEMBER,))
    assert_one_line_error(predict(stripped, features), 5, "holds no checksum")


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, about the copy we add
def test_a_second_copy_of_a_member_is_refused(model_file, tmp_path):
    with zipfile.ZipFile(model_file) as a:
        schema = json.loads(a.read("schema.json"))
    doubled = rewrite(model_file, tmp_path / "doubled.skops",
                      extra=[("schema.json", json.dumps(schema).encode())])
    with pytest.raises(ArtifactError, match="checksum it was saved with differs"):
        TrainedClassifier.load(doubled)
