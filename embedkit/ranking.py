"""Ranking candidates by measuring them within a time budget, and saying how sure it is.

Why measure: on small targets (embedkit's users) a cross-validated linear probe costs a
fraction of a second per candidate, and it orders candidates the way a held-out evaluation
does far better than any closed-form score (benchmarks/rank_lite_layers.py, docs/compare.md).
So the default ranking measures every candidate it can afford and falls back to a closed-form
score only beyond the budget.

- **Probe**: logistic regression on standardised features (`transfer.probe_fold_accuracies`),
  repeated stratified 5-fold cross-validation; repetition r shuffles with seed
  ``PROBE_SEED + r``, never the seed ``--validate`` uses (0), so the validation folds stay
  independent of the ones that ranked.
- **Budget**: successive halving (Karnin, Koren, Somekh, "Almost Optimal Exploration in
  Multi-Armed Bandits", ICML 2013; Jamieson, Talwalkar, "Non-stochastic Best Arm
  Identification and Hyperparameter Optimization", AISTATS 2016): every affordable candidate
  gets one repetition, then the better half has its repetitions doubled, and so on up to
  ``MAX_REPEATS``, while the budget lasts; budget still left then brings the other
  candidates up to ``MAX_REPEATS`` too (fewest repetitions first), since the whole order
  matters to the user, not only the winner. Before each repetition its cost is estimated from
  the seconds per (item x dimension x class) measured so far (`ProbeCost`); no repetition
  starts that is expected to end past the budget (one that runs slower than estimated can
  overshoot it by its own length), and a candidate whose first repetition does not fit in
  what is left is ranked by the fallback score.
- **Fallback**: the closed-form score with the best mean Kendall tau on the benchmark
  (``FALLBACK_SCORE``), computed for every candidate. Where two or more candidates were
  probed, a least-squares line from that score to probe accuracy (fitted on them) places the
  others on the accuracy scale; otherwise they follow the probed ones in score order.
- **Interval**: the corrected resampled t interval of Nadeau and Bengio ("Inference for the
  Generalization Error", Machine Learning 2003) over the J fold accuracies:
  mean +- t(0.975, J - 1) sqrt((1/J + n_test/n_train) s^2). The n_test/n_train term accounts
  for the folds' overlapping training sets; without it the interval would shrink with every
  repetition as if the folds were independent samples.
- **Ties**: a probed candidate whose interval overlaps the leader's is tied with it; the
  summary names how many are indistinguishable on this data instead of pretending to an order.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .errors import UsageError

__all__ = ["CONFIDENCE", "DEFAULT_BUDGET", "MAX_REPEATS", "OVER_BUDGET", "PROBE_FOLDS",
           "PROBE_SEED", "budgeted_probe", "BudgetedRow", "inference_flops", "Measurement",
           "over_budget", "probe_repetition", "ProbeCost", "tie_summary"]

PROBE_FOLDS = 5
PROBE_SEED = 7919  # repetition r uses PROBE_SEED + r; --validate uses seed 0
MAX_REPEATS = 8
DEFAULT_BUDGET = 60.0  # seconds of scoring on the CPU, after extraction
CONFIDENCE = 0.95


class ProbeCost:
    """Seconds of one probe repetition: its own last measurement once it has one, else
    load x (overhead + rate x n x d x classes). The shape is a measurement on this project's
    2-core CPU (5 fits cost ~0.25 s however small, then lbfgs on multinomial logistic
    regression grows with items, dimensions and classes: 0.95 s at 300 x 1280 x 10); `load`,
    the median ratio of measured to modelled seconds in this run, adapts it to the machine of
    the day. A fixed rate alone extrapolates a small first candidate's overhead into minutes
    for a wide one."""

    def __init__(self, overhead: float = 0.25, rate: float = 2e-7):
        self.overhead, self.rate = overhead, rate
        self._ratios: list[float] = []
        self._last: dict[str, float] = {}

    def _model(self, n: int, d: int, classes: int) -> float:
        return self.overhead + self.rate * n * d * classes

    def estimate(self, label: str, n: int, d: int, classes: int) -> float:
        if label in self._last:
            return self._last[label]
        load = float(np.median(self._ratios)) if self._ratios else 1.0
        return load * self._model(n, d, classes)

    def observe(self, label: str, n: int, d: int, classes: int, seconds: float):
        self._last[label] = seconds
        self._ratios.append(seconds / self._model(n, d, classes))


@dataclass
class Measurement:
    """One candidate's probe: the fold accuracies of every repetition it got."""

    folds: list[float] = field(default_factory=list)
    repeats: int = 0
    seconds: float = 0.0
    test_fraction: float = 1 / (PROBE_FOLDS - 1)  # n_test / n_train of its splits

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds)) if self.folds else float("nan")

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Nadeau-Bengio corrected resampled t interval of the mean fold accuracy."""
        from scipy.stats import t

        j = len(self.folds)
        if j < 2:
            return float("nan"), float("nan")
        half = t.ppf(0.5 + confidence / 2, j - 1) * math.sqrt(
            (1 / j + self.test_fraction) * np.var(self.folds, ddof=1))
        return max(0.0, float(self.mean - half)), min(1.0, float(self.mean + half))


def probe_repetition(features, y: np.ndarray, repetition: int, folds: int = PROBE_FOLDS,
                     seed: int = PROBE_SEED) -> tuple[list[float], float]:
    """(fold accuracies, n_test / n_train) of one stratified k-fold round shuffled with
    seed + repetition (k reduced to the smallest class's size)."""
    from sklearn.model_selection import StratifiedKFold

    from .transfer import probe_fold_accuracies

    k = min(folds, int(np.bincount(y).min()))
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed + repetition)
    return probe_fold_accuracies(features, y, splitter), 1 / (k - 1)


