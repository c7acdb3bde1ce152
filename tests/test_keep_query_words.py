"""`--keep-query-words` on the command line (`similar`, `analogy`), against gensim.

gensim's `most_similar` drops the query words from its answers, silently; embedkit drops them by
default and says so, and `--keep-query-words` keeps them.  The reference for the kept answers is
gensim itself asked with a vector instead of words (`similar_by_vector`), which excludes nothing:
the same ranking with the query words left in place.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli
from embedkit.wordvectors import load_glove

K = 8


@pytest.fixture(scope="module")
def glove():
    return load_glove()


def run_json(*args) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def keys_and_scores(rows) -> tuple[list[str], list[float]]:
    """Answer keys and cosines (the CLI rounds them to 4 decimals)."""
    return [r["key"] for r in rows], [r["cosine"] for r in rows]


def test_similar_keeps_the_query_word_only_when_asked(glove):
    kept = run_json("similar", "frog", "-k", str(K), "--keep-query-words")
    dropped = run_json("similar", "frog", "-k", str(K))
    reference = glove.similar_by_vector(glove["frog"], topn=K)
    keys, scores = keys_and_scores(kept["neighbors"])
    assert keys == [k for k, _ in reference] and keys[0] == "frog"
    np.testing.assert_allclose(scores, [s for _, s in reference], atol=6e-5)
    assert kept["query_excluded"] is False and dropped["query_excluded"] is True
    assert keys_and_scores(dropped["neighbors"])[0] == \
        [k for k, _ in glove.most_similar("frog", topn=K)]


def test_analogy_keeps_the_query_words_only_when_asked(glove):
    positive, negative = ["king", "woman"], ["man"]
    kept = run_json("analogy", "king - man + woman", "-k", str(K), "--keep-query-words")
    dropped = run_json("analogy", "king - man + woman", "-k", str(K))
    # gensim's 3CosAdd target: the mean of the unit vectors, negatives subtracted
    target = glove.get_mean_vector(positive + negative, weights=[1.0, 1.0, -1.0],
                                   pre_normalize=True, post_normalize=True)
    reference = glove.similar_by_vector(target, topn=K)
    keys, scores = keys_and_scores(kept["answers"])
    assert keys == [k for k, _ in reference]
    assert {"king", "woman"} & set(keys), "a query word is among the kept answers"
    np.testing.assert_allclose(scores, [s for _, s in reference], atol=6e-5)
    assert kept["query_excluded"] is False and dropped["query_excluded"] is True
    assert keys_and_scores(dropped["answers"])[0] == [k for k, _ in glove.most_similar(
        positive=positive, negative=negative, topn=K)]
