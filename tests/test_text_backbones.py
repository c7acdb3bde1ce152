"""Text backbones: word-vector formats, the tokeniser, mean / SIF pooling, the OOV policy, text
extraction through the store, and the bundled sentence model."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

import embedkit
from embedkit.inputs import Item
from embedkit.errors import BadWeights, MissingExtra, NotFoundError, UsageError
from embedkit.registry import create_backbone, default_model
from embedkit.text import TextPooler, tokenize, word_probabilities
from embedkit.wordvectors import keyed_vectors, load_glove, load_vectors, save_vectors


@pytest.fixture(scope="module")
def glove():
    return load_glove()  # memory-mapped, memoised for the whole session


# -- formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("filename, reference", [
    ("high_precision.kv.txt", lambda p: KeyedVectors.load_word2vec_format(p)),
    ("crime-and-punishment.vec", lambda p: KeyedVectors.load_word2vec_format(p)),
    ("euclidean_vectors.bin", lambda p: KeyedVectors.load_word2vec_format(p, binary=True)),
    ("test_glove.txt", lambda p: KeyedVectors.load_word2vec_format(p, no_header=True)),
    ("lee_fasttext.vec", lambda p: KeyedVectors.load_word2vec_format(p)),
])
def test_text_and_binary_formats_match_gensim(filename, reference):
    path = datapath(filename)
    ours, ref = load_vectors(path), reference(path)
    assert ours.index_to_key == ref.index_to_key
    np.testing.assert_array_equal(ours.vectors, ref.vectors)
    limited = load_vectors(path, limit=2)
    assert limited.index_to_key == ref.index_to_key[:2]


@pytest.mark.parametrize("filename", ["lee_fasttext_new.bin", "lee_fasttext.bin"])
def test_fasttext_bin_new_and_old_formats(filename):
    from gensim.models.fasttext import load_facebook_vectors

    path = datapath(filename)
    ours, ref = load_vectors(path), load_facebook_vectors(path)
    assert ours.index_to_key == ref.index_to_key
    np.testing.assert_allclose(ours["night"], ref["night"])
    with pytest.raises(UsageError, match="limit does not apply"):
        load_vectors(path, limit=5)


def test_kv_loads_memory_mapped_and_limit_keeps_the_most_frequent(tmp_path):
    src = KeyedVectors.load_word2vec_format(datapath("crime-and-punishment.vec"))
    path = save_vectors(src, tmp_path / "cp.kv")
    assert (tmp_path / "cp.kv.vectors.npy").is_file()
    kv = load_vectors(path)
    assert isinstance(kv.vectors, np.memmap)
    np.testing.assert_array_equal(kv.vectors, src.vectors)
    small = load_vectors(path, limit=7)
    assert small.index_to_key == src.index_to_key[:7]
    assert isinstance(small.vectors, np.memmap)  # a view, not a copy


def test_kv_unpickler_refuses_anything_but_keyed_vectors(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.kv"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(BadWeights, match="refusing to unpickle posix.system"):
        load_vectors(path)
    assert not (tmp_path / "pwned").exists()


def test_vectors_path_is_a_backbone_and_unknown_format_is_explained(tmp_path):
    kv = KeyedVectors.load_word2vec_format(datapath("test_glove.txt"), no_header=True)
    path = save_vectors(kv, tmp_path / "small.kv")
    backbone = create_backbone(str(path))
    assert backbone.modality == "text" and backbone.dim == 50
    with pytest.raises(NotFoundError, match="no such vectors file"):
        create_backbone(str(tmp_path / "missing.kv"))
    (tmp_path / "vectors.dat").write_text("x")
    with pytest.raises(UsageError, match="unknown vectors format"):
        load_vectors(tmp_path / "vectors.dat")


# -- the bundled GloVe ------------------------------------------------------------------------

def test_glove_is_the_default_text_backbone(glove, tmp_path):
    assert default_model("text") == "glove-6b-50d"
    assert len(glove.index_to_key) == 400_000 and glove.vector_size == 50
    assert glove.index_to_key[:3] == ["the", ",", "."]  # frequency order
    assert isinstance(glove.vectors, np.memmap)
    backbone = create_backbone("glove-6b-50d")
    assert backbone.source.available and backbone.dim == 50
    assert create_backbone("glove-6b-50d", limit=1000).keyed_vectors.index_to_key == \
        glove.index_to_key[:1000]
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="no --weights"):
        create_backbone("glove-6b-50d", weights=str(tmp_path / "x.pt"))


# -- tokeniser and pooling ----------------------------------------------------------------------

def test_tokeniser_rules():
    assert tokenize("Don't stop the King's e-mail: 3.5 times, 1,000 people!") == \
        ["do", "n't", "stop", "the", "king", "'s", "e-mail", "3.5", "times", "1,000", "people"]
    assert tokenize("They\u2019re O'Neill's") == ["they", "'re", "o'neill", "'s"]
    assert tokenize("...!?") == []


def test_mean_pooling_is_the_average_of_the_word_vectors(glove):
    backbone = create_backbone("glove-6b-50d")
    text = "The frog jumped over the baseball-playing quokka"
    ids = backbone.preprocess(Item("0", text=text))
    vec = backbone.embed(backbone.collate([ids]))[0]
    # independent reference: float64 mean of gensim lookups, compound split into its parts
    words = ["the", "frog", "jumped", "over", "the", "baseball", "playing", "quokka"]
    expected = np.mean([glove[w].astype(np.float64) for w in words if w in glove], axis=0)
    np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-6)


def test_sif_follows_the_paper(glove):
    from sklearn.decomposition import TruncatedSVD

    backbone = create_backbone("glove-6b-50d", pool="sif")
    texts = ["the cat sat on the mat", "stocks fell sharply in early trading",
             "a truly wonderful and moving film"]
    tokens = [backbone.preprocess(Item(str(i), text=t)) for i, t in enumerate(texts)]
    batch = backbone.embed(tokens)
    alone = backbone.embed([tokens[1]])[0]
    ids = [t.ids for t in tokens]
    np.testing.assert_allclose(alone, batch[1], rtol=1e-6)  # independent of the batch
    pooler = backbone.pooler
    p, source = word_probabilities(glove)
    assert source == "zipf" and np.isclose(p.sum(), 1.0) and (np.diff(p) < 0).all()
    # by hand: weighted average a/(a + p(w)), minus its projection on u
    a = 1e-3
    w = a / (a + p[ids[0]])
    avg = (w[:, None] * glove.vectors[ids[0]].astype(np.float64)).sum(0) / len(ids[0])
    u = pooler.component
    np.testing.assert_allclose(batch[0], avg - u * (u @ avg), rtol=1e-4, atol=1e-6)
    assert abs(u @ batch[0]) < 1e-4
    # u is the first singular vector of the reference corpus' weighted averages (Arora's code)
    with open(backbone.sif_reference, encoding="utf-8") as f:
        rows = np.stack([pooler.weighted_average(backbone._ids(line)[0]) for line in f
                         if line.strip()])
    svd = TruncatedSVD(n_components=1, n_iter=7, random_state=0).fit(rows)
    assert abs(svd.components_[0] @ u) > 0.999
    assert "Zipf" in " ".join(backbone.report())


def test_sif_uses_real_counts_when_the_vectors_have_them():
    kv = keyed_vectors(["a", "b", "c"], np.eye(3, dtype=np.float32))
    kv.set_vecattr("a", "count", 6)
    kv.set_vecattr("b", "count", 3)
    kv.set_vecattr("c", "count", 1)
    p, source = word_probabilities(kv)
    assert source == "counts" and np.allclose(p, [0.6, 0.3, 0.1])
    faked = KeyedVectors.load_word2vec_format(datapath("test_glove.txt"), no_header=True)
    assert word_probabilities(faked)[1] == "zipf"  # gensim's invented N..1 counts are ignored
    with pytest.raises(UsageError):
        TextPooler(kv.vectors, "median")


# -- OOV policy and extraction through the store -------------------------------------------------

def test_all_oov_text_is_skipped_with_its_reason_never_a_zero_vector(store):
    texts = ["the frog sings", "xqzvy blorptastic", "frogs sing quietly"]
    result = embedkit.extract(texts, "glove-6b-50d", cache=store, progress=False)
    assert result.ids == ["0", "2"]
    (ident, reason), = result.summary.skipped
    assert ident == "1" and "all 2 tokens out of vocabulary" in reason and "xqzvy" in reason
    notes = " ".join(result.summary.notes)
    assert "OOV: 25.0% of 8 tokens" in notes and "1 text fully out of vocabulary" in notes
    assert np.all(np.linalg.norm(result.vectors, axis=1) > 0)


def test_report_states_from_other_processes_add_up_to_one_report():
    """What `--engine ray` does with the model actors' OOV counts: texts accepted by two
    backbones, merged into a third, report as if one backbone had accepted them all."""
    texts = ["the frog sings", "xqzvy blorptastic", "frogs sing quietly", "xqzvy again"]
    one, parts, driver = (create_backbone("glove-6b-50d") for _ in range(3))
    for i, text in enumerate(texts):
        sample = one.preprocess(Item(str(i), text=text))
        one.accept(sample)
        parts.accept(sample)
        if i == 1:
            driver.merge_report(parts.report_state())
    driver.merge_report(parts.report_state())
    assert parts.report_state() is None, "reading the state resets it"
    assert driver.report() == one.report() == [
        "OOV: 30.0% of 10 tokens; 1 text fully out of vocabulary (skipped)",
        "most frequent OOV tokens: xqzvy (2), blorptastic (1)"]


def test_pang_lee_polarity_extraction_second_run_is_all_cache_hits(store):
    first = embedkit.extract("pang-lee-polarity", cache=store, progress=False)
    assert len(first) == 200 and first.dim == 50
    assert sorted(set(first.labels)) == ["neg", "pos"]
    assert first.meta["model"] == "glove-6b-50d" and first.meta["modality"] == "text"
    assert first.summary.computed == 200 and first.summary.notes[0].startswith("OOV: ")
    second = embedkit.extract("pang-lee-polarity", cache=store, progress=False)
    assert second.summary.cache_hits == 200 and second.summary.computed == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)
    sif = embedkit.extract("pang-lee-polarity", pool="sif", cache=store, progress=False)
    assert sif.summary.computed == 200  # another pooling, another fingerprint
    assert not np.allclose(sif.vectors, first.vectors)


# -- the sentence model ------------------------------------------------------------------------

def test_sentence_model_gives_real_384d_embeddings_offline(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["A man is playing a guitar.", "Someone is playing an instrument.",
             "The central bank raised interest rates."]
    result = embedkit.extract(texts, "all-minilm-l6-v2", cache=store, progress=False)
    assert result.vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-4)
    sims = result.vectors @ result.vectors.T
    assert sims[0, 1] > 0.5 > sims[0, 2] + 0.3  # similar pair well above the unrelated one


def test_sentence_model_without_sentence_transformers_names_the_extra(monkeypatch):
    import importlib.util

    from embedkit.plugins import sentence_models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sentence_transformers"
                        else real(name, *a))
    with pytest.raises(MissingExtra, match=r"pip install 'embedkit\[sentence\]'") as info:
        sentence_models.family.create("all-minilm-l6-v2")
    assert info.value.exit_code == 7 and "sentence-transformers" in str(info.value)
