"""The budgeted default ranking: budget, fallback, intervals, ties, and the CLI / advice on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.ranking import (Measurement, ProbeCost, budgeted_probe, probe_repetition,
                              tie_summary)
from embedkit.transfer import logme


def candidate(rng, signal, n_per_class=12, d=8, classes=3):
    """Features whose first `classes` columns carry the label with strength `signal`."""
    y = np.repeat(np.arange(classes), n_per_class)
    f = rng.normal(size=(len(y), d))
    f[:, :classes] += signal * np.eye(classes)[y]
    return f, y


class SlowOne(ProbeCost):
    """A cost model under which one candidate would take far longer than any budget."""

    def estimate(self, label, n, d, classes):
        return 1e6 if label == "slow" else 1e-3


class Free(ProbeCost):
    """Every repetition estimated to cost nothing: only the clock decides."""

    def estimate(self, label, n, d, classes):
        return 0.0



class TickingClock:
    """A clock that moves one second per reading: the budget runs out after a known number
    of steps, without sleeping."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_a_candidate_over_budget_is_ranked_by_the_fallback():
    rng = np.random.default_rng(0)
    sets = {"weak": candidate(rng, 0.5), "strong": candidate(rng, 3.0),
            "slow": candidate(rng, 2.0)}
    rows = budgeted_probe(sets, budget=1000, max_repeats=2, cost=SlowOne())
    by = {r.candidate: r for r in rows}
    assert by["slow"].repeats == 0 and by["slow"].method == "logme (over budget)"
    assert np.isnan(by["slow"].low) and by["slow"].tied is None
    assert by["slow"].fallback == pytest.approx(logme(*sets["slow"]))
    # placed on the accuracy scale by the line through the two measured candidates
    (x1, y1), (x2, y2) = [(by[c].fallback, by[c].value) for c in ("weak", "strong")]
    assert by["slow"].value == pytest.approx(y1 + (by["slow"].fallback - x1) * (y2 - y1)
                                             / (x2 - x1))
    for name in ("weak", "strong"):
        assert by[name].repeats == 2 and by[name].method == "probe 2x5-fold"
        assert 0 <= by[name].value <= 1
    assert rows[0].candidate == "strong" and rows[-1].candidate == "weak"


# On the ticking clock the budget is spent in readings: one at the start, two per fallback
# score, three per probe repetition (the check before it, its start, its end). A repetition
# starts only if the check finds the time spent within the budget.
def test_the_budget_stops_the_probe():
    rng = np.random.default_rng(1)
    sets = {f"c{i}": candidate(rng, s) for i, s in enumerate([0.5, 1, 2, 3])}
    # 8 s of fallback scores, then checks at 9, 12, 15, 18 s pass and the one at 21 s fails:
    # every candidate measured once, no halving
    clock = TickingClock()
    rows = budgeted_probe(sets, budget=20, cost=Free(), clock=clock)
    assert [r.repeats for r in rows] == [1, 1, 1, 1]
    assert clock.now - 1 <= 20 + 3  # at most one repetition's overshoot
    # 14 s: two candidates measured (cheapest estimated first), two ranked by LogME
    rows = budgeted_probe(sets, budget=14, cost=Free(), clock=TickingClock())
    assert sorted(r.repeats for r in rows) == [0, 0, 1, 1]
    assert sum(1 for r in rows if r.method == "logme (over budget)") == 2
    nothing = budgeted_probe(sets, budget=0)
    assert all(r.repeats == 0 for r in nothing)  # everything by LogME, in LogME's order
    assert [r.candidate for r in nothing] == sorted(sets, key=lambda c: -logme(*sets[c]))
    assert tie_summary(nothing) is None


