"""Time of each transferability score on 10,000 x 1,280 features with 10 classes.

The features are synthetic (class means + Gaussian noise, float32 like extracted embeddings;
leep / nce get 1,000 synthetic source-class logits). Every score runs `--repeat` times in this
process and the fastest run counts (the machine is shared: the minimum is the least disturbed);
seconds are printed with the ratio to the linear-probe baseline (5-fold CV logistic
regression) timed in the same run.

    .venv/bin/python benchmarks/transferability.py [--n 10000] [--dim 1280] [--classes 10]
                                                   [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embedkit.transfer import SCORES


def data(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    means = rng.normal(0, 1, (classes, dim)) / np.sqrt(dim) * 3  # classes overlap
    features = (means[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    head = rng.normal(0, 1, (dim, 1000)).astype(np.float32) / np.sqrt(dim)
    logits = features @ head
    return features, logits, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    features, logits, y = data(args.n, args.dim, args.classes)
    print(f"{args.n} x {args.dim} features, {args.classes} classes "
          f"(leep/nce: {logits.shape[1]} source logits)")
    seconds, values = {}, {}
    for name, score in SCORES.items():
        inputs = logits if score.needs == "source classifier" else features
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            values[name] = score.compute(inputs, y)
            runs.append(time.perf_counter() - started)
        seconds[name] = min(runs)
        print(f"  {name:14s} {seconds[name]:8.2f} s (runs: {', '.join(f'{r:.1f}' for r in runs)})"
              f"   value {values[name]:.4g}", flush=True)
    base = seconds["linear-probe"]
    print(f"\n{'score':14s} {'seconds':>8s} {'x linear-probe':>15s}")
    for name, s in seconds.items():
        print(f"{name:14s} {s:8.2f} {s / base:15.3f}")


if __name__ == "__main__":
    main()
