"""The ranking benchmark: does each score order model/layer candidates as measuring them would?

Targets: every bundled labelled image set (digits-target, digits-source, digits, animal-shape,
lfw-subset = faces vs non-faces) at 10, 20 and 30 images per class. Candidates (16): the offline
backbones EfficientNet-Lite0/1/2 at blocks.3, blocks.4, blocks.5 and pre_logits, plus a randomly
initialised EfficientNet-Lite0 (seeded, saved as safetensors) at blocks.4, blocks.5, pre_logits
and bn2: the sanity anchor that must rank last or near it (sklearn.metrics.ndcg_score is not
used: the anchors are checked directly). leep / nce read each pretrained model's ImageNet head.

Ground truth: the mean accuracy of a logistic-regression probe over 10 repetitions of stratified
5-fold CV with seeds (1000..1009) that neither the scores nor the default's own probe
(embedkit.ranking.PROBE_SEED) use. For each setting and score: Kendall's tau-b, weighted tau
and top-1 regret (ground-truth accuracy of the true best minus that of the score's pick), then
the means over settings, each score's time over all its settings, and the "ceiling": the tau
between two disjoint halves of the ground truth's repetitions (how well measuring agrees with
itself).

    .venv/bin/python benchmarks/rank_lite_layers.py --extract-only   # fill the cache (slow)
    .venv/bin/python benchmarks/rank_lite_layers.py                  # score and summarise
    .venv/bin/python benchmarks/rank_lite_layers.py --targets digits-target --per-class 30

Extraction goes through the cache (EMBEDKIT_HOME or ~/.cache/embedkit); smaller sizes are the
first images of the larger ones and digits shares its images with digits-source/-target, so a
rerun only scores. Scoring runs single-threaded BLAS when OMP_NUM_THREADS=1 is set (steadier on
a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

TARGETS = ["digits-target", "digits-source", "digits", "animal-shape", "lfw-subset"]
PER_CLASS = [10, 20, 30]
MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
LAYERS = ["blocks.3", "blocks.4", "blocks.5", "pre_logits"]
RANDOM_MODEL = "timm/tf_efficientnet_lite0"  # the same architecture as Lite0, random weights
RANDOM_LAYERS = ["blocks.4", "blocks.5", "bn2", "pre_logits"]
TRUTH_SEEDS = list(range(1000, 1010))


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=TARGETS)
    parser.add_argument("--per-class", type=int, nargs="+", default=PER_CLASS)
    parser.add_argument("--extract-only", action="store_true")
    parser.add_argument("--json", default=None, help="Also write the full results here.")
    args = parser.parse_args()
    from embedkit import samples

    if args.extract_only:
        for target in args.targets:
            started = time.perf_counter()
            candidate_sets(str(samples.export(target, per_class=max(args.per_class))))
            print(f"{target}: extracted in {time.perf_counter() - started:.0f} s", flush=True)
        return


if __name__ == "__main__":
    main()
