"""Extraction throughput: embedkit against a naive per-image loop and the bare forward pass.

All three run in this one process on the same images and model, so the ratios hold even on a
noisy machine (absolute images/s do not):
  naive    - for each image: PIL open, preprocess, timm forward at batch 1 (what people write
             first; needs a timm-built model such as the EfficientNet-Lite family)
  embedkit - embedkit.extract into a fresh cache (hashing, DataLoader workers, batching, store)
  forward  - the model's forward pass alone on pre-made batches (the ceiling)
Then a rerun of embedkit.extract on the same folder, answered from the cache.

    python benchmarks/extract_throughput.py [--n 128] [--batch-size 32] [--model efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="images (animal-shape silhouettes)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import embedkit
    from embedkit.extract import pick_device
    from embedkit.inputs import open_dataset
    from embedkit.registry import create_backbone
    from embedkit.samples import export

    tmp = Path(tempfile.mkdtemp(prefix="embedkit-bench-"))
    folder = export("animal-shape", tmp / "data", per_class=max(1, args.n // 10))
    items = open_dataset(folder).items
    n = len(items)
    device = pick_device(args.device)
    backbone = create_backbone(args.model).to(device, "fp32")
    backbone.model  # load weights before timing anything
    print(f"{n} images, {args.model}, device {device}, torch threads {torch.get_num_threads()}")

    # naive loop, batch 1: the timm model as loaded, default memory format, no embedkit
    import copy

    from PIL import Image

    plain = copy.deepcopy(backbone.model).to(memory_format=torch.contiguous_format)
    t = time.perf_counter()
    naive = []
    with torch.no_grad():
        for it in items:
            x = backbone.preprocessing(Image.open(it.path).convert("RGB"))[None]
            naive.append(plain.forward_head(plain.forward_features(x), pre_logits=True).numpy())
    naive_s = time.perf_counter() - t

    # embedkit into a fresh cache
    t = time.perf_counter()
    es = embedkit.extract(folder, backbone, cache=tmp / "cache", batch_size=args.batch_size,
                          device=device, precision="fp32", progress=False)
    ek_s = time.perf_counter() - t
    assert np.allclose(np.concatenate(naive), es.vectors, atol=1e-4), "same vectors either way"

    # forward alone on ready batches
    batches = [backbone.collate([backbone.preprocess(it) for it in items[i:i + args.batch_size]])
               for i in range(0, n, args.batch_size)]
    t = time.perf_counter()
    for b in batches:
        backbone.embed(b)
    fwd_s = time.perf_counter() - t

    # rerun: everything from the cache
    t = time.perf_counter()
    again = embedkit.extract(folder, backbone, cache=tmp / "cache", progress=False)
    cached_s = time.perf_counter() - t
    assert again.summary.computed == 0

    rate = lambda s: n / s
    print(f"naive per-image loop : {rate(naive_s):8.1f} img/s")
    print(f"embedkit extract     : {rate(ek_s):8.1f} img/s   {naive_s / ek_s:5.2f}x the naive loop, "
          f"{fwd_s / ek_s:5.2f} of the forward-only ceiling")
    print(f"forward pass alone   : {rate(fwd_s):8.1f} img/s")
    print(f"rerun from cache     : {rate(cached_s):8.1f} img/s   {ek_s / cached_s:5.1f}x the first run")


if __name__ == "__main__":
    main()
