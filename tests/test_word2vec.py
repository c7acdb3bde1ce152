"""word2vec training on a bundled gensim corpus, and the trained .kv used as a backbone."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from gensim.test.utils import datapath

import embedkit
from embedkit.cli.main import cli
from embedkit.errors import BadInputError, UsageError
from embedkit.registry import create_backbone
from embedkit.text import tokenize, word_probabilities
from embedkit.vector_space import as_space
from embedkit.wordvectors import load_vectors, train_word2vec

CORPUS = datapath("lee_background.cor")  # 300 news documents, one per line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("w2v") / "lee.kv"
    kv = train_word2vec(CORPUS, out, dim=24, window=5, min_count=3, epochs=3, workers=1,
                        progress=False)
    return out, kv


def test_vocabulary_and_counts_come_from_the_stated_tokeniser(trained):
    out, kv = trained
    counts = Counter(tok for line in open(CORPUS, encoding="utf-8") for tok in tokenize(line))
    expected = {w for w, n in counts.items() if n >= 3}
    assert set(kv.index_to_key) == expected
    assert all(kv.get_vecattr(w, "count") == counts[w] for w in ("the", "fire", "australia"))
    assert kv.vector_size == 24
    assert word_probabilities(kv)[1] == "counts"  # SIF uses the real counts


def test_trained_vectors_load_memory_mapped(trained):
    out, kv = trained
    loaded = load_vectors(out)
    assert isinstance(loaded.vectors, np.memmap)
    assert loaded.index_to_key == kv.index_to_key
    np.testing.assert_array_equal(loaded.vectors, kv.vectors)
    assert loaded.get_vecattr("the", "count") == kv.get_vecattr("the", "count")


def test_trained_kv_works_as_a_model_for_extract_and_similar(trained, store):
    out, kv = trained
    texts = ["The fire spread towards the town.", "Police said the man was arrested.",
             "zzzqqq"]
    result = embedkit.extract(texts, str(out), cache=store, progress=False)
    assert result.vectors.shape == (2, 24) and result.meta["model"] == str(out)
    assert result.summary.skipped[0][0] == "2"
    ids = [kv.key_to_index[t] for t in tokenize(texts[0]) if t in kv.key_to_index]
    np.testing.assert_allclose(result.vectors[0], kv.vectors[ids].mean(axis=0), rtol=1e-5,
                               atol=1e-6)
    again = embedkit.extract(texts[:2], str(out), cache=store, progress=False)
    assert again.summary.cache_hits == 2
    assert create_backbone(str(out), pool="sif").report() == []  # nothing embedded yet

    cli_out = CliRunner().invoke(cli, ["similar", "fire", "--model", str(out), "-k", "5",
                                       "--json"], catch_exceptions=False)
    got = [n["key"] for n in json.loads(cli_out.stdout)["neighbors"]]
    assert got == [k for k, _ in kv.most_similar("fire", topn=5)]
    assert got == [k for k, _ in as_space(kv).most_similar("fire", topn=5)]


def test_word2vec_train_cli(tmp_path):
    out = tmp_path / "cbow.kv"
    result = CliRunner().invoke(cli, ["word2vec", "train", CORPUS, "-o", str(out), "--cbow",
                                      "--dim", "16", "--epochs", "1", "--min-count", "5",
                                      "--workers", "1", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "x 16 (CBOW)" in result.stdout and out.is_file()
    assert load_vectors(out).vector_size == 16


def test_training_errors_are_explained(tmp_path):
    with pytest.raises(BadInputError, match="no word occurs at least"):
        train_word2vec(CORPUS, tmp_path / "x.kv", min_count=10**9, progress=False)
    with pytest.raises(UsageError, match="must be a .kv"):
        train_word2vec(CORPUS, tmp_path / "x.bin", progress=False)
    with pytest.raises(UsageError, match="dim must be at least 1"):
        train_word2vec(CORPUS, tmp_path / "x.kv", dim=0, progress=False)