def test_successive_halving_spends_the_repetitions_on_the_leaders():
    rng = np.random.default_rng(2)
    sets = {f"c{i}": candidate(rng, s) for i, s in enumerate([0.2, 0.4, 2.5, 3.0])}
    # first repetitions: checks at 9-18 s; the better half to 2: 21, 24 s; to 4: 27-36 s;
    # the check at 39 s fails a 38 s budget
    rows = budgeted_probe(sets, budget=38, cost=Free(), clock=TickingClock())
    repeats = {r.candidate: r.repeats for r in rows}
    assert repeats == {"c0": 1, "c1": 1, "c2": 4, "c3": 4}
    # with time to spare, everyone is measured to the full count
    full = budgeted_probe(sets, budget=1e9, max_repeats=3, cost=Free(),
                          clock=TickingClock())
    assert all(r.repeats == 3 for r in full)


def test_the_interval_is_the_corrected_resampled_t_interval():
    from scipy.stats import t

    folds = [0.8, 0.9, 0.85, 0.95, 0.7, 0.9, 0.8, 0.85, 0.9, 0.75]
    m = Measurement(folds=folds, repeats=2, test_fraction=0.25)
    half = t.ppf(0.975, 9) * np.sqrt((1 / 10 + 0.25) * np.var(folds, ddof=1))
    assert m.interval() == pytest.approx((np.mean(folds) - half, np.mean(folds) + half))
    assert Measurement(folds=[1.0, 1.0, 1.0]).interval() == (1.0, 1.0)


def test_ties_when_the_data_cannot_separate_candidates():
    rng = np.random.default_rng(3)
    # two draws of the same kind of features: no difference a probe could find
    same = {"a": candidate(rng, 1.0), "b": candidate(rng, 1.0), "noise": candidate(rng, 0.0)}
    same["noise"] = (rng.normal(size=same["noise"][0].shape), same["noise"][1])
    rows = budgeted_probe(same, budget=1e9, max_repeats=4)
    by = {r.candidate: r for r in rows}
    assert by["a"].tied and by["b"].tied
    assert not by["noise"].tied
    line = tie_summary(rows)
    assert line.startswith("these 2 are indistinguishable on this data")
    # a clear winner ties with nobody
    clear = budgeted_probe({"strong": candidate(rng, 4.0, n_per_class=20),
                            "noise": (rng.normal(size=(60, 8)), np.repeat(np.arange(3), 20))},
                           budget=1e9, max_repeats=2)
    assert [r.tied for r in clear] == [False, False] and tie_summary(clear) is None


def test_probe_folds_are_not_the_validation_folds():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(4)
    f, y = candidate(rng, 1.0, n_per_class=10)
    validation = [test for _, test in StratifiedKFold(5, shuffle=True, random_state=0)
                  .split(f, y)]
    accuracies, fraction = probe_repetition(f, y, 0)
    assert len(accuracies) == 5 and fraction == pytest.approx(0.25)
    from embedkit.ranking import PROBE_SEED

    ours = [test for _, test in StratifiedKFold(5, shuffle=True, random_state=PROBE_SEED)
            .split(f, y)]
    assert any(not np.array_equal(a, b) for a, b in zip(validation, ours))


def test_rank_models_default_on_real_digits(digits_small):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    args = ["rank-models", str(digits_small), "--models", "efficientnet_lite0@blocks.1",
            "efficientnet_lite0@pre_logits", "efficientnet_lite0@blocks.1", "--budget", "30"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # before: the repeat came first, unmeasured, a row of dashes
    assert len(data["ranking"]) == 2
    assert "given more than once, ranked once: efficientnet_lite0@blocks.1" in data["notes"]
    assert data["metrics"] == ["budgeted-probe"]
    for row in data["ranking"]:
        assert row["method"].startswith("probe ")
        assert 0 <= row["low"] <= row["budgeted-probe"] <= row["high"] <= 1
        assert row["logme"] is not None  # the fallback score is reported beside it
    assert data["ranking"][0]["budgeted-probe"] >= data["ranking"][1]["budgeted-probe"]
    assert "candidates measured by the probe" in data["summary"][0]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "interval" in text.stdout and "method" in text.stdout
    # 4 images per class: the data cannot separate the two layers
    assert "indistinguishable on this data" in text.stdout
