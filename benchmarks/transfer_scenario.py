"""The seeds' transfer scenario end to end on bundled data: frozen features against raw pixels.

For each target set a stratified half is held out for testing; a linear SVM (standardised
features, C chosen by stratified CV, seed 0) is trained on k items per class of the other half,
for several k, on
  - raw pixels (greyscale, flattened): the baseline;
  - EfficientNet-Lite0 features (ImageNet, frozen; pre_logits, and any --layers asked for);
  - on digits 5-9 only: the hidden layer of an MLP trained on digits 0-4 (the source task), frozen
    and reused: same domain, different task.
Prints test accuracy per representation and k, and the gain of each over pixels.

    python benchmarks/transfer_scenario.py                 # digits, animal-shape, lfw-subset
    python benchmarks/transfer_scenario.py --sets digits-target --layers pre_logits,blocks.4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from embedkit import samples
from embedkit.classify import holdout_split, train
from embedkit.embeddings import EmbeddingSet
from embedkit.extract import extract
from embedkit.inputs import load_image

SETS = {"digits-target": 60, "animal-shape": 100, "lfw-subset": 100}


def pixel_set(folder: Path, ids: list[str], labels, name: str = "pixels") -> EmbeddingSet:
    """Raw greyscale pixels of the exported images, flattened, in the order of `ids`."""
    rows = [np.asarray(load_image(str(folder / i)).convert("L"), dtype=np.float32).ravel() / 255
            for i in ids]
    return EmbeddingSet(ids, np.stack(rows), {"label": labels},
                        {"model": name, "fingerprint": f"{name}:{folder}"})


def source_mlp_features(target: EmbeddingSet, seed: int) -> EmbeddingSet:
    """Hidden-layer activations of an MLP trained on digits 0-4 (all of them), applied to the
    target pixels: the source network frozen and reused as a feature extractor."""
    from sklearn.neural_network import MLPClassifier

    folder = samples.export("digits-source")
    ds = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    source = pixel_set(folder, ds, np.asarray([i.split("/")[0] for i in ds], dtype=object))
    y = source.labels.astype(str)
    mlp = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=500, solver="lbfgs",
                        random_state=seed).fit(source.vectors, y)
    print(f"  source MLP on digits 0-4: train accuracy {mlp.score(source.vectors, y):.3f} "
          f"({len(source)} images)", file=sys.stderr)
    hidden = np.maximum(target.vectors @ mlp.coefs_[0] + mlp.intercepts_[0], 0)
    return EmbeddingSet(target.ids, hidden, dict(target.label_columns),
                        {"model": "mlp-digits-0-4", "fingerprint": "mlp-source"})


def first_k_per_class(y, rows, k, seed):
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y[rows]):
        members = rows[y[rows] == c]
        picked.extend(rng.permutation(members)[:k])
    return np.sort(np.asarray(picked))


def run_set(name: str, per_class: int, layers: list[str], ks: list[int], seed: int) -> dict:
    started = time.perf_counter()
    folder = samples.export(name, per_class=per_class)
    reps: dict[str, EmbeddingSet] = {}
    for layer in layers:
        es = extract(folder, "efficientnet_lite0", layer=layer, progress=False)
        print(f"  {name}: lite0 {layer}: {es.summary}", file=sys.stderr)
        reps[f"lite0 {layer}"] = es
    ref = next(iter(reps.values()))
    reps = {"pixels": pixel_set(folder, ref.ids, ref.labels), **reps}
    if name == "digits-target":
        reps["source MLP (0-4)"] = source_mlp_features(reps["pixels"], seed)
    y = np.asarray([str(v) for v in ref.labels], dtype=object)
    train_part, test_part = holdout_split(y, 0.5, seed, "label")
    out = {"set": name, "items": len(y), "classes": len(np.unique(y)), "test": len(test_part),
           "results": []}
    for k in ks:
        rows = first_k_per_class(y, np.sort(train_part), k, seed)
        if len(rows) < 2 * len(np.unique(y)):
            continue
        real_k = int(min(np.unique(y[rows], return_counts=True)[1]))
        cv = min(3, real_k)
        row = {"k": real_k}
        for rep, es in reps.items():
            model = train(es.subset(rows), "svm-linear", cv=cv, seed=seed)
            report = model.evaluate(es.subset(np.sort(test_part)))["label"]
            row[rep] = round(report["accuracy"], 4)
        out["results"].append(row)
        if real_k < k:
            break
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated bundled sets")
    ap.add_argument("--per-class", type=int, default=None,
                    help="images exported per class (default: digits 60, animals 100, lfw 100)")
    ap.add_argument("--layers", default="pre_logits", help="EfficientNet-Lite0 layers")
    ap.add_argument("--k", default="5,10,25,50", help="training items per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    results = []
    for name in args.sets.split(","):
        print(f"{name} ...", file=sys.stderr)
        res = run_set(name, args.per_class or SETS[name], args.layers.split(","),
                      [int(k) for k in args.k.split(",")], args.seed)
        results.append(res)
        print(f"\n{name}: {res['items']} images, {res['classes']} classes, test on "
              f"{res['test']} held-out images; linear-SVM test accuracy ({res['seconds']} s)")
        reps = [c for c in res["results"][0] if c != "k"]
        print("  k/class  " + "  ".join(f"{r:>18}" for r in reps))
        for row in res["results"]:
            print(f"  {row['k']:>7}  " + "  ".join(f"{row[r]:>18.3f}" for r in reps))
        last = res["results"][-1]
        gains = ", ".join(f"{r} {last[r] - last['pixels']:+.3f}" for r in reps if r != "pixels")
        print(f"  at k={last['k']}, gain over pixels: {gains}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