@dataclass
class BudgetedRow:
    candidate: str
    method: str  # "probe RxK-fold" or "<fallback> (over budget)" (`over_budget`)
    value: float  # probe accuracy, or the fallback's estimate of it (NaN: no estimate)
    low: float
    high: float
    seconds: float
    fallback: float  # the fallback score's own value
    repeats: int = 0
    tied: bool | None = None  # None: not measured, cannot be judged


#: How a row's `method` marks a candidate the budget left unmeasured (placed by its fallback).
OVER_BUDGET = "(over budget)"


def over_budget(row: Mapping) -> bool:
    """Whether a ranking row's value was placed from its fallback score, not measured."""
    return str(row.get("method", "")).endswith(OVER_BUDGET)


def budgeted_probe(sets: Mapping[str, tuple], budget: float = DEFAULT_BUDGET,
                   fallback: str | None = None, max_repeats: int = MAX_REPEATS,
                   cost: ProbeCost | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> list[BudgetedRow]:
    """Rank {candidate: (features [n, d], labels [n])} by probe accuracy within `budget`
    seconds, best first (see the module docstring). `cost` and `clock` can be replaced
    (tests inject a slow candidate and a fake clock)."""
    from .transfer import FALLBACK_SCORE, SCORES, encode_labels

    if budget < 0:
        raise UsageError(f"--budget must be 0 or more seconds, not {budget}")
    if max_repeats < 1:
        raise UsageError(f"max_repeats must be at least 1, not {max_repeats}")
    fallback = fallback or FALLBACK_SCORE
    score = SCORES[fallback]
    if score.needs != "features":
        raise UsageError(f"the fallback score must read features, not the {score.needs}")
    targets = {}
    for label, (f, labels) in sets.items():
        y, classes = encode_labels(labels, len(f))
        if np.bincount(y).min() < 2:
            raise UsageError(f"{label}: class '{classes[np.bincount(y).argmin()]}' has one "
                             "item: a linear probe needs 2+ per class")
        targets[label] = y
    cost = cost or ProbeCost()
    import sklearn.linear_model  # noqa: F401  (imported before the clock starts: seconds on
    import sklearn.model_selection  # noqa: F401  a cold, busy machine, not a probe's cost)
    start = clock()
    measured = {label: Measurement() for label in sets}
    fallback_values, fallback_seconds = {}, {}
    for label, (f, labels) in sets.items():  # the floor every candidate gets, budget or not
        t0 = clock()
        fallback_values[label] = score.compute(f, labels)
        fallback_seconds[label] = clock() - t0

    def shape(label):
        f = sets[label][0]
        return len(f), f.shape[1], int(targets[label].max()) + 1

    def run(label) -> bool:
        """One more repetition for `label` if it fits in the budget left."""
        if clock() - start + cost.estimate(label, *shape(label)) > budget:
            return False
        m = measured[label]
        t0 = clock()
        accuracies, m.test_fraction = probe_repetition(sets[label][0], targets[label],
                                                       m.repeats)
        seconds = clock() - t0
        cost.observe(label, *shape(label), seconds)
        m.folds += accuracies
        m.repeats += 1
        m.seconds += seconds
        return True

    by_cost = sorted(sets, key=lambda label: cost.estimate(label, *shape(label)))
    contenders = [label for label in by_cost if run(label)]
    target, out_of_budget = 1, False
    while len(contenders) > 1 and target < max_repeats and not out_of_budget:
        target = min(2 * target, max_repeats)
        contenders.sort(key=lambda label: -measured[label].mean)
        contenders = contenders[:max(2, math.ceil(len(contenders) / 2))]
        for label in contenders:
            while measured[label].repeats < target and not out_of_budget:
                out_of_budget = not run(label)
    # budget left over: the rest of the order gets measured as well, fewest repetitions first
    while not out_of_budget:
        behind = [label for label in by_cost if 0 < measured[label].repeats < max_repeats]
        if not behind:
            break
        out_of_budget = not run(min(behind, key=lambda label: measured[label].repeats))
    return _rows(measured, fallback_values, fallback_seconds, fallback)


def _rows(measured: dict, fallback_values: dict, fallback_seconds: dict,
          fallback: str) -> list[BudgetedRow]:
    probed = [label for label, m in measured.items() if m.repeats]
    xs = np.array([fallback_values[label] for label in probed])
    ys = np.array([measured[label].mean for label in probed])
    slope = intercept = None
    if len(probed) >= 2 and np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, ys, 1)
        if slope <= 0:  # the fallback disagrees with the measurements here: no placement
            slope = None
    rows = []
    for label, m in measured.items():
        seconds = m.seconds + fallback_seconds[label]
        if m.repeats:
            low, high = m.interval()
            k = round(1 + 1 / m.test_fraction)
            rows.append(BudgetedRow(label, f"probe {m.repeats}x{k}-fold", m.mean, low, high,
                                    seconds, fallback_values[label], m.repeats))
        else:
            value = (float(slope * fallback_values[label] + intercept) if slope is not None
                     else float("nan"))
            rows.append(BudgetedRow(label, f"{fallback} {OVER_BUDGET}", value, float("nan"),
                                    float("nan"), seconds, fallback_values[label]))
    # measured or placed candidates by value; unplaced ones after them by the fallback score
    rows.sort(key=lambda r: (np.isnan(r.value), -np.nan_to_num(r.value),
                             -r.fallback))
    leader = next((r for r in rows if r.repeats), None)  # the best measured candidate
    if leader is not None:
        for r in rows:
            if r.repeats:
                r.tied = r is leader or bool(r.high >= leader.low and r.low <= leader.high)
        if sum(bool(r.tied) for r in rows) == 1:
            leader.tied = False  # nothing ties with it
    return rows


