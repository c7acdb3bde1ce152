"""The ranking benchmark: does each score order model/layer candidates as measuring them would?

Targets: every bundled labelled image set (digits-target, digits-source, digits, animal-shape,
lfw-subset = faces vs non-faces) at 10, 20 and 30 images per class. Candidates (15): the offline
backbones EfficientNet-Lite0/1/2 at blocks.3, blocks.4, blocks.5 and pre_logits, plus a randomly
initialised EfficientNet-Lite0 (seeded, saved as safetensors) at blocks.4, blocks.5 and
pre_logits: the sanity anchor, which a good score puts where the ground truth puts it (the
"random last" column: 1.0 = the random candidates hold the last places). leep / nce read each pretrained model's ImageNet head.

Ground truth: the mean accuracy of a logistic-regression probe over 8 repetitions of stratified
5-fold CV with seeds (1000..1007) that neither the scores nor the default's own probe
(embedkit.ranking.PROBE_SEED) use. For each setting and score: Kendall's tau-b, weighted tau
and top-1 regret (ground-truth accuracy of the true best minus that of the score's pick), then
the means over settings, each score's time over all its settings, and the "ceiling": the tau
between two disjoint halves of the ground truth's repetitions (how well measuring agrees with
itself).

    .venv/bin/python benchmarks/rank_lite_layers.py --extract-only   # fill the cache (slow)
    .venv/bin/python benchmarks/rank_lite_layers.py                  # score and summarise
    .venv/bin/python benchmarks/rank_lite_layers.py --targets digits-target --per-class 30
    .venv/bin/python benchmarks/rank_lite_layers.py --summarise a.json b.json   # merge runs

Extraction goes through the cache (EMBEDKIT_HOME or ~/.cache/embedkit); smaller sizes are the
first images of the larger ones and digits shares its images with digits-source/-target, so a
rerun only scores. Scoring runs single-threaded BLAS when OMP_NUM_THREADS=1 is set (steadier on
a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

TARGETS = ["digits-target", "digits-source", "digits", "animal-shape", "lfw-subset"]
PER_CLASS = [10, 20, 30]
MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
LAYERS = ["blocks.3", "blocks.4", "blocks.5", "pre_logits"]
RANDOM_MODEL = "timm/tf_efficientnet_lite0"  # the same architecture as Lite0, random weights
RANDOM_LAYERS = ["blocks.4", "blocks.5", "pre_logits"]
TRUTH_SEEDS = list(range(1000, 1008))


def random_weights() -> str:
    """A seeded random initialisation of EfficientNet-Lite0 saved once as safetensors (its
    sha256 is part of the cache key, so the features are cached like any model's)."""
    from embedkit.store import default_root

    path = default_root() / "benchmarks" / "random-tf_efficientnet_lite0-seed0.safetensors"
    if not path.exists():
        import timm
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def candidate_sets(folder: str) -> dict:
    """{candidate label: EmbeddingSet} for every candidate, plus {model: logits set}."""
    from embedkit.extract import embeddings_of

    sets, logits = {}, {}
    for model in MODELS:
        for layer in LAYERS:
            sets[f"{model}@{layer}"] = embeddings_of(folder, model, layer=layer, progress=False)
        logits[model] = embeddings_of(folder, model, layer="logits", progress=False)
    weights = random_weights()
    for layer in RANDOM_LAYERS:
        sets[f"random-lite0@{layer}"] = embeddings_of(folder, RANDOM_MODEL, layer=layer,
                                                      weights=weights, progress=False)
    return sets, logits


SCORED = ["logme", "leep", "nce", "hscore", "gbc", "transrate", "sfda", "knn", "holdout-probe"]
CLOSED_FORM = ["logme", "leep", "nce", "hscore", "gbc", "transrate", "sfda"]


def truth(sets: dict, seeds=TRUTH_SEEDS) -> dict:
    """{candidate: fold accuracies per repetition} of the ground-truth probe: 5-fold CV
    repetitions with seeds no score and no ranking default ever uses."""
    from sklearn.model_selection import StratifiedKFold

    from embedkit.transfer import encode_labels, probe_fold_accuracies

    out = {}
    for label, emb in sets.items():
        y, _ = encode_labels(emb.labels, len(emb))
        k = min(5, int(np.bincount(y).min()))
        out[label] = [probe_fold_accuracies(emb.vectors, y, StratifiedKFold(
            k, shuffle=True, random_state=seed)) for seed in seeds]
    return out


def agreement(scores: dict, accuracy: dict) -> dict:
    """Kendall tau-b, weighted tau and top-1 regret of `scores` against `accuracy` over the
    candidates where the score is defined."""
    from scipy.stats import kendalltau, weightedtau

    names = [c for c in scores if not np.isnan(scores[c])]
    s = np.array([scores[c] for c in names])
    a = np.array([accuracy[c] for c in names])
    if len(names) < 2:
        return {"tau": float("nan"), "weighted": float("nan"), "regret": float("nan"),
                "candidates": len(names)}
    if np.ptp(s) == 0:  # a constant score orders nothing: tau 0, the regret of a blind pick
        return {"tau": 0.0, "weighted": 0.0, "regret": float(np.mean(a.max() - a)),
                "candidates": len(names)}
    pick = names[int(np.argmax(s))]
    return {"tau": float(kendalltau(s, a).statistic),
            "weighted": float(weightedtau(s, a).statistic),
            "regret": float(max(accuracy.values()) - accuracy[pick]), "candidates": len(names)}


def run(target: str, per_class: int, budgets: list[float]) -> dict:
    from embedkit import samples
    from embedkit.ranking import budgeted_probe
    from embedkit.transfer import BUDGETED, SCORES

    folder = samples.export(target, per_class=per_class)
    sets, logits = candidate_sets(str(folder))
    gt = truth(sets)
    accuracy = {c: float(np.mean(folds)) for c, folds in gt.items()}
    half = len(TRUTH_SEEDS) // 2  # the ceiling: one half of the truth against the other
    first = {c: float(np.mean(folds[:half])) for c, folds in gt.items()}
    second = {c: float(np.mean(folds[half:])) for c, folds in gt.items()}
    result = {"accuracy": accuracy, "ceiling": agreement(first, second), "scores": {},
              "seconds": {}, "values": {}}
    for name in SCORED:
        score = SCORES[name]
        values, started = {}, time.perf_counter()
        for label, emb in sets.items():
            if score.needs == "source classifier":
                model = label.split("@")[0]
                values[label] = (score.compute(logits[model].vectors, emb.labels)
                                 if model in logits else float("nan"))
            else:
                values[label] = score.compute(emb.vectors, emb.labels)
        result["seconds"][name] = time.perf_counter() - started
        result["values"][name] = values
        result["scores"][name] = agreement(values, accuracy)
    for budget in budgets:
        name = f"{BUDGETED} {budget:g}s"
        started = time.perf_counter()
        rows = budgeted_probe({c: (e.vectors, e.labels) for c, e in sets.items()},
                              budget=budget)
        result["seconds"][name] = time.perf_counter() - started
        # the ranking's own order, as a score: rank 1 highest
        values = {r.candidate: float(len(rows) - i) for i, r in enumerate(rows)}
        result["values"][name] = values
        result["scores"][name] = agreement(values, accuracy)
        result["scores"][name]["probed"] = sum(1 for r in rows if r.repeats)
        result["scores"][name]["tied"] = sum(1 for r in rows if r.tied)
    n_random = len(RANDOM_LAYERS)
    result["random_in_bottom"] = {  # are all random-init candidates among the last ones?
        name: _random_last(values, n_random) for name, values in
        [("truth", accuracy), *result["values"].items()]}
    _print_setting(target, per_class, result)
    return result


def _random_last(values: dict, n_random: int) -> float:
    """Worst position (1 = first) of a random-init candidate, as a fraction of the places from
    the bottom it could take: 1.0 when they hold the last places, lower when one climbs."""
    defined = {c: v for c, v in values.items() if not np.isnan(v)}
    if len(set(defined.values())) < 2:  # a constant score places nothing
        return float("nan")
    order = sorted(defined, key=lambda c: -defined[c])
    places = [order.index(c) + 1 for c in defined if c.startswith("random")]
    if not places:
        return float("nan")
    return (min(places) - 1) / (len(order) - n_random) if len(order) > n_random else 1.0


def _print_setting(target, per_class, result):
    print(f"\n== {target}, {per_class} per class: ceiling tau {result['ceiling']['tau']:.3f}",
          flush=True)
    print(f"{'score':22s} {'tau':>7s} {'w.tau':>7s} {'regret':>7s} {'seconds':>8s}")
    for name, a in result["scores"].items():
        print(f"{name:22s} {a['tau']:7.3f} {a['weighted']:7.3f} {a['regret']:7.3f} "
              f"{result['seconds'][name]:8.2f}")


def _mean(values) -> float:
    """Mean over the settings where a value is defined (NaN where none is)."""
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def summary(results: dict):
    """Mean over settings of each score's tau, weighted tau, regret and seconds."""
    settings = list(results)
    names = list(results[settings[0]]["scores"])
    ceiling = _mean([results[s]["ceiling"]["tau"] for s in settings])
    print(f"\nover {len(settings)} settings; ceiling (truth half vs half) mean tau "
          f"{ceiling:.3f}")
    print(f"{'score':22s} {'mean tau':>9s} {'mean w.tau':>11s} {'mean regret':>12s} "
          f"{'seconds':>8s} {'random last':>12s}")
    for name in names:
        tau = _mean([results[s]["scores"][name]["tau"] for s in settings])
        weighted = _mean([results[s]["scores"][name]["weighted"] for s in settings])
        regret = _mean([results[s]["scores"][name]["regret"] for s in settings])
        seconds = sum(results[s]["seconds"][name] for s in settings)
        anchor = _mean([results[s]["random_in_bottom"][name] for s in settings])
        print(f"{name:22s} {tau:9.3f} {weighted:11.3f} {regret:12.3f} {seconds:8.1f} "
              f"{anchor:12.2f}")
    anchor = _mean([results[s]["random_in_bottom"]["truth"] for s in settings])
    print(f"{'(truth)':22s} {'':9s} {'':11s} {'':12s} {'':8s} {anchor:12.2f}")
    markdown(results)


def markdown(results: dict):
    """The same means as a Markdown table, with the mean tau per target (over its sizes)."""
    settings = list(results)
    targets = list(dict.fromkeys(s.split("@")[0] for s in settings))
    names = list(results[settings[0]]["scores"])

    def mean(name, key, only=None):
        return _mean([results[s]["scores"][name][key] for s in settings
                      if only is None or s.split("@")[0] == only])

    print("\n| score | " + " | ".join(targets) + " | mean tau | mean weighted tau | "
          "mean top-1 regret | seconds (all settings) |")
    print("|---" * (len(targets) + 5) + "|")
    for name in names:
        cells = [f"{mean(name, 'tau', t):.2f}" for t in targets]
        seconds = sum(results[s]["seconds"][name] for s in settings)
        print(f"| {name} | " + " | ".join(cells) + f" | {mean(name, 'tau'):.3f} | "
              f"{mean(name, 'weighted'):.3f} | {mean(name, 'regret'):.3f} | {seconds:.1f} |")
    cells = [f"{_mean([results[s]['ceiling']['tau'] for s in settings if s.startswith(t + '@')]):.2f}"
             for t in targets]
    print("| (truth: 4 vs 4 repetitions) | " + " | ".join(cells) + " | "
          f"{_mean([results[s]['ceiling']['tau'] for s in settings]):.3f} | | | |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--per-class", type=int, nargs="+", default=PER_CLASS)
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 10.0],
                        help="Budgets (seconds) of the default ranking to evaluate.")
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--summarise", nargs="+", metavar="JSON",
                        help="Only print the summary of earlier runs' --json files.")
    parser.add_argument("--json", default=None, help="Also write the full results here.")
    args = parser.parse_args()
    from embedkit import samples

    if args.summarise:
        results = {}
        for path in args.summarise:
            with open(path) as f:
                results.update(json.load(f))
        return summary(results)
    if args.extract_only:
        for target in args.targets:
            started = time.perf_counter()
            candidate_sets(str(samples.export(target, per_class=max(args.per_class))))
            print(f"{target}: extracted in {time.perf_counter() - started:.0f} s", flush=True)
        return
    out = {f"{target}@{n}": run(target, n, args.budgets)
           for target in args.targets for n in args.per_class}
    summary(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)


if __name__ == "__main__":
    main()
