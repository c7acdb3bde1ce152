"""Where the device-decode path spends its time (GPU machine): each phase alone, in one process,
on photo-sized JPEG files, ResNet-50 (random weights) at batch 256 in bf16.

    python -m benchmarks.gpu_phases --n 8192 --out phases.json

Phases (images/s each): reading the files (thread pool); + nvJPEG decode (batched, and one
image per call); + preprocessing on the device; the whole `embed_stream` without the store; the
whole `embedkit.extract` into a cold store (with its own seconds split: hashing and look-ups
before computing, computing, the rest); the model alone on ready tensors.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from pathlib import Path


def rate(n, seconds):
    return round(n / seconds, 1) if seconds > 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default="phases.json")
    ap.add_argument("--profile", action="store_true", help="cProfile the extract call")
    args = ap.parse_args()
    import torch
    import torchvision

    import embedkit
    from embedkit.device_decode import TensorPreprocess, decode_jpegs, embed_stream
    from embedkit.files import available_cores
    from embedkit.inputs import Item
    from embedkit.registry import create_backbone

    from .gpu import _sync, make_photos_parallel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="embedkit-phases-"))
    make_photos_parallel(tmp / "photos", args.n)
    files = sorted((tmp / "photos").rglob("*.jpg"))
    n, bs, cores = len(files), args.batch, available_cores()
    weights = tmp / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    backbone = create_backbone("resnet50", weights=str(weights)).to(device, "bf16")
    prep = TensorPreprocess(backbone.preprocessing)
    report = {"n": n, "batch": bs, "cores": cores, "device": device}

    def read(path):
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        blobs = list(pool.map(read, files))
    report["read"] = rate(n, time.perf_counter() - t)

    for name, per_call in (("decode_batched", bs), ("decode_one_by_one", 1)):
        decode_jpegs(blobs[:bs], device)
        _sync(device)
        t = time.perf_counter()
        for s in range(0, n, per_call):
            decode_jpegs(blobs[s:s + per_call], device)
        _sync(device)
        report[name] = rate(n, time.perf_counter() - t)

    t = time.perf_counter()
    for s in range(0, n, bs):
        prep(decode_jpegs(blobs[s:s + bs], device))
    _sync(device)
    report["decode_and_preprocess"] = rate(n, time.perf_counter() - t)

    t = time.perf_counter()
    images = [prep(decode_jpegs(blobs[s:s + bs], device)) for s in range(0, min(n, 4 * bs), bs)]
    _sync(device)
    from embedkit.runtimes import feature_model

    model = feature_model(backbone)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
        for x in images:
            model(x.contiguous(memory_format=torch.channels_last))
        _sync(device)
        t = time.perf_counter()
        for _ in range(5):
            for x in images:
                model(x.contiguous(memory_format=torch.channels_last))
        _sync(device)
    report["model_alone"] = rate(5 * sum(len(x) for x in images), time.perf_counter() - t)

    items = [Item(str(i), path=str(p)) for i, p in enumerate(files)]
    for workers in (cores, 2 * cores):
        t = time.perf_counter()
        count = sum(len(idx) for idx, _, _ in embed_stream(backbone, items, device, bs, workers))
        report[f"embed_stream_{workers}_readers"] = rate(count, time.perf_counter() - t)

    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    t = time.perf_counter()
    es = embedkit.extract(tmp / "photos", backbone, cache=tmp / "cache", batch_size=bs,
                          device=device, precision="bf16" if device == "cuda" else "fp32",
                          decode="device", progress=False)
    total = time.perf_counter() - t
    if profile is not None:
        import io
        import pstats

        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(35)
        report["extract_profile"] = out.getvalue().splitlines()[-45:]
    report["extract"] = rate(len(es), total)
    report["extract_seconds"] = {"total": round(total, 2),
                                 "computing": round(es.summary.compute_seconds, 2)}
    print(json.dumps(report, indent=2), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
