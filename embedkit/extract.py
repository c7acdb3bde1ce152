"""Batched frozen extraction into the store.

Items are hashed (stat cache for files), looked up in the store, and only the missing ones are
computed: decoded and preprocessed in DataLoader workers, embedded in batches on the device,
written to the store every few thousand rows.  A bad item is reported and skipped (or, with
`strict`, stops the run after what was already computed is flushed).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .embeddings import EmbeddingSet, is_embeddings_file, load_embeddings
from .errors import BadInputError, EmbedkitError, UsageError, WeightsUnavailable
from .inputs import Dataset, Item, open_dataset, text_sha256
from .registry import create_backbone, default_model
from .store import Store

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Summary:
    items: int = 0
    cache_hits: int = 0
    computed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    seconds: float = 0.0
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)  # backbone reports, e.g. OOV rates

    @property
    def throughput(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"items": self.items, "cache_hits": self.cache_hits, "computed": self.computed,
                "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
                "seconds": round(self.seconds, 3), "items_per_s": round(self.throughput, 2),
                "device": self.device, "notes": self.notes}

    def __str__(self):
        lines = [f"{self.items} items: {self.cache_hits} from cache, {self.computed} computed, "
                 f"{len(self.skipped)} skipped"
                 + (f"; {self.throughput:.1f} items/s on {self.device}" if self.computed else "")]
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  skipped {i}: {r}" for i, r in self.skipped]
        return "\n".join(lines)


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise UsageError(f"--device {device}: not a device; use auto, cpu, cuda, cuda:N "
                             "or mps") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if kind == "mps" and not (getattr(torch.backends, "mps", None)
                                  and torch.backends.mps.is_available()):
            raise UsageError(f"--device {device}: MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}': choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision != "fp32" and device == "cpu":
        raise UsageError(f"--precision {precision} needs a GPU; on the CPU use fp32")
    return precision


class _Items:
    """torch Dataset over items: preprocess in the worker, never raise (errors travel back)."""

    def __init__(self, items: list[Item], backbone: Backbone):
        self.items, self.backbone = items, backbone

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        try:
            return i, self.backbone.preprocess(self.items[i]), None
        except EmbedkitError as exc:
            return i, None, str(exc)
        except Exception as exc:  # a plugin's own failure on one item
            return i, None, f"{type(exc).__name__}: {exc}"


class _Collate:
    def __init__(self, backbone):
        self.backbone = backbone

    def __call__(self, samples):
        ok = [(i, s) for i, s, err in samples if err is None]
        bad = [(i, err) for i, _, err in samples if err is not None]
        batch = self.backbone.collate([s for _, s in ok]) if ok else None
        return [i for i, _ in ok], batch, bad


def _progress(total: int, enabled: bool | None, unit: str):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def content_keys(dataset: Dataset, store: Store) -> tuple[list[str | None], list[tuple[str, str]]]:
    """sha256 per item (None where unusable) and the (id, reason) of the unusable items."""
    usable = [it for it in dataset.items if it.error is None]
    if dataset.modality == "text":
        hashes = {id(it): text_sha256(it.text) for it in usable}
    else:
        by_path = store.file_hashes([it.path for it in usable])
        hashes = {id(it): by_path[it.path] for it in usable}
    keys, bad = [], []
    for it in dataset.items:
        h = hashes.get(id(it))
        if isinstance(h, str):
            keys.append(h)
            continue
        keys.append(None)
        bad.append((it.id, it.error or f"{it.path}: cannot read ({h.strerror or h})"))
    return keys, bad


def extract(dataset, model: str | Backbone | None = None, *, layer: str | None = None,
            pool: str | None = None, normalize: bool = False, weights: str | None = None,
            cache=None, batch_size: int = 32, device: str = "auto", precision: str = "auto",
            workers: int | None = None, progress: bool | None = None, strict: bool = False,
            label: str | None = None, runtime: str = "torch", compile: bool = False,
            decode: str = "auto") -> EmbeddingSet:
    """Embed a dataset (folder, manifest, text file, list, bundled sample name) through the cache.

    Returns an EmbeddingSet in dataset order (skipped items left out); `result.summary` tells
    what was read from the cache, computed and skipped.

    Fast paths (docs/performance.md): `runtime` "onnx" / "openvino" runs image backbones in that
    CPU runtime; on CUDA, JPEG files are decoded on the device (`decode` "auto"; "device" forces
    that path, on the CPU too; "cpu" keeps PIL decoding in loader workers), optionally with
    `compile` (torch.compile).
    """
    started = time.perf_counter()
    ds = open_dataset(dataset, label=label)
    backbone = model if isinstance(model, Backbone) else create_backbone(
        model or default_model(ds.modality), layer=layer, pool=pool,
        normalize=normalize or None, weights=weights)
    if backbone.modality != ds.modality:
        raise UsageError(f"{backbone.name} embeds {backbone.modality}s but {ds.root} holds "
                         f"{ds.modality}s; pick a {ds.modality} model (embedkit models)")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, not {batch_size}")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 or more, not {workers}")
    dev = pick_device(device)
    store = cache if isinstance(cache, Store) else Store(cache)
    # -- fast paths (issue 10): runtime wrapper, device decode; each its own fingerprint part
    from . import device_decode, runtimes

    if runtime not in runtimes.RUNTIMES:
        raise UsageError(f"unknown runtime '{runtime}': choose {', '.join(runtimes.RUNTIMES)}")
    if decode not in ("auto", "cpu", "device"):
        raise UsageError(f"unknown decode '{decode}': choose auto, cpu or device")
    backbone = runtimes.with_runtime(backbone, runtime, store.root)
    in_runtime = getattr(backbone, "runtime", "torch") != "torch"  # validates its own precision
    backbone.to(dev, precision if in_runtime else pick_precision(precision, dev))
    on_device = device_decode.applies(backbone, dev) if decode == "auto" else decode == "device"
    if on_device and not isinstance(backbone, device_decode.TorchImageBackbone):
        raise UsageError("decode='device' takes torch image backbones (and --runtime torch)")
    fingerprint = device_decode.fingerprint(backbone) if on_device else backbone.fingerprint()
    fast = {"on_device": on_device, "compile": compile}

    keys, skipped = content_keys(ds, store)
    found = store.get_many(fingerprint, [k for k in keys if k])
    todo: dict[str, Item] = {}
    for item, key in zip(ds.items, keys):
        if key and key not in found and key not in todo:
            todo[key] = item
    summary = Summary(items=len(ds), device=dev)
    summary.cache_hits = sum(1 for k in keys if k and k in found)
    if skipped and strict:
        raise BadInputError(f"{skipped[0][1]} (--strict stops at the first bad item)")

    if todo:
        if not backbone.source.available:
            raise WeightsUnavailable(f"no weights for {backbone.name} on this machine: "
                                     f"{backbone.source.hint}")
        computed, bad = _compute(backbone, list(todo.items()), store, fingerprint, batch_size,
                                 workers, progress, strict, dev, **fast)
        found.update(computed)
        reasons = dict(bad)  # content key -> why it failed; every item with that content skips
        skipped += [(it.id, reasons[key]) for it, key in zip(ds.items, keys) if key in reasons]
        summary.computed = sum(1 for k in keys if k in computed)

    rows = [i for i, k in enumerate(keys) if k and k in found]
    if not rows:
        raise BadInputError(f"{ds.root}: no item could be embedded ({len(skipped)} skipped); "
                            f"first problem: {skipped[0][1] if skipped else 'empty dataset'}")
    summary.skipped = skipped
    if callable(getattr(backbone, "report", None)):  # optional: a backbone's own statistics
        summary.notes.extend(backbone.report())
    summary.seconds = time.perf_counter() - started
    labels = {name: np.asarray([ds.items[i].labels.get(name) for i in rows], dtype=object)
              for name in ds.label_names}
    meta = {"model": backbone.name, "fingerprint": fingerprint, "modality": ds.modality,
            "layer": getattr(backbone, "layer", None), "pool": getattr(backbone, "pool", None),
            "normalize": bool(getattr(backbone, "normalize", False)),
            "dataset": os.path.abspath(ds.root)}
    result = EmbeddingSet([ds.items[i].id for i in rows],
                          np.stack([found[keys[i]] for i in rows]), labels, meta)
    result.summary = summary
    return result


def _embedded_batches(backbone, items, batch_size, workers, device, on_device, compile):
    """(indices into items, float32 vectors, [(index, error)]) per batch, in order: decoded on the
    device (device_decode) or by the backbone's preprocess in DataLoader workers."""
    from .runtimes import available_cores

    if workers is None:
        workers = available_cores() if backbone.modality == "image" else 0
    if on_device:
        from .device_decode import embed_stream

        yield from embed_stream(backbone, items, device, batch_size, workers, compile)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_Items(items, backbone), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_Collate(backbone),
                        pin_memory=device.startswith("cuda"),
                        prefetch_factor=4 if workers else None)
    for indices, batch, errors in loader:
        vectors = np.asarray(backbone.embed(batch), dtype=np.float32) if indices else None
        yield indices, vectors, errors


