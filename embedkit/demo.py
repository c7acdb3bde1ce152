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
    ("Bundled data, offline: digits 5-9 (the target task of the transfer example)",
     ["datasets", "export", "digits-target", f"{OUT}/digits-target", "--per-class", "20"]),
    ("The default image backbone and where its weights come from",
     ["models", "--modality", "image", "--available"]),
    ("Extract frozen EfficientNet-Lite0 embeddings (pooled penultimate layer) through the cache",
     ["extract", f"{OUT}/digits-target", "--model", "efficientnet_lite0",
      "-o", f"{OUT}/digits-target.parquet"]),
    ("The same extraction again: every vector comes from the cache",
     ["extract", f"{OUT}/digits-target", "--model", "efficientnet_lite0",
      "-o", f"{OUT}/digits-target.parquet"]),
    ("What the cache holds", ["cache", "info"]),
]


def run_step(title: str, args: list[str]) -> None:
    print(f"\n== {title}\n$ embedkit {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args])
    if proc.returncode != 0:
        sys.exit(f"demo step failed (exit {proc.returncode}): embedkit {shlex.join(args)}")
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def main() -> None:
    for title, args in STEPS:
        run_step(title, args)
    print(f"\nDone. Outputs are in ./{OUT}")


if __name__ == "__main__":
    main()
