"""Saved approximate indexes: `embedkit index build` writes a faiss index (write_index) with a
sidecar naming the set it indexes; `similar --index FILE` answers from it (read_index) exactly as
the in-memory index built with the same parameters does, and refuses any other set.  The vectors
are scikit-learn's digits (1,797 real 64-pixel images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from embedkit.cli.main import cli
from embedkit.embeddings import EmbeddingSet
from embedkit.errors import BadInputError, NotFoundError, UsageError
from embedkit.query_resolution import save_index, saved_index
from embedkit.vector_search import RECALL_QUERIES, NeighborIndex, sidecar_path
from embedkit.vector_space import VectorSpace
import brute_force
from one_line_error import assert_one_line_error


@pytest.fixture(scope="module")
def digits_set():
    d = load_digits()
    return EmbeddingSet([f"d{i}" for i in range(len(d.data))], d.data,
                        {"digit": d.target.astype(str)})


@pytest.mark.parametrize("kind,params", [("ivf", {"nlist": 16, "nprobe": 2}),
                                         ("hnsw", {"hnsw_m": 16, "ef_search": 32})])
def test_saved_index_answers_as_the_in_memory_one(tmp_path, digits_set, kind, params):
    path = tmp_path / f"digits.{kind}.faiss"
    built, recall = save_index(digits_set, kind, path, **params)
    space = VectorSpace.from_embeddings(digits_set)
    # measure_recall's documented sample: RECALL_QUERIES of the rows, drawn with seed 0
    n = len(space.unit)
    rows = np.random.default_rng(0).choice(n, min(RECALL_QUERIES, n), replace=False)
    assert recall == pytest.approx(brute_force.recall(built, space.unit, rows), abs=1e-12)
    assert recall < 1.0 or kind == "hnsw", "nprobe 2 of 16 cells misses some true neighbours"

    loaded = saved_index(path, digits_set)
    fresh = NeighborIndex(kind, **params).fit(space.unit)  # same parameters, built here
    queries = space.unit[::37]
    for other in (built, fresh):
        scores, rows = other.search(queries, 10)
        got_scores, got_rows = loaded.search(queries, 10)
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_allclose(got_scores, scores, rtol=1e-6)
    in_memory = space.most_similar("d5", topn=10, index=kind, **params)
    assert VectorSpace.from_embeddings(digits_set).most_similar("d5", index=loaded) == in_memory


def test_index_build_and_similar_from_the_command_line(tmp_path, digits_set):
    feats = digits_set.save(tmp_path / "digits.parquet")
    out = tmp_path / "digits.faiss"
    built = CliRunner().invoke(cli, ["index", "build", str(feats), "--index", "ivf", "--nlist",
                                     "16", "--nprobe", "2", "-o", str(out), "--json"])
    assert built.exit_code == 0, built.output
    report = json.loads(built.output)
    assert report["rows"] == len(digits_set) and 0 < report["recall_at_10"] <= 1
    assert json.loads(sidecar_path(out).read_text())["about"]["recall_at_10"] == \
        report["recall_at_10"]

    def similar(index):
        got = CliRunner().invoke(cli, ["similar", "d5", "-e", str(feats), "-k", "5",
                                       "--index", index, "--json"])
        assert got.exit_code == 0, got.output
        return json.loads(got.output)["neighbors"]

    space = VectorSpace.from_embeddings(digits_set)
    expected = space.most_similar("d5", topn=5, index="ivf", nlist=16, nprobe=2)
    assert [(n["key"], n["cosine"]) for n in similar(str(out))] == \
        [(n.key, round(n.score, 4)) for n in expected]


def test_an_index_of_another_set_is_refused(tmp_path, digits_set):
    path = tmp_path / "digits.faiss"
    save_index(digits_set, "hnsw", path)
    changed = EmbeddingSet(digits_set.ids, digits_set.vectors.copy())
    changed.vectors[7, 3] += 1.0  # one value differs: same size, other vectors
    renamed = EmbeddingSet([f"x{i}" for i in range(len(digits_set))], digits_set.vectors)
    for other in (changed, renamed, digits_set.subset(slice(0, 100))):
        with pytest.raises(UsageError, match="built from another set"):
            saved_index(path, other)

    feats = renamed.save(tmp_path / "renamed.parquet")
    refused = CliRunner().invoke(cli, ["similar", "x5", "-e", str(feats), "--index", str(path)])
    assert_one_line_error(refused, 2, "embedkit index build")


def test_broken_or_incomplete_index_files_are_refused(tmp_path, digits_set):
    path = tmp_path / "digits.faiss"
    save_index(digits_set, "ivf", path, nlist=8)
    about = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**about, "ntotal": 5}))
    with pytest.raises(BadInputError, match="holds 1797 x 64 vectors but its sidecar says 5"):
        NeighborIndex.load(path)
    sidecar_path(path).unlink()
    with pytest.raises(NotFoundError, match="digits.faiss.json: missing"):
        NeighborIndex.load(path)
    (tmp_path / "junk.faiss").write_bytes(b"junk")
    sidecar_path(tmp_path / "junk.faiss").write_text(json.dumps(about))
    with pytest.raises(BadInputError, match="sha256 differs"):
        NeighborIndex.load(tmp_path / "junk.faiss")
    with pytest.raises(UsageError, match="exact index"):
        NeighborIndex("exact").fit(digits_set.vectors).save(tmp_path / "exact.faiss")
