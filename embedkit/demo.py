"""`make demo`: the main job on the bundled offline defaults, as a user types it.

Each step prints the `embedkit` command it runs, then that command's output.  Files go to
./demo-output; vectors go to the normal cache (~/.cache/embedkit or $EMBEDKIT_HOME), so a second
`make demo` answers the extraction from the cache.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

OUT = "demo-output"

STEPS: list[tuple[str, list[str]]] = [
    ("Bundled data, offline: digits 5-9 (the target task of the transfer example), "
     "20 training and 10 test images per class, disjoint",
     ["datasets", "export", "digits-target", f"{OUT}/digits-train", "--per-class", "20"]),
    ("", ["datasets", "export", "digits-target", f"{OUT}/digits-test", "--per-class", "10",
          "--skip", "20"]),
    ("The image backbones whose weights are on this machine",
     ["models", "--modality", "image", "--available"]),
    ("Extract frozen EfficientNet-Lite0 embeddings (pooled penultimate layer) through the cache",
     ["extract", f"{OUT}/digits-train", "--model", "efficientnet_lite0",
      "-o", f"{OUT}/digits-train.parquet"]),
    ("The same extraction again: every vector comes from the cache",
     ["extract", f"{OUT}/digits-train", "--model", "efficientnet_lite0",
      "-o", f"{OUT}/digits-train.parquet"]),
    ("What the cache holds", ["cache", "info"]),
    ("Train a linear SVM on the frozen features (C by stratified 5-fold CV)",
     ["train", f"{OUT}/digits-train.parquet", "-c", "svm-linear", "--cv", "5",
      "-o", f"{OUT}/digits-svm.skops"]),
    ("Evaluate it on the unseen test images (extracted through the model's recorded backbone)",
     ["evaluate", f"{OUT}/digits-svm.skops", f"{OUT}/digits-test",
      "--confusion", f"{OUT}/confusion.png"]),
    ("Predict raw images end to end",
     ["predict", f"{OUT}/digits-svm.skops", f"{OUT}/digits-test",
      "-o", f"{OUT}/predictions.csv"]),
    ("Word vectors (bundled GloVe 6B 50-d): nearest words by cosine",
     ["similar", "frog", "-k", "5"]),
    ("The seeds' analogy: king - man + woman (query words left out of the answers)",
     ["analogy", "king - man + woman", "-k", "3"]),
    ("The seeds' cosine example on two 2-d vectors", ["cosine", "-0.4,0.8", "-0.3,0.2"]),
    ("Sentence similarity with the bundled all-MiniLM-L6-v2",
     ["cosine", "A man is playing a guitar.", "Someone is playing an instrument.",
      "--model", "all-minilm-l6-v2"]),
    ("Texts through the same extractor and cache: 200 movie-review sentences as GloVe means",
     ["extract", "pang-lee-polarity", "-o", f"{OUT}/reviews.parquet"]),
    ("Candidate sources: digits 0-4, animal silhouettes, faces (bundled)",
     ["datasets", "export", "digits-source", f"{OUT}/digits-source", "--per-class", "10"]),
    ("", ["datasets", "export", "animal-shape", f"{OUT}/animal-shape", "--per-class", "5"]),
    ("", ["datasets", "export", "lfw-subset", f"{OUT}/lfw-subset", "--per-class", "25"]),
    ("Pick the source most similar to the target (mean embeddings, the seed method, and EMD)",
     ["rank-sources", f"{OUT}/digits-train", "--sources", f"{OUT}/digits-source",
      f"{OUT}/animal-shape", f"{OUT}/lfw-subset", "--model", "efficientnet_lite0",
      "--metric", "cosine-mean", "--metric", "emd"]),
    ("All pairwise similarities, saved as a heatmap",
     ["similarity", f"{OUT}/digits-train", f"{OUT}/digits-source", f"{OUT}/animal-shape",
      f"{OUT}/lfw-subset", "--heatmap", f"{OUT}/similarity.png"]),
    ("The rule of thumb: how to transfer from that source",
     ["advise", f"{OUT}/digits-train", "--source", f"{OUT}/digits-source"]),
    ("The whole study on one page: closest source, ranked layers (validated), the rule of "
     "thumb, a nested-CV classifier, the embedding map and the most confused images",
     ["study", f"{OUT}/digits-train", "--sources", f"{OUT}/digits-source",
      f"{OUT}/animal-shape", "--budget", "10", "-o", f"{OUT}/study"]),
]


def run_step(title: str, args: list[str]) -> None:
    print(f"\n== {title}" if title else "", f"\n$ embedkit {shlex.join(args)}", sep="", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args])
    if proc.returncode != 0:
        sys.exit(f"demo step failed (exit {proc.returncode}): embedkit {shlex.join(args)}")
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def main() -> None:
    for title, args in STEPS:
        run_step(title, args)
    print(f"\nDone. Outputs are in ./{OUT}; the study page: ./{OUT}/study/index.html")


if __name__ == "__main__":
    main()
