"""Crash and concurrency harnesses for the cache: the promise is "never a wrong vector, nothing
written is lost".

Crash loop: extraction runs into one cache are SIGKILLed, at random moments and at the store's
named fault points (`EMBEDKIT_FAULT`, see embedkit.store.FAULT_POINTS: before and after a shard's
rename, inside the index transaction, around compaction).  After every kill the cache must open
and verify clean; at the end a run completes and every vector equals an uninterrupted run's, bit
for bit.

Concurrency: several processes extract overlapping data into one cache while others compact and
verify it: no process may fail, no key may be indexed twice, verify stays clean.

The workers use the real extractor (`embedkit.extract`) with `PixelHashBackbone`, a backbone
whose vector is a fixed function of the decoded pixels, so a process starts in well under a
second (no torch import) and a wrong or mixed-up vector is detected exactly.  `--model NAME` runs
the same loop with a real backbone (slower: each process imports torch).

    python benchmarks/crash_loop.py --kills 60 --items 8           # long version
    python benchmarks/crash_loop.py --concurrency --writers 4
The test suite runs short versions (tests/test_crash_and_concurrency.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
if str(HERE.parents[1]) not in sys.path:
    sys.path.insert(0, str(HERE.parents[1]))

from embedkit.backbone import Backbone, WeightsSource, fingerprint_of  # noqa: E402


class PixelHashBackbone(Backbone):
    """A cheap deterministic image backbone: 16 floats drawn from a generator seeded by the
    decoded pixels (so equal pixels give equal vectors, and any mix-up shows)."""

    name, modality, family = "pixel-hash", "image", "test"
    dim = 16
    source = WeightsSource("none needed", True)

    def layers(self):
        return ["hash"]

    def fingerprint(self):
        return fingerprint_of(test="pixel-hash", dim=self.dim)

    def preprocess(self, item):
        from embedkit.inputs import load_image

        return np.asarray(load_image(item), dtype=np.uint8)

    def embed(self, batch):
        out = []
        for pixels in batch:
            seed = int.from_bytes(hashlib.sha256(pixels.tobytes()).digest()[:8], "little")
            out.append(np.random.default_rng(seed).standard_normal(self.dim))
        return np.asarray(out, dtype=np.float32)


#: Only a process that will never end waits this long: a slow or busy machine is never
#: reported as a failure of what is measured (the same rule as tests/hung.py).
HUNG_S = 1800


def _finished(proc: subprocess.Popen) -> tuple:
    """`proc.communicate()`, stopping the harness as "hung" only after HUNG_S."""
    try:
        return proc.communicate(timeout=HUNG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"hung: {proc.args!r} had not ended after {HUNG_S} s") from None


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """n distinct 8x8 PNGs in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        d = folder / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:05d}.png")
    return folder


def worker(cache: str, data: str, model: str | None, compact: bool) -> None:
    """One extraction run (the process the harness kills)."""
    from embedkit.extract import extract
    from embedkit.store import Store

    backbone = model or PixelHashBackbone()
    extract(data, backbone, cache=cache, workers=0, batch_size=4, progress=False, device="cpu")
    if compact:
        with Store(cache) as store:
            store.compact()


def _spawn(cache, data, model=None, compact=False, env=None, args=()):
    cmd = [sys.executable, str(HERE), "--worker", str(cache), str(data), *args]
    if model:
        cmd += ["--model", model]
    if compact:
        cmd.append("--compact")
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _vectors(cache, data, model=None) -> dict[str, np.ndarray]:
    from embedkit.extract import extract

    es = extract(data, model or PixelHashBackbone(), cache=cache, workers=0, batch_size=4,
                 progress=False, device="cpu")
    return dict(zip(es.ids, es.vectors))


