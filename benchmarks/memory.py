"""Peak memory of streaming extraction against dataset size: flat means bounded.

    python -m benchmarks.memory [--images 2000 20000 100000] [--texts 20000 100000 1000000]
                                [--image-model pixel-hash|efficientnet_lite0 ...]
                                [--image-options runtime=openvino ...]

Each row is a fresh process (its peak RSS is its own, `ru_maxrss`) extracting into a fresh
cache and writing a folder of Parquet parts (`output="out/"`), then `export`ing the same
selection from the cache.  Images are animal-shape silhouettes (28x28 PNG) repeated with
distinct bytes (the copy number in a PNG text chunk: every file has its own content key, so
every one is computed); texts are lines of GloVe words with their line number, embedded by
GloVe 6B 50-d.  The image model is EfficientNet-Lite0 by default; `--image-model pixel-hash`
(benchmarks/crash_loop.py: decodes each image and hashes its pixels into 16 floats) measures
the same pipeline (walk, hash, decode, store, output) at sizes Lite0 would take an hour for on
two cores: a model's own memory is per batch and does not grow with n either.  The ratio column
is each row's peak against the smallest size's: near 1.0 means memory does not grow with n.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the cat sat on a mat with dog king queen man woman river bank money city north "
         "south water fire stone light house").split()


def make_images(folder: Path, n: int) -> Path:
    from PIL import Image, PngImagePlugin

    from embedkit.samples import animal_shape_arrays

    images, labels = animal_shape_arrays()
    for i in range(n):
        sub = folder / str(int(labels[i % len(labels)]))
        sub.mkdir(parents=True, exist_ok=True)
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", str(i))
        Image.fromarray(images[i % len(images)]).save(sub / f"{i:07d}.png", pnginfo=info)
    return folder


def make_texts(path: Path, n: int) -> Path:
    import random

    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            f.write(" ".join(rng.choices(WORDS, k=8)) + f" {i}\n")
    return path


def measure(kind: str, n: int, work: Path, options: dict) -> dict:
    """Run in a child process: extract n items streaming into parts, then export them."""
    import embedkit

    data = make_images(work / "images", n) if kind == "images" else \
        make_texts(work / "lines.txt", n)
    model = options.pop("model", "glove-6b-50d")
    if model == "pixel-hash":
        from benchmarks.crash_loop import PixelHashBackbone

        model = PixelHashBackbone()
    started = time.perf_counter()
    es = embedkit.extract(data, model, cache=work / "cache", output=work / "out/",
                          progress=False, **options)
    seconds = time.perf_counter() - started
    exported = embedkit.extract(data, model, cache=work / "cache", output=work / "export/",
                                progress=False, cached_only=True, **options)
    assert len(exported) == len(es) == n, (len(exported), len(es), n)
    return {"kind": f"{kind} ({getattr(model, 'name', model)})", "n": n, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "seconds": seconds, "items_per_s": n / seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="*", default=[2000, 20000, 100000])
    ap.add_argument("--texts", type=int, nargs="*", default=[20000, 100000, 1000000])
    ap.add_argument("--image-model", default="efficientnet_lite0")
    ap.add_argument("--image-options", nargs="*", default=[],
                    help="extract options for the image rows, e.g. runtime=openvino "
                         "precision=bf16 (the fastest CPU path makes large n affordable)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "N", "OPTIONS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, n, options = args.child
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(measure(kind, int(n), Path(work), json.loads(options))))
        return
    image_options = {**dict(o.split("=", 1) for o in args.image_options),
                     "model": args.image_model}
    rows = []
    for kind, sizes, options in (("images", args.images, image_options),
                                 ("texts", args.texts, {})):
        for n in sizes:
            out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", kind,
                                  str(n), json.dumps(options)], capture_output=True, text=True,
                                 env={**os.environ, "EMBEDKIT_HOME": tempfile.gettempdir()})
            if out.returncode:
                sys.exit(f"{kind} {n}: failed\n{out.stderr[-2000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print_row(rows[-1], rows, flush=True)


def print_row(row, rows, flush=False):
    if len(rows) == 1 or rows[-2]["kind"] != row["kind"]:
        print(f"\n{'kind':26} {'items':>9} {'peak RSS MB':>12} {'x smallest':>10} "
              f"{'seconds':>9} {'items/s':>9}")
    first = next(r for r in rows if r["kind"] == row["kind"])
    print(f"{row['kind']:26} {row['n']:>9,} {row['peak_mb']:>12.0f} "
          f"{row['peak_mb'] / first['peak_mb']:>10.2f} {row['seconds']:>9.1f} "
          f"{row['items_per_s']:>9.0f}", flush=flush)


if __name__ == "__main__":
    main()