def tie_summary(rows: list[BudgetedRow]) -> str | None:
    """The line that says how many candidates the data cannot separate from the leader."""
    tied = [r.candidate for r in rows if r.tied]
    if len(tied) < 2:
        return None
    return (f"these {len(tied)} are indistinguishable on this data (their probe accuracy "
            f"intervals overlap the leader's): {', '.join(tied)}")


def inference_flops(dataset, model: str, layer: str | None = None, items: int = 8,
                    **options) -> float:
    """Floating-point operations per item of embedding `items` items of `dataset` with
    MODEL@LAYER, counted by PyTorch (`torch.utils.flop_counter`: convolutions and matrix
    products, two per multiply-add; the forward stops at the layer read): what using the
    candidate costs, which the cache hides from the ranking itself.  A count, not a timing, so
    the same candidates always compare the same way, however busy the machine.  What the
    counter has no formula for counts 0: a model that does no PyTorch arithmetic (word
    vectors: a look-up and a mean), and attention's own products in PyTorch's CPU kernel (a
    transformer's projections and feed-forward layers, most of its work on short texts, are
    counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .inputs import open_dataset
    from .registry import create_backbone

    ds = open_dataset(dataset, label=options.pop("label", None))
    chosen = list(itertools.islice((item for item in ds.items if not item.error), items))
    if not chosen:
        raise UsageError(f"{dataset}: no items to measure a model's cost on")
    backbone = create_backbone(model, layer=layer, **options)
    batch = backbone.collate([backbone.preprocess(item) for item in chosen])
    backbone.embed(batch)  # one-time work (weights, the layers' shapes) is not the model's
    with FlopCounterMode(display=False) as counter:
        backbone.embed(batch)
    return counter.get_total_flops() / len(chosen)