def crash_loop(kills: int = 20, items: int = 8, seed: int = 0, model: str | None = None,
               workdir: str | None = None, flush_rows: int = 3) -> dict:
    """Kill extraction runs `kills` times (half at random moments, half at fault points), check
    the cache after each, then finish and compare with an uninterrupted run.  Every cycle adds
    `items` new images, so each run has work to be killed in.  Returns counts."""
    from embedkit.store import FAULT_POINTS, Store

    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="embedkit-crash-"))
    data, cache = work / "data", work / "cache"
    env = {"EMBEDKIT_FLUSH_ROWS": str(flush_rows)}
    # every image exists from the start (so files are old enough for the file-identity cache to
    # remember them); cycle k extracts a manifest of the first (k + 2) * items of them
    cycles = 3 * kills  # a run that ends before its kill (or its fault point) is one more cycle
    make_images(data, (cycles + 2) * items, seed)
    files = sorted(data.rglob("*.png"), key=lambda p: p.name)

    def upto(k):
        manifest = work / f"upto{k}.csv"
        manifest.write_text("path,label\n" + "".join(
            f"{f},{f.parent.name}\n" for f in files[:(k + 2) * items]))
        return manifest

    started = time.perf_counter()
    _finished(_spawn(work / "timing-cache", upto(-1), model, env=env))
    run_seconds = time.perf_counter() - started
    stats = {"kills": 0, "random_kills": 0, "fault_kills": {}, "faults_not_reached": 0,
             "opened_and_verified": 0, "verify_problems": [], "worker_errors": []}
    k = 0
    while stats["kills"] < kills and k < cycles:  # until `kills` processes really died
        subset = upto(k)
        compact = rng.random() < 0.3
        if k % 2:  # a named fault point, at its n-th hit
            point = FAULT_POINTS[(k // 2) % len(FAULT_POINTS)]
            compact = compact or point.startswith("compact")
            repeated = point.startswith(("shard", "index"))  # hit once per shard, not per run
            armed = f"{point}:{rng.randint(1, 2) if repeated else 1}"
            proc = _spawn(cache, subset, model, compact, {**env, "EMBEDKIT_FAULT": armed})
            _, err = _finished(proc)
            if proc.returncode == -9:
                stats["fault_kills"][point] = stats["fault_kills"].get(point, 0) + 1
            else:
                stats["faults_not_reached"] += 1  # nothing left to do at that point
        else:  # a random moment in the run
            proc = _spawn(cache, subset, model, compact, env)
            time.sleep(rng.uniform(0.1, 0.9) * run_seconds)
            proc.kill()
            _, err = _finished(proc)
            stats["random_kills"] += proc.returncode == -9
        stats["kills"] += proc.returncode == -9
        if proc.returncode not in (0, -9):
            stats["worker_errors"].append(err.strip().splitlines()[-1:] or [str(proc.returncode)])
        with Store(cache) as store:
            problems = store.verify()
        stats["opened_and_verified"] += 1
        stats["verify_problems"] += problems
        k += 1
    stats["cycles"] = k
    final = _spawn(cache, data, model, compact=True, env=env)
    _, err = _finished(final)
    if final.returncode != 0:
        stats["worker_errors"].append(err.strip().splitlines()[-1:])
    reference = _vectors(work / "reference-cache", data, model)  # one uninterrupted run
    got = _vectors(cache, data, model)
    stats["items"] = len(reference)
    stats["lost"] = sum(1 for i in reference if i not in got)
    stats["wrong"] = sum(1 for i, v in reference.items()
                         if i in got and not np.array_equal(v, got[i]))
    with Store(cache) as store:
        stats["final_verify_problems"] = store.verify()
    return stats


def concurrency(writers: int = 4, items: int = 40, rounds: int = 8, seed: int = 0,
                workdir: str | None = None) -> dict:
    """`writers` processes extract overlapping halves of one dataset into one cache while a
    maintenance process compacts and verifies it `rounds` times; returns counts."""
    import sqlite3

    from embedkit.store import Store

    work = Path(workdir or tempfile.mkdtemp(prefix="embedkit-concurrency-"))
    data = make_images(work / "data", items, seed)
    files = sorted(p for p in data.rglob("*.png"))
    subsets = []
    for w in range(writers):  # overlapping windows over the files
        start = (w * len(files)) // (writers + 1)
        chosen = files[start:start + len(files) // 2 + 1]
        manifest = work / f"subset{w}.csv"
        manifest.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in chosen))
        subsets.append(manifest)
    reference = _vectors(work / "reference-cache", data)
    cache = work / "cache"
    env = {"EMBEDKIT_FLUSH_ROWS": "3"}
    procs = [_spawn(cache, m, env=env) for m in subsets]
    maint = [_spawn(cache, data, env=env, args=("--maintain", str(rounds))) for _ in range(2)]
    errors = []
    for p in procs + maint:
        out, err = _finished(p)
        if p.returncode != 0:
            errors.append(err.strip().splitlines()[-1:])
    db = sqlite3.connect(cache / "index.sqlite")
    rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT fingerprint || content) FROM vectors"
                      ).fetchone()
    db.close()
    got = _vectors(cache, data)
    with Store(cache) as store:
        problems = store.verify()
    return {"writers": writers, "maintainers": len(maint), "errors": errors,
            "index_rows": rows[0], "duplicate_keys": rows[0] - rows[1],
            "verify_problems": problems,
            "wrong": sum(1 for i, v in reference.items() if not np.array_equal(v, got[i])),
            "lost": sum(1 for i in reference if i not in got)}


def maintain(cache: str, rounds: int) -> None:
    """Compact and verify the cache `rounds` times (beside running writers)."""
    from embedkit.store import Store

    for _ in range(rounds):
        with Store(cache) as store:
            store.compact()
            problems = store.verify()
            if problems:
                raise SystemExit(f"verify during concurrent writes: {problems}")
        time.sleep(0.05)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("CACHE", "DATA"))
    ap.add_argument("--maintain", type=int, default=None)
    ap.add_argument("--compact", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--items", type=int, default=8, help="new images per kill cycle")
    ap.add_argument("--concurrency", action="store_true")
    ap.add_argument("--writers", type=int, default=4)
    args = ap.parse_args(argv)
    if args.worker and args.maintain is not None:
        return maintain(args.worker[0], args.maintain)
    if args.worker:
        return worker(*args.worker, args.model, args.compact)
    started = time.perf_counter()
    if args.concurrency:
        stats = concurrency(args.writers, args.items * 5)
    else:
        stats = crash_loop(args.kills, args.items, model=args.model)
    stats["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
