"""Fine-tuning the top blocks against the frozen linear probe, on the same held-out split.

Exports `--per-class` images of each class of a bundled set, fine-tunes `--model` on it
(`embedkit.finetune(..., compare_probe=True)`: the probe is logistic regression on the frozen
features at the same layer, C by stratified CV, trained on the same training rows and scored on
the same validation rows), and prints both accuracies, the epochs run and the wall time of each.

    python benchmarks/finetune_vs_probe.py                                   # digits 5-9, CPU
    python benchmarks/finetune_vs_probe.py --set animal-shape --per-class 30 --unfreeze top-3
    python benchmarks/finetune_vs_probe.py --device cuda --per-class 200 --epochs 15
    python benchmarks/finetune_vs_probe.py --per-class 4 --epochs 1          # a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from embedkit import samples
from embedkit.finetune import DEFAULTS, finetune


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="digits-target", help="a bundled image sample")
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--unfreeze", default="top-3")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-decay", type=float, default=DEFAULTS.lr_decay)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--augment", default="crop=0.85,rotate=10",
                    help="recipe, or 'none' (digits must not be flipped)")
    ap.add_argument("--val", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=None,
                    help="px for both the fine-tuning and the probe (default: the weights' own)")
    ap.add_argument("--patience", type=int, default=DEFAULTS.patience)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="print the whole training record")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="embedkit-finetune-bench-"))
    try:
        data = samples.export(args.set, work / "data", per_class=args.per_class)
        started = time.perf_counter()
        backbone = finetune(
            data, args.model, work / "out", layer=args.layer, unfreeze=args.unfreeze,
            lr=args.lr, lr_decay=args.lr_decay, epochs=args.epochs,
            augment=None if args.augment == "none" else args.augment, val=args.val,
            batch_size=args.batch_size, input_size=args.input_size, patience=args.patience,
            seed=args.seed, device=args.device, compare_probe=True, cache=work / "cache")
        wall = time.perf_counter() - started
        t = backbone.training
        probe = t["probe"]
        if args.json:
            print(json.dumps(t, indent=2))
        print(f"{args.set}, {args.per_class} per class: {t['items']['train']} train / "
              f"{t['items']['val']} validation images; {args.model}, unfreeze {args.unfreeze} "
              f"({', '.join(t['tuned_blocks']) or 'head only'}), lr {args.lr:g} x "
              f"{args.lr_decay:g}/block, augment {args.augment}, input "
              f"{backbone.preprocessing.input_size} px, device {t['device']}")
        for h in t["history"]:
            print(f"  epoch {h['epoch']:2d}: train loss {h['train_loss']:.4f}  val loss "
                  f"{h['val_loss']:.4f}  val accuracy {h['val_accuracy']:.3f}")
        print(f"fine-tuned    val accuracy {t['val_accuracy']:.3f} (best epoch {t['best_epoch']} "
              f"of {t['epochs_run']}{', stopped early' if t['stopped_early'] else ''}; "
              f"{t['train_seconds']:.0f} s)")
        if "val_accuracy" in probe:
            print(f"frozen probe  val accuracy {probe['val_accuracy']:.3f} ({probe['classifier']} "
                  f"{probe['best_params']}, {probe['seconds']:.0f} s incl. extraction)")
            print(f"difference    {t['val_accuracy'] - probe['val_accuracy']:+.3f}; "
                  f"wall time {wall:.0f} s in all")
        else:
            print(f"frozen probe  {probe['skipped']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
