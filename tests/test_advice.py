"""The rule of thumb: each quadrant, the stated measurements, and one real run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.advice import SIMILAR_ABOVE, advise, lower_layer
from embedkit.embeddings import EmbeddingSet


def make_set(direction, n, classes=2, name="set", seed=0):
    rng = np.random.default_rng(seed)
    vectors = np.abs(rng.normal(0, 0.05, (n, 4)) + np.asarray(direction, float))
    labels = np.array([f"c{i % classes}" for i in range(n)], dtype=object)
    return EmbeddingSet([f"{name}/{i}" for i in range(n)], vectors, {"label": labels},
                        {"model": "efficientnet_lite0", "layer": "pre_logits",
                         "fingerprint": "lite0-pre", "dataset": f"/data/{name}"})


SOURCE = make_set([1, 1, 0, 0], 30, name="source")
NEAR = [1, 0.9, 0.1, 0]  # cosine with the source mean ~0.99
FAR = [0, 0.1, 1, 1]  # cosine ~0.07


@pytest.mark.parametrize("n,direction,small,similar,strategy,flags", [
    (20, NEAR, True, True, "linear classifier on the top-layer", "--classifier logreg"),
    (20, FAR, True, False, "SVM on lower-layer", "--layer blocks.4 --classifier svm-rbf"),
    (60, NEAR, False, True, "fine-tune many layers", "--classifier logreg"),
    (60, FAR, False, False, "from scratch", "--layer blocks.4 --classifier svm-rbf"),
])
def test_each_quadrant_of_the_rule(n, direction, small, similar, strategy, flags):
    target = make_set(direction, n, name="target", seed=1)
    advice = advise(target, SOURCE, small_below=25)  # 10 vs 30 items per class
    assert (advice.small, advice.similar) == (small, similar)
    assert strategy in advice.strategy
    assert advice.command == (f"embedkit train /data/target --model efficientnet_lite0 {flags} "
                              "-o model.skops")
    assert advice.items == n and advice.classes == 2 and advice.items_per_class == n / 2
    expected = float(target.vectors.astype(float).mean(0) @ SOURCE.vectors.astype(float).mean(0)
                     / np.linalg.norm(target.vectors.astype(float).mean(0))
                     / np.linalg.norm(SOURCE.vectors.astype(float).mean(0)))
    assert advice.similarity == pytest.approx(expected)
    text = "\n".join(advice.lines())
    assert "small below 25 per class" in text and f"similar from {SIMILAR_ABOVE}" in text
    if not small:
        assert (f"embedkit finetune /data/target --model efficientnet_lite0 --unfreeze "
                f"{'top-3' if similar else 'all'} --lr 1e-3") in text


def test_a_single_class_target_is_told_it_needs_another():
    advice = advise(make_set(NEAR, 20, classes=1, name="target"), SOURCE)
    assert "the target has a single class ('label'): a classifier needs two" in advice.also[0]
    assert not any("single" in a for a in advise(make_set(NEAR, 20), SOURCE).also)
    one = make_set(NEAR, 21, classes=2, name="target")
    one.label_columns["label"][-1] = "lonely"
    assert "class 'lonely' of 'label' has a single item" in advise(one, SOURCE).also[0]


def test_the_train_command_fits_its_folds_to_every_column_train_will_learn():
    from embedkit.classify import train_command

    columns = {"species": ["a"] * 10 + ["b"] * 10,
               "color": ["red"] * 17 + ["blue"] * 3, "note": [None] * 20}
    assert train_command("t", "m", "logreg", label_columns=columns).endswith(
        "--classifier logreg --cv 3 -o model.skops")  # color's 3 blues: train learns it too
    assert train_command("t", "m", "logreg", label="species", label_columns=columns) == \
        "embedkit train t --model m --classifier logreg --label species -o model.skops"
    columns["species"][:8] = [None] * 8  # unlabelled items are left out, as train does
    assert "--cv 2" in train_command("t", "m", "logreg", label="species", label_columns=columns)


def test_thresholds_can_be_moved():
    target = make_set(NEAR, 20, name="target")
    assert advise(target, SOURCE, similar_above=0.999).similar is False
    assert advise(target, SOURCE, small_below=5).small is False


def test_lower_layer_is_a_middle_block():
    assert lower_layer("efficientnet_lite0") == "blocks.4"


def test_advise_on_real_digits(digits_small, tmp_path):
    """Digits 5-9 against digits 0-4 through EfficientNet-Lite0: similar, small -> freeze."""
    from click.testing import CliRunner

    from embedkit import samples
    from embedkit.cli.main import cli

    source = samples.export("digits-source", tmp_path / "source", per_class=4)
    result = CliRunner().invoke(cli, ["advise", str(digits_small), "--source", str(source),
                                      "--model", "efficientnet_lite0", "--json"])
    assert result.exit_code == 0, result.output
    advice = json.loads(result.stdout)
    assert advice["similarity"] > SIMILAR_ABOVE and advice["similar"]
    assert advice["small"] and advice["items_per_class"] == 4
    # 4 per class: the default 5 folds cannot be filled, so the command lowers them
    assert advice["command"].endswith("--model efficientnet_lite0 --classifier logreg --cv 4 "
                                      "-o model.skops")
    import shlex

    command = shlex.split(advice["command"])[1:-1] + [str(tmp_path / "model.skops"), "-q"]
    trained = CliRunner().invoke(cli, command)  # the printed command runs as printed
    assert trained.exit_code == 0, trained.output


# -- quoting the ranking -------------------------------------------------------------------
def ranking_of(rows, summary=()):
    from embedkit.transfer import Ranking

    return Ranking(["budgeted-probe"], [{"rank": i, **r} for i, r in enumerate(rows, 1)],
                   summary=list(summary))


def row(name, value, low, high, tied, model="m", layer="pre_logits"):
    return {"candidate": name, "model": model, "layer": layer, "budgeted-probe": value,
            "low": low, "high": high, "tied": tied, "method": "probe 8x5-fold"}


def test_a_tie_is_quoted_with_the_cheapest_tied_candidate_as_the_pick():
    from embedkit.advice import quote_ranking, ranking_lines

    costs = {"big@pre_logits": 0.05, "small@blocks.4": 0.01, "mid@blocks.5": 0.02}
    ranking = ranking_of([row("big@pre_logits", 0.95, 0.90, 1.0, True),
                          row("small@blocks.4", 0.93, 0.87, 0.99, True),
                          row("mid@blocks.5", 0.80, 0.70, 0.88, False)])
    quoted = quote_ranking(ranking, lambda r: (costs[r["candidate"]], "measured"))
    assert quoted["best"]["candidate"] == "big@pre_logits"
    assert quoted["pick"]["candidate"] == "small@blocks.4"  # mid is cheaper but not tied
    text = "\n".join(ranking_lines(quoted))
    assert "big@pre_logits, probe accuracy 0.950 (95% interval 0.900-1.000" in text
    assert "2 candidates tie with it" in text
    assert "the cheapest, small@blocks.4 (measured), is the sensible pick" in text
    # no tie: the winner is the pick and nothing is timed
    clear = ranking_of([row("big@pre_logits", 0.95, 0.92, 0.98, False),
                        row("small@blocks.4", 0.70, 0.60, 0.80, False)])
    quoted = quote_ranking(clear, lambda r: pytest.fail("no tie, no timing"))
    assert quoted["pick"]["candidate"] == "big@pre_logits"
    assert len(ranking_lines(quoted)) == 1


def test_advise_quotes_a_real_ranking(digits_small, tmp_path):
    from click.testing import CliRunner

    from embedkit import samples
    from embedkit.cli.main import cli

    source = samples.export("digits-source", tmp_path / "source", per_class=4)
    result = CliRunner().invoke(cli, ["advise", str(digits_small), "--source", str(source),
                                      "--models", "efficientnet_lite0@blocks.1",
                                      "efficientnet_lite0@pre_logits", "--budget", "30",
                                      "--json"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.stdout)["ranking"]
    assert ranked["best"]["candidate"] in ("efficientnet_lite0@blocks.1",
                                           "efficientnet_lite0@pre_logits")
    assert 0 <= ranked["best"]["low"] <= ranked["best"]["value"] <= ranked["best"]["high"] <= 1
    # 4 images per class cannot separate the two: the pick is the cheaper one, the block that
    # stops the forward pass early, by a count of operations (a timing could flip under load)
    assert len(ranked["tied"]) == 2
    assert ranked["pick"]["candidate"] == "efficientnet_lite0@blocks.1"
    gflops = float(ranked["pick"]["cost"].removesuffix(" GFLOPs per item"))
    from embedkit.ranking import inference_flops

    whole = inference_flops(digits_small, "efficientnet_lite0")  # timm lists 0.39 GMACs
    assert whole == pytest.approx(2 * 0.39e9, rel=0.03) and 0 < gflops < whole / 2e9