def _compute(backbone, todo, store, fingerprint, batch_size, workers, progress, strict, device,
             on_device=False, compile=False):
    items = [it for _, it in todo]
    batches = _embedded_batches(backbone, items, batch_size, workers, device, on_device, compile)
    computed: dict[str, np.ndarray] = {}
    bad: list[tuple[str, str]] = []
    unit = "img" if backbone.modality == "image" else "text"
    desc = backbone.describe() if hasattr(backbone, "describe") else {"name": backbone.name}
    bar = _progress(len(items), progress, unit)
    try:
        with store.writer(fingerprint, desc) as writer:
            for indices, vectors, errors in batches:
                for i, err in errors:
                    bad.append((todo[i][0], err))
                    if strict:
                        raise BadInputError(f"{err} (--strict stops at the first bad item)")
                if indices:
                    finite = np.isfinite(vectors).all(axis=1)
                    for i in np.flatnonzero(~finite):
                        bad.append((todo[indices[i]][0], "the model produced NaN/inf values"))
                    keep = [j for j in range(len(indices)) if finite[j]]
                    keys = [todo[indices[j]][0] for j in keep]
                    writer.add(keys, [todo[indices[j]][1].id for j in keep], vectors[keep])
                    computed.update(zip(keys, vectors[keep]))
                bar.update(len(indices) + len(errors))
    finally:
        bar.close()
    return computed, bad


def embeddings_of(spec, model=None, **options) -> EmbeddingSet:
    """A saved EmbeddingSet as is, or a dataset extracted through the cache first."""
    if isinstance(spec, EmbeddingSet):
        return spec
    if is_embeddings_file(spec):
        return load_embeddings(spec)
    return extract(spec, model, **options)
