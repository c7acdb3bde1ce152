"""The benchmark suite: one table of ratios, each against a baseline run in the same command.

    python -m benchmarks [--n 64] [--batch-size 32] [--model efficientnet_lite0] [--full]
    make bench

Image extraction runs on photo-sized JPEG files (benchmarks/photos.py) with a timm-built model
(the EfficientNet-Lite family by default), all rows in this one process, so ratios hold on a busy
machine where absolute images/s do not:
  naive loop        for each file: PIL open, the backbone's preprocessing, timm forward at batch 1
                    (the baseline of the extraction rows)
  plain script      timm's own eval transform + a DataLoader with the same workers, channels-last,
                    the same batch size: the best a user writes without embedkit
  embedkit <rt>     embedkit.extract into a fresh cache, end to end (hashing, decoding, store),
                    with each CPU runtime present (torch, onnx, openvino fp32 / bf16 where the
                    CPU has bf16), and on CUDA with decoding on the device
  model alone <rt>  the runtime's forward pass on ready batches: the ceiling of that runtime
  cache hit         a rerun answered from the cache (baseline: the cold torch run)
  1% new            a rerun after adding 1% new files (baseline: the cold torch run)
Then the text, kNN and transferability benchmarks run as they are (small sizes unless --full),
each printing its own ratios against its own baseline.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
OTHERS = {  # script: (quick arguments, full arguments)
    "transferability.py": (["--n", "2000", "--repeat", "1"], []),
    "knn_search.py": (["--n", "100000", "--queries", "200", "--skip", "ivf", "hnsw"], []),
    "analogy_eval.py": (["--per-section", "20"], []),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="photo-sized JPEG files")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="the other benchmarks at full size")
    ap.add_argument("--only-images", action="store_true", help="skip the other benchmarks")
    args = ap.parse_args()
    rows = image_rows(args)
    print_table(rows)
    if not args.only_images:
        for script, (quick, full) in OTHERS.items():
            run_other(script, full if args.full else quick)


def image_rows(args) -> list[tuple[str, float, str]]:
    """(name, images/s, baseline name) for every extraction row."""
    import torch

    import embedkit
    from embedkit.extract import pick_device
    from embedkit.inputs import open_dataset
    from embedkit.registry import create_backbone
    from embedkit.files import available_cores
    from embedkit.runtimes import with_runtime

    from .photos import make_photos

    tmp = Path(tempfile.mkdtemp(prefix="embedkit-bench-"))
    folder = make_photos(tmp / "photos", args.n)
    items = open_dataset(folder).items
    n, bs = len(items), args.batch_size
    device = pick_device(args.device)
    backbone = create_backbone(args.model).to(device, "fp32")
    model = backbone.model  # weights loaded before anything is timed
    workers = available_cores()
    print(f"{n} JPEG files 500x375, {args.model}, batch {bs}, device {device}, "
          f"{workers} cores, torch threads {torch.get_num_threads()}", flush=True)
    rows = []

    def add(name, seconds, baseline):
        rows.append((name, n / seconds, baseline))
        print(f"  {name}: {n / seconds:.1f} img/s", flush=True)

    # naive loop: what people write first
    from PIL import Image

    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    t = time.perf_counter()
    with torch.no_grad():
        for it in items:
            x = backbone.preprocessing(Image.open(it.path).convert("RGB"))[None].to(device)
            plain.forward_head(plain.forward_features(x), pre_logits=True).cpu()
    add("naive loop", time.perf_counter() - t, "")

    add("plain script", plain_script(model, items, bs, workers, device), "naive loop")

    runtimes = ["torch"] + [r for r, module in (("onnx", "onnxruntime"), ("openvino", "openvino"))
                            if _has(module)]
    variants = [(r, "fp32") for r in runtimes]
    if "openvino" in runtimes and _cpu_has_bf16():
        variants.append(("openvino", "bf16"))
    ready = [backbone.collate([backbone.preprocess(it) for it in items[i:i + bs]])
             for i in range(0, n, bs)]
    for runtime, precision in variants:
        label = runtime if runtime == "torch" else f"{runtime} {precision}"
        if runtime != "torch" and device != "cpu":
            continue
        rb = with_runtime(create_backbone(args.model), runtime, tmp / "cache").to("cpu", precision)
        t = time.perf_counter()
        rb.embed(ready[0][:2])  # export / compile once, outside the timings
        if runtime != "torch":
            print(f"  ({runtime} export + compile {time.perf_counter() - t:.1f} s, once per "
                  "model)", flush=True)
        t = time.perf_counter()
        embedkit.extract(folder, rb, cache=tmp / f"cache-{label}", batch_size=bs, device=device,
                         precision=precision, progress=False, decode="cpu")
        add(f"embedkit {label}", time.perf_counter() - t, "naive loop")
        t = time.perf_counter()
        for batch in ready:
            rb.embed(batch)
        add(f"model alone {label}", time.perf_counter() - t, "naive loop")
    if device.startswith("cuda"):
        t = time.perf_counter()
        embedkit.extract(folder, create_backbone(args.model), cache=tmp / "cache-gpu",
                         batch_size=bs, device=device, progress=False, decode="device")
        add("embedkit decode on device", time.perf_counter() - t, "naive loop")

    # the cache: a rerun, and a rerun after 1% new files
    t = time.perf_counter()
    embedkit.extract(folder, backbone, cache=tmp / "cache-torch", batch_size=bs, device=device,
                     progress=False)
    rows.append(("cache hit", n / (time.perf_counter() - t), "embedkit torch"))
    make_photos(folder, max(1, math.ceil(n / 100)), start=n)
    t = time.perf_counter()
    embedkit.extract(folder, backbone, cache=tmp / "cache-torch", batch_size=bs, device=device,
                     progress=False)
    rows.append(("1% new files", n / (time.perf_counter() - t), "embedkit torch"))
    return rows


def plain_script(model, items, batch_size, workers, device) -> float:
    """Seconds for timm's eval transform + DataLoader + channels-last forward over the files."""
    import timm.data
    import torch
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return transform(Image.open(items[i].path).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device != "cpu")
    t = time.perf_counter()
    with torch.inference_mode():
        for x in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            model.forward_head(model.forward_features(x), pre_logits=True).cpu()
    return time.perf_counter() - t


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def print_table(rows):
    speed = {name: rate for name, rate, _ in rows}
    print(f"\n{'row':<28}{'img/s':>10}   ratio")
    for name, rate, baseline in rows:
        ratio = f"{rate / speed[baseline]:6.2f}x {baseline}" if baseline else "  1.00  (baseline)"
        print(f"{name:<28}{rate:>10.1f}   {ratio}")
    print(flush=True)


def run_other(script: str, arguments: list[str]):
    print(f"== benchmarks/{script} {' '.join(arguments)}", flush=True)
    try:
        done = subprocess.run([sys.executable, str(HERE / script), *arguments], timeout=1800,
                              capture_output=True, text=True, env={**os.environ})
        print(done.stdout.rstrip() or done.stderr.strip().splitlines()[-1:], flush=True)
    except subprocess.TimeoutExpired:
        print("  (stopped after 30 minutes)")


if __name__ == "__main__":
    main()
