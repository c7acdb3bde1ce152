"""`--engine ray` on a local Ray against the plain extractor, the same job in the same process.

    python benchmarks/ray_engine.py [--images 500] [--texts 20000] [--batch-size 32]

Each row is one `embedkit.extract` into a fresh cache, wall time end to end.  The `ray` rows
include starting and stopping the local Ray that embedkit runs without `--address` (the cost a
laptop user pays); the `ray*` rows run in a Ray session already open (the job alone).
Images: the scikit-learn digits (8x8 PNGs) with efficientnet_lite0 at its 224-pixel input;
texts: distinct lines built from gensim's movie-review sentences, with glove-6b-50d.  Prints
seconds, items/s and the ratio to the plain run, and checks that both engines give the same
vectors.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(spec, model, cache, **options):
    import embedkit

    started = time.perf_counter()
    result = embedkit.extract(spec, model, cache=cache, progress=False, **options)
    return result, time.perf_counter() - started


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    import ray

    from embedkit import samples
    from embedkit.files import available_cores

    work = Path(tempfile.mkdtemp(prefix="embedkit-ray-bench-"))
    digits = samples.export("digits", work / "digits", per_class=(args.images + 9) // 10)
    files = sorted(p for p in digits.rglob("*.png"))[:args.images]
    sentences = [line for line in (samples.export("pang-lee-polarity", work / "pl")
                                   / "manifest.csv").read_text().splitlines()[1:]]
    lines = work / "lines.txt"
    lines.write_text("".join(f"{sentences[i % len(sentences)]} {i}\n"
                             for i in range(args.texts)))
    jobs = [("images", [str(p) for p in files], "efficientnet_lite0"),
            ("texts", lines, "glove-6b-50d")]
    print(f"{available_cores()} cores; batch size {args.batch_size}")
    print(f"{'job':<8}{'engine':<8}{'items':>8}{'seconds':>10}{'items/s':>10}{'ratio':>8}")
    for name, spec, model in jobs:
        plain, t_plain = timed(spec, model, work / f"{name}-plain", batch_size=args.batch_size)
        on_ray, t_ray = timed(spec, model, work / f"{name}-ray", batch_size=args.batch_size,
                              engine="ray")
        ray.init(num_cpus=available_cores(), include_dashboard=False)
        try:  # the job alone, in a Ray session that is already running
            in_session, t_session = timed(spec, model, work / f"{name}-session",
                                          batch_size=args.batch_size, engine="ray")
        finally:
            ray.shutdown()
        for other in (on_ray, in_session):
            assert plain.ids == other.ids
            np.testing.assert_allclose(plain.vectors, other.vectors, rtol=1e-5, atol=1e-6)
        for engine, seconds in (("local", t_plain), ("ray", t_ray), ("ray*", t_session)):
            print(f"{name:<8}{engine:<8}{len(plain):>8}{seconds:>10.1f}"
                  f"{len(plain) / seconds:>10.1f}{seconds / t_plain:>8.2f}")
    print("ray: embedkit starts and stops a local Ray; ray*: a Ray session already running")


if __name__ == "__main__":
    main()
