"""CLI start-up: the everyday commands against a bare `python -c "import torch"`, measured in the
same run (median of repeats; each command is a fresh process, as a user runs it).

    python benchmarks/startup.py [--repeats 3]

Prints seconds and the difference to the bare import: `embedkit --help`, `embedkit models` warm
and cold (a fresh cache folder: torchvision's model list is remembered per version), a fully
cached `extract` of 100 images, and `predict` of those 100 images from the cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMBEDKIT = [sys.executable, "-m", "embedkit.cli.main"]


def timed(cmd, env, repeats) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="embedkit-startup-"))
    env = {**os.environ, "EMBEDKIT_HOME": str(work / "cache")}
    data = work / "digits"
    subprocess.run([*EMBEDKIT, "datasets", "export", "digits-target", str(data), "--per-class",
                    "20"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*EMBEDKIT, "extract", str(data), "-q"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fills the cache
    model = work / "digits.skops"
    subprocess.run([*EMBEDKIT, "train", str(data), "-o", str(model), "--cv", "2", "-q"],
                   env=env, check=True, stdout=subprocess.DEVNULL)

    bare = timed([sys.executable, "-c", "import torch"], env, args.repeats)
    rows = [("python -c 'import torch' (baseline)", bare)]

    def cold_models():
        fresh = {**env, "EMBEDKIT_HOME": tempfile.mkdtemp(prefix="embedkit-cold-")}
        return timed([*EMBEDKIT, "models"], fresh, 1)

    rows += [
        ("embedkit --help", timed([*EMBEDKIT, "--help"], env, args.repeats)),
        ("embedkit models (warm)", timed([*EMBEDKIT, "models"], env, args.repeats)),
        ("embedkit models (cold)", cold_models()),
        ("embedkit extract, 100 images all cached",
         timed([*EMBEDKIT, "extract", str(data), "-q"], env, args.repeats)),
        ("embedkit predict, 100 images from the cache",
         timed([*EMBEDKIT, "predict", str(model), str(data), "-q"], env, args.repeats)),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'command':<{width}}  seconds  vs bare import torch")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f}  {seconds - bare:+.2f} s")


if __name__ == "__main__":
    main()
