"""The GPU run behind benchmarks/gpu.sh: embedkit's CPU-decode and device-decode paths against the
model-alone ceiling, for ResNet-50 and EfficientNet-Lite0, on photo-sized JPEG files.

Per model (batch 256, bf16 autocast, channels-last; all in this one process):
  ceiling       the cut-and-pooled model's forward on ready device tensors
  cpu_decode    embedkit.extract(decode="cpu"): PIL in DataLoader workers, one per core
  device_decode embedkit.extract(decode="device"): nvJPEG + preprocessing on the device
                (run twice, each into a fresh cache: the first warms up, the second counts)
  cosine        per item between the two paths' vectors (bf16), and in fp32 on the first 256
Every run writes into a cold store and must store every file.  Weights are random where no
pretrained file is here (speed does not depend on them).  Results go to --out as JSON after each
step, so a step that times out still leaves the others.

    python -m benchmarks.gpu --out gpu.json [--small]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--small", action="store_true", help="a tiny run (checks the script)")
    ap.add_argument("--n", type=int, default=None, help="JPEG files (default 4096; small: 48)")
    ap.add_argument("--compile", action="store_true", help="also the device path compiled")
    args = ap.parse_args()
    import torch

    import embedkit
    from embedkit.files import available_cores

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    n = args.n or (48 if args.small else 4096)
    batch = 16 if args.small else 256
    report = {"machine": {"device": torch.cuda.get_device_name() if cuda else platform.processor()
                          or "cpu", "cores": available_cores(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "embedkit": embedkit.__file__},
              "images": n, "batch": batch, "precision": "bf16" if cuda else "fp32",
              "models": {}}
    out = Path(args.out)
    save = lambda: out.write_text(json.dumps(report, indent=2))  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="embedkit-gpu-"))
    folder = tmp / "photos"
    t = time.perf_counter()
    make_photos_parallel(folder, n)
    report["photos_s"] = round(time.perf_counter() - t, 1)
    print(f"{n} photos in {report['photos_s']} s; device {report['machine']['device']}",
          flush=True)
    save()
    for name, factory in (("resnet50", resnet50), ("efficientnet_lite0", lite0)):
        row = report["models"][name] = {}
        try:
            measure(row, factory(tmp), folder, device, batch, n, tmp / name, args.compile, save)
        except Exception as exc:  # one model failing must not lose the other's numbers
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        save()
    print(json.dumps(report, indent=2), flush=True)


def make_photos_parallel(folder: Path, n: int):
    from .photos import make_photos

    cores = max(1, min(16, os.cpu_count() or 1))
    chunk = -(-n // cores)
    with concurrent.futures.ProcessPoolExecutor(cores) as pool:
        list(pool.map(make_photos, [folder] * cores, [max(0, min(chunk, n - k * chunk))
                                                      for k in range(cores)],
                      [0] * cores, [k * chunk for k in range(cores)]))


def resnet50(tmp: Path):
    """torchvision ResNet-50 with random weights saved to a local file (`--weights`)."""
    import torch
    import torchvision

    from embedkit.registry import create_backbone

    path = tmp / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return lambda: create_backbone("resnet50", weights=str(path))


def lite0(tmp: Path):
    """EfficientNet-Lite0 with its bundled weights where the package is installed, else timm's
    same architecture with random weights."""
    import torch

    from embedkit.registry import create_backbone

    if create_backbone("efficientnet_lite0").source.available:
        return lambda: create_backbone("efficientnet_lite0")
    import timm

    path = tmp / "lite0-random.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    return lambda: create_backbone("tf_efficientnet_lite0", weights=str(path))


def measure(row, make, folder, device, batch, n, cache, compile, save):
    import torch

    import embedkit
    from embedkit.runtimes import feature_model

    backbone = make()
    row["weights"] = backbone.source.description
    precision = "bf16" if device == "cuda" else "fp32"

    # ceiling: the model alone on ready tensors
    backbone.to(device, precision)
    model = feature_model(backbone)
    size = backbone.preprocessing.input_size
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rounds = 3 if device == "cpu" else 20
    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(2 if device == "cpu" else 5):
            model(x)
        _sync(device)
        t = time.perf_counter()
        for _ in range(rounds):
            model(x)
        _sync(device)
    row["ceiling_img_s"] = round(rounds * batch / (time.perf_counter() - t), 1)
    del model, x
    print(f"  ceiling {row['ceiling_img_s']}", flush=True)
    save()

    def run(decode, tag, precision=precision, subset=None, compile=False):
        target = folder if subset is None else subset
        t = time.perf_counter()
        es = embedkit.extract(target, make(), cache=cache / tag, batch_size=batch, device=device,
                              precision=precision, decode=decode, compile=compile,
                              progress=False)
        seconds = time.perf_counter() - t
        stored = es.summary.computed
        print(f"  {tag}: {stored / seconds:.1f} img/s ({stored} stored, "
              f"{len(es.summary.skipped)} skipped)", flush=True)
        return es, round(stored / seconds, 1), stored

    cpu, row["cpu_decode_img_s"], row["cpu_decode_stored"] = run("cpu", "cpu")
    save()
    run("device", "device-warmup")
    dev, row["device_decode_img_s"], row["device_decode_stored"] = run("device", "device")
    row["device_vs_cpu_decode"] = round(row["device_decode_img_s"] / row["cpu_decode_img_s"], 2)
    row["device_vs_ceiling"] = round(row["device_decode_img_s"] / row["ceiling_img_s"], 3)
    assert cpu.ids == dev.ids
    cos = _cosines(cpu.vectors, dev.vectors)
    row[f"cosine_{precision}"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    save()
    if compile:
        run("device", "compiled-warmup", compile=True)
        _, row["device_decode_compiled_img_s"], _ = run("device", "compiled", compile=True)
        save()
    if precision != "fp32":  # fp32 on a subset: the tolerance without bf16 rounding
        subset = folder.parent / "subset"
        subset.mkdir(exist_ok=True)
        for p in sorted(folder.iterdir())[:256]:
            target = subset / p.name
            if not target.exists():
                os.symlink(p, target)
        a, _, _ = run("cpu", "cpu-fp32", "fp32", subset)
        b, _, _ = run("device", "device-fp32", "fp32", subset)
        cos = _cosines(a.vectors, b.vectors)
        row["cosine_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    print(f"  {row}", flush=True)


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
