"""The record schemas (embedkit.schema) refuse in words, never with an exception of their own,
whatever JSON a damaged record holds; and what embedkit saves, it reads back."""

from __future__ import annotations

import numpy as np
import pytest

from embedkit import schema
from embedkit.embeddings import EmbeddingSet
from embedkit.query_resolution import save_index, saved_index

FIELDS = {"n": schema.integer(1), "recall": schema.fraction(), "loss": schema.NUMBER,
          "name": schema.text(optional=True), "sha": schema.SHA256,
          "nested": {"kind": schema.one_of("ivf", "hnsw")}}
GOOD = {"n": 3, "recall": 0.5, "loss": 1e300, "name": None, "sha": "0" * 64,
        "nested": {"kind": "ivf"}}


def test_a_record_that_follows_its_schema_passes():
    assert schema.misfit(GOOD, FIELDS) is None


@pytest.mark.parametrize("edit,named", [
    ({"recall": 10 ** 400}, "'recall'"),  # math.isfinite overflowed on this
    ({"loss": 10 ** 400}, None),  # a whole number is finite however large
    ({"loss": float("nan")}, "'loss'"),
    ({"n": True}, "'n'"),
    ({"name": ""}, "'name'"),
    ({"sha": "0" * 63 + "G"}, "'sha'"),
    ({"nested": []}, "'nested'"),
    ({"nested": {"kind": "exact"}}, "'nested.kind'"),
    ({"extra": 1}, "unknown field 'extra'"),
])
def test_a_record_that_does_not_is_refused_in_words(edit, named):
    problem = schema.misfit({**GOOD, **edit}, FIELDS)
    assert (problem is None) if named is None else (named in problem)


@pytest.mark.parametrize("meta", [{"model": ""}, {"model": 3, "fingerprint": {"a": 1}}, {}])
def test_a_saved_index_reads_back_whatever_its_set_says_of_itself(tmp_path, meta):
    vectors = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    es = EmbeddingSet([f"r{i}" for i in range(60)], vectors, meta=meta)
    save_index(es, "hnsw", tmp_path / "a.faiss")
    assert saved_index(tmp_path / "a.faiss", es).ntotal_ == 60
