"""The real ranking run: which EfficientNet-Lite, read at which layer, for a small bundled target?

Candidates: EfficientNet-Lite0/1/2 at blocks.3, blocks.4, blocks.5 and pre_logits (12 in all).
Every transferability score is computed for every candidate on a small labelled target, next to
the candidate's measured 5-fold cross-validated linear-probe accuracy; Kendall's tau-b and
weighted tau between each score and that accuracy say which score ranks candidates right.

    .venv/bin/python benchmarks/rank_lite_layers.py                 # digits-target, animal-shape
    .venv/bin/python benchmarks/rank_lite_layers.py --targets digits-target --per-class 30

Extraction goes through the cache (EMBEDKIT_HOME or ~/.cache/embedkit): the first run embeds
each target 15 times (12 candidates + 3 logits layers) on the CPU; a rerun only scores.
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


def run(target: str, per_class: int, out: dict):
    folder = samples.export(target, per_class=per_class)
    print(f"\n== {target}: {per_class} images per class ({folder})", flush=True)
    started = time.perf_counter()
    ranking = rank_models(str(folder), MODELS, metrics=list(SCORES), validate=True,
                          layers=LAYERS, progress=False,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"({time.perf_counter() - started:.0f} s including extraction)")
    names = list(SCORES)
    header = ["candidate", "accuracy", *names]
    print("  ".join(f"{h:>13}" for h in header))
    for row in sorted(ranking.rows, key=lambda r: -r["accuracy"]):
        print("  ".join([f"{row['candidate']:>13}"[-28:], f"{row['accuracy']:>13.4f}",
                         *(f"{row[n]:>13.4g}" for n in names)]))
    print("\nscore vs measured 5-fold linear-probe accuracy:")
    print(f"{'score':>14} {'kendall tau':>12} {'p':>8} {'weighted tau':>13}")
    for v in ranking.validation:
        print(f"{v['metric']:>14} {v['kendall_tau']:>12.3f} {v['p_value']:>8.3g} "
              f"{v['weighted_tau']:>13.3f}")
    for note in ranking.notes:
        print("note:", note)
    out[target] = ranking.as_dict()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["digits-target", "animal-shape"])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--json", default=None, help="Also write the full results here.")
    args = parser.parse_args()
    out = {}
    for target in args.targets:
        run(target, args.per_class, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
