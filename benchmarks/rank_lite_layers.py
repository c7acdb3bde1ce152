"""The real ranking run: which EfficientNet-Lite, read at which layer, for a small bundled target?

Candidates: EfficientNet-Lite0/1/2 at blocks.3, blocks.4, blocks.5 and pre_logits (12 in all).
Every transferability score is computed for every candidate on a small labelled target, next to
the candidate's measured 5-fold cross-validated linear-probe accuracy; Kendall's tau-b and
weighted tau between each score and that accuracy say which score ranks candidates right.

    .venv/bin/python benchmarks/rank_lite_layers.py          # digits-target, animal-shape; 10 20 30
    .venv/bin/python benchmarks/rank_lite_layers.py --targets digits-target --per-class 30

Extraction goes through the cache (EMBEDKIT_HOME or ~/.cache/embedkit): the first run embeds
each target 15 times (12 candidates + 3 logits layers) on the CPU; a rerun only scores. The
smaller sizes are the first images of the larger ones, so they come from the cache too.
The run ends with each score's mean Kendall tau and weighted tau over all (target, size)
settings, and how often it beats or ties the cheap hold-out probe: the evidence behind
embedkit.transfer.DEFAULT_SCORE.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from embedkit import samples
from embedkit.transfer import SCORES, rank_models

MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
LAYERS = ["blocks.3", "blocks.4", "blocks.5", "pre_logits"]


def run(target: str, per_class: int) -> dict:
    folder = samples.export(target, per_class=per_class)
    print(f"\n== {target}: {per_class} images per class ({folder})", flush=True)
    started = time.perf_counter()
    ranking = rank_models(str(folder), MODELS, metrics=list(SCORES), validate=True,
                          layers=LAYERS, progress=False,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"({time.perf_counter() - started:.0f} s including extraction)")
    names = list(SCORES)
    print(f"{'candidate':29s}" + "".join(f"{h:>14s}" for h in ["accuracy", *names]))
    for row in sorted(ranking.rows, key=lambda r: -r["accuracy"]):
        print(f"{row['candidate']:29s}{row['accuracy']:>14.4f}"
              + "".join(f"{row[n]:>14.4g}" for n in names))
    print("\nscore vs measured 5-fold linear-probe accuracy:")
    print(f"{'score':>14} {'kendall tau':>12} {'p':>8} {'weighted tau':>13}")
    for v in ranking.validation:
        print(f"{v['metric']:>14} {v['kendall_tau']:>12.3f} {v['p_value']:>8.3g} "
              f"{v['weighted_tau']:>13.3f}")
    for note in ranking.notes:
        print("note:", note)
    return ranking.as_dict()


def summary(results: dict):
    """Mean taus per score over every (target, size) setting, and wins against the baseline."""
    settings = list(results)
    per_metric = {v["metric"]: {} for v in results[settings[0]]["validation"]}
    for setting in settings:
        for v in results[setting]["validation"]:
            per_metric[v["metric"]][setting] = tuple(
                float("nan") if v[k] is None else v[k] for k in ("kendall_tau", "weighted_tau"))
    base = per_metric["holdout-probe"]
    print(f"\nover {len(settings)} settings ({', '.join(settings)}):")
    print(f"{'score':>14} {'mean tau':>9} {'mean weighted tau':>18} {'>= holdout-probe':>17}")
    for name, values in per_metric.items():
        taus = [values[s][0] for s in settings]
        weighted = [values[s][1] for s in settings]
        wins = sum(values[s][0] >= base[s][0] for s in settings)
        print(f"{name:>14} {sum(taus) / len(taus):>9.3f} {sum(weighted) / len(weighted):>18.3f} "
              f"{wins:>13}/{len(settings)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["digits-target", "animal-shape"])
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--json", default=None, help="Also write the full results here.")
    args = parser.parse_args()
    out = {f"{target}@{n}": run(target, n) for target in args.targets for n in args.per_class}
    if len(out) > 1:
        summary(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
