"""Batched frozen extraction into the store.

Items are hashed (stat cache for files), looked up in the store, and only the missing ones are
computed: decoded and preprocessed in DataLoader workers, embedded in batches on the device,
written to the store every few thousand rows.  A bad item is reported and skipped (or, with
`strict`, stops the run after what was already computed is flushed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .embedding_files import EmbeddingsWriter
from .embeddings import EmbeddingSet, check_output_suffix, is_embeddings_file, load_embeddings
from .errors import BadInputError, EmbedkitError, UsageError, WeightsUnavailable
from .files import available_cores, display_name
from .options import DECODES, ENGINES, PRECISIONS, RUNTIMES, at_least
from .inputs import (Dataset, Item, is_pil_image, open_dataset, pixels_sha256,
                     text_sha256)
from .registry import chosen_model, create_backbone
from .store import Store

__all__ = ["content_keys", "embeddings_of", "encode", "extract", "pick_device", "pick_precision",
           "Summary"]



@dataclass
class Summary:
    items: int = 0
    cache_hits: int = 0
    computed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    seconds: float = 0.0  # the whole call
    compute_seconds: float = 0.0  # the computing phase (decoding and the model), for items/s
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)  # backbone reports, e.g. OOV rates

    @property
    def throughput(self) -> float:
        """Items computed per second of the computing phase (not start-up, hashing or cache
        look-ups)."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"items": self.items, "cache_hits": self.cache_hits, "computed": self.computed,
                "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
                "seconds": round(self.seconds, 3),
                "compute_seconds": round(self.compute_seconds, 3),
                "items_per_s": round(self.throughput, 2),
                "device": self.device, "notes": self.notes}

    def __str__(self):
        lines = [f"{self.items} item{'s' if self.items != 1 else ''}: {self.cache_hits} from "
                 f"cache, {self.computed} computed, "
                 f"{len(self.skipped)} skipped"
                 + (f"; {self.throughput:.1f} items/s on {self.device}" if self.computed else "")]
        lines += [f"  {note}" for note in self.notes]
        # a reason usually starts with the item's name, often its id too: say it once
        lines += [f"  skipped {r}" if r.startswith(f"{i}: ") else f"  skipped {i}: {r}"
                  for i, r in self.skipped]
        return "\n".join(lines)


def pick_device(device: str = "auto") -> str:
    if device == "cpu":
        return device
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
    PRECISIONS.check(precision)
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if precision != "fp32" and device == "cpu":
        raise UsageError(f"--precision {precision} needs a GPU; on the CPU use fp32")
    return precision


class _Items:
    """torch Dataset over (content key, item): preprocess in the worker, never raise (errors
    travel back).  A file is read once (here, or by whoever handed over its bytes) and its
    bytes must still hash to the key it was looked up under, so a file changed during the run
    can never store its vector under the old key."""

    def __init__(self, todo: list[tuple[str, Item]], backbone: Backbone):
        self.todo, self.backbone = todo, backbone

    def __len__(self):
        return len(self.todo)

    def __getitem__(self, i):
        key, item = self.todo[i]
        try:
            if item.path is not None:  # read here, or by the caller (Ray's file reader)
                if item.data is None:
                    with open(item.path, "rb") as f:
                        item = dataclasses.replace(item, data=f.read())
                if hashlib.sha256(item.data).hexdigest() != key:
                    return i, None, (f"{item.name}: changed while embedkit was reading it; "
                                     "run again")
            return i, self.backbone.preprocess(item), None
        except EmbedkitError as exc:
            message = str(exc)
            return i, None, message if item.name in message else f"{item.name}: {message}"
        except OSError as exc:
            return i, None, f"{item.name}: cannot read ({exc.strerror or exc})"
        except Exception as exc:  # a plugin's own failure on one item
            return i, None, f"{item.name}: {type(exc).__name__}: {exc}"


class _Collate:
    """Separates a loader batch into good samples and errors (runs in the loader workers).
    A backbone that inspects samples (`accept`) sees them in the extracting process and is
    collated there; any other is collated here, in the workers, off the critical path."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.in_worker = type(backbone).accept is Backbone.accept

    def __call__(self, samples):
        ok = [(i, s) for i, s, err in samples if err is None]
        bad = [(i, err) for i, _, err in samples if err is not None]
        if self.in_worker and ok:
            return [i for i, _ in ok], self.backbone.collate([s for _, s in ok]), bad
        return ok, None, bad


def _progress(total: int, enabled: bool | None, unit: str):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1)


def content_keys(items: "list[Item] | Dataset", store: Store
                 ) -> tuple[list[str | None], list[tuple[str, str]]]:
    """sha256 per item (None where unusable) and the (id, reason) of the unusable items: of the
    normalised text, of an in-memory image's RGB pixels with their shape (`pixels_sha256`), of
    in-memory bytes, or of a file's bytes (through the store's file-identity
    cache, so an unchanged file is checked with stat, not re-read)."""
    items = list(items.items if isinstance(items, Dataset) else items)
    usable = [it for it in items if it.error is None]
    files = store.file_hashes([it.path for it in usable if it.text is None and it.data is None
                               and it.image is None and it.path is not None])
    hashes = {}
    for it in usable:
        if it.text is not None:
            hashes[id(it)] = text_sha256(it.text)
        elif it.image is not None:
            hashes[id(it)] = pixels_sha256(it.image)
        elif it.data is not None:
            hashes[id(it)] = hashlib.sha256(it.data).hexdigest()
        else:
            hashes[id(it)] = files.get(it.path)
    keys, bad = [], []
    for it in items:
        h = hashes.get(id(it))
        if isinstance(h, str):
            keys.append(h)
            continue
        keys.append(None)
        bad.append((it.id, it.error or f"{it.name}: cannot read ({_why(h)})"))
    return keys, bad


def _why(exc) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else "no content"


def extract(dataset, model: str | Backbone | None = None, *, layer: str | None = None,
            pool: str | None = None, normalize: bool = False, weights: str | None = None,
            cache=None, batch_size: int = 32, device: str = "auto", precision: str = "auto",
            workers: int | None = None, progress: bool | None = None, strict: bool = False,
            label: str | None = None, within: str | None = None, runtime: str = "torch",
            compile: bool = False, decode: str = "auto",
            backbone_options: dict | None = None, output=None, parts: int | None = None,
            chunk_size: int | None = None, cached_only: bool = False, engine: str = "local",
            address: str | None = None, num_workers: int | None = None,
            num_gpus_per_worker: float | None = None) -> EmbeddingSet:
    """Embed a dataset through the cache: only items missing from it are computed.

    Args:
        dataset: a folder (class subfolders = labels), a CSV / JSONL manifest, a .txt file (one
            text per line), an image file, a list of paths or texts, or a bundled sample name.
        model: a backbone name (`embedkit models`), a built Backbone, or None for the
            modality's default (efficientnet_lite0 for images, glove-6b-50d for text).
        layer, pool, normalize, weights: how a named model reads its features (its layer,
            the pooling of a block layer, L2 normalisation, an explicit weights file).
        backbone_options: further options passed straight to the model's plugin (e.g.
            {"limit": 50000} for word vectors); recorded in the result's meta.
        cache: a Store or a folder (default `$EMBEDKIT_HOME` or ~/.cache/embedkit).
        batch_size, device, precision: batching, "auto" / "cpu" / "cuda[:N]" / "mps", and
            "auto" (bf16 on CUDA, fp32 elsewhere) / "fp32" / "bf16" / "fp16".
        workers: decoding processes (default one per available core for images; 0 runs in
            this process).
        progress: a progress bar on stderr (default: when stderr is a terminal).
        strict: stop at the first bad item (after flushing) instead of skipping it.
        label: the primary label column of a manifest.
        within: refuse manifest paths that resolve outside this folder.
        runtime: "torch", or "onnx" / "openvino" for image backbones on the CPU
            (docs/performance.md).
        compile: torch.compile the model (GPU path).
        decode: "auto" (JPEGs decoded on the device on CUDA), "cpu" or "device".
        output: also write the set as it streams: a .parquet / .npy / .csv file, or a folder
            of Parquet parts (a path ending in /; `parts` sets their number).  The run then
            holds one chunk in memory, whatever the dataset's size (docs/scaling.md).
        chunk_size: items hashed, looked up, computed and written at a time (default 8,192;
            65,536 on CUDA and Ray, where each chunk's restart of the decoding workers must stay
            small against its computing).
        cached_only: compute nothing: items missing from the cache are skipped (`export`).
        engine: "local" (this process), or "ray" (Ray Data, docs/scaling.md; the extra
            embedkit[ray]): the items not in the cache are computed by a pool of model actors.
        address, num_workers, num_gpus_per_worker: for engine="ray": the cluster to join
            ("auto", "ray://host:10001"; default a local Ray started for this call), the
            number of model actors and the GPUs each reserves (default: one actor per GPU
            the cluster has).

    Returns:
        An EmbeddingSet in dataset order (skipped items left out; read back from `output`
        when given); its `summary` tells what came from the cache, what was computed and what
        was skipped, and why.
    """
    started = time.perf_counter()
    if output is not None:
        check_output_suffix(output, parts)
    if chunk_size is not None:
        at_least("--chunk-size", chunk_size, 1)
    if ENGINES.check(engine) == "ray" and decode == "auto":
        decode = "cpu"  # Ray workers decode on their CPUs
    elif engine == "local" and (address, num_workers, num_gpus_per_worker) != (None,) * 3:
        raise UsageError("--address, --num-workers and --num-gpus-per-worker go with "
                         "--engine ray")
    ds = open_dataset(dataset, label=label, within=within)
    if isinstance(model, Backbone):
        if backbone_options:
            raise UsageError("backbone_options apply when the model is given by name; "
                             f"{model.name} is already built")
        backbone = model
    else:  # options pass straight through to the plugin that understands them
        backbone = create_backbone(chosen_model(model, ds.modality), layer=layer, pool=pool,
                                   normalize=normalize or None, weights=weights,
                                   **(backbone_options or {}))
    backbone = backbone.tower(ds.modality) or backbone  # CLIP: the tower for this data
    if backbone.modality != ds.modality:
        article = "an" if ds.modality[0] in "aeiou" else "a"
        raise UsageError(f"{backbone.name} embeds {backbone.modality}s but {ds.shown} holds "
                         f"{ds.modality}s; pick {article} {ds.modality} model (embedkit models)")
    at_least("--batch-size", batch_size, 1)
    if workers is not None:
        at_least("--workers", workers, 0)
    dev = pick_device(device if backbone.uses_device else "cpu")
    store = cache if isinstance(cache, Store) else Store(cache)
    backbone, on_device = _choose_path(backbone, ds, dev, precision, runtime, decode, store)
    if on_device:
        from .device_decode import fingerprint as device_fingerprint

        fingerprint = device_fingerprint(backbone)
    else:
        fingerprint = backbone.fingerprint()
    meta = {"model": backbone.name, "fingerprint": fingerprint, "modality": ds.modality,
            "layer": backbone.layer, "pool": backbone.pool, "normalize": bool(backbone.normalize),
            "dataset": ds.root if ds.root == "<in-memory>" else os.path.abspath(ds.root),
            "backbone": backbone.creation}
    summary = Summary(items=len(ds), device=dev, notes=list(ds.notes))
    chunk_size = chunk_size or (GPU_CHUNK_SIZE if dev.startswith("cuda") or engine == "ray"
                                else CHUNK_SIZE)
    ray = {"address": address, "num_workers": num_workers,
           "num_gpus_per_worker": num_gpus_per_worker} if engine == "ray" else None
    run = _Run(backbone, store, fingerprint, summary, strict=strict, batch_size=batch_size,
               workers=workers, device=dev, on_device=on_device,
               compile=compile, cached_only=cached_only, ray=ray)
    if ray:
        summary.device = "ray"
    sink = (_InMemory(meta, ds.label_names) if output is None else
            EmbeddingsWriter(output, meta, ds.label_names, parts=parts, expected_rows=len(ds)))
    bar = _progress(len(ds), progress, "img" if ds.modality == "image" else "text")
    try:
        with sink, _engine_session(ray):
            for chunk in _chunks(ds.items, chunk_size):
                rows, vectors = run.chunk(chunk, bar)
                sink.add([it.id for it in rows], vectors,
                         {name: [it.labels.get(name) for it in rows] for name in ds.label_names})
            if not sink.rows:
                skipped = summary.skipped
                raise BadInputError(f"{ds.shown}: no item could be embedded ({len(skipped)} "
                                    "skipped); first problem: "
                                    f"{skipped[0][1] if skipped else 'empty dataset'}")
    finally:
        bar.close()
    summary.notes.extend(backbone.report())
    summary.seconds = time.perf_counter() - started
    result = sink.result() if output is None else sink.saved()
    result.summary = summary
    return result


def _engine_session(ray: dict | None):
    """One Ray session for all the chunks of a run (engine="ray"), else nothing to open."""
    if ray is None:
        return contextlib.nullcontext()
    from .distributed import session

    return session(ray["address"])


#: Items hashed, looked up, computed and handed on at a time: what bounds extraction's memory.
CHUNK_SIZE = 8192
#: On CUDA: a chunk restarts the decoding worker processes (seconds with 16 workers), which
#: must stay small against the chunk's computing (13 s of ResNet-50 at 5,000 images/s).
GPU_CHUNK_SIZE = 65536


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _InMemory:
    """Collects the chunks of an extraction into one EmbeddingSet (no output file)."""

    def __init__(self, meta: dict, label_names: list[str]):
        self.meta, self.label_names = meta, label_names
        self.ids, self.vectors, self.labels = [], [], {name: [] for name in label_names}
        self.rows = 0

    def add(self, ids, vectors, labels):
        if ids:
            self.ids += ids
            self.vectors.append(vectors)
            for name in self.label_names:
                self.labels[name] += labels[name]
            self.rows += len(ids)

    def result(self) -> EmbeddingSet:
        vectors = self.vectors[0] if len(self.vectors) == 1 else np.concatenate(self.vectors)
        return EmbeddingSet(self.ids, vectors, {name: np.asarray(v, dtype=object)
                                                for name, v in self.labels.items()}, self.meta)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@dataclass
class _Run:
    """One extraction, a chunk at a time: hash the chunk's items, look them up, compute the
    missing ones into the store, and hand back its embedded items in order with their vectors.
    Nothing of one chunk is kept for the next but the summary."""

    backbone: Backbone
    store: Store
    fingerprint: str
    summary: Summary
    strict: bool
    batch_size: int
    workers: int | None
    device: str
    on_device: bool
    compile: bool
    cached_only: bool
    ray: dict | None = None  # engine="ray": address, num_workers, num_gpus_per_worker

    def chunk(self, items: list[Item], bar) -> tuple[list[Item], np.ndarray | None]:
        summary = self.summary
        keys, skipped = content_keys(items, self.store)
        if skipped and self.strict:
            raise BadInputError(f"{skipped[0][1]} (--strict stops at the first bad item)")
        summary.skipped += skipped
        found = self.store.get_many(self.fingerprint, [k for k in keys if k])
        todo: dict[str, Item] = {}
        for item, key in zip(items, keys):
            if key and key not in found and key not in todo:
                todo[key] = item
        hits = sum(1 for k in keys if k and k in found)
        summary.cache_hits += hits
        bar.update(hits + len(skipped))
        if todo and self.cached_only:
            summary.skipped += [(it.id, f"{it.name}: not in the cache under "
                                 f"{self.backbone.name}; compute it with embedkit extract")
                                for it, k in zip(items, keys) if k in todo]
            bar.update(sum(1 for k in keys if k in todo))
        elif todo:
            backbone = self.backbone
            if not backbone.source.obtainable:
                raise WeightsUnavailable(f"no weights for {backbone.name} on this machine: "
                                         f"{backbone.source.hint}")
            computing = time.perf_counter()
            if self.ray is not None:
                from .distributed import compute_on_ray

                computed, bad = compute_on_ray(
                    backbone, list(todo.items()), self.store, self.fingerprint,
                    self.batch_size, bar.disable is False, self.strict,
                    model_description(backbone), on_device=self.on_device,
                    compile=self.compile, **self.ray)
                bar.update(len(todo))
            else:
                computed, bad = _compute(backbone, list(todo.items()), self.store,
                                         self.fingerprint, self.batch_size, self.workers, bar,
                                         self.strict, self.device, self.on_device, self.compile)
            summary.compute_seconds += time.perf_counter() - computing
            found.update(computed)
            reasons = dict(bad)  # content key -> why it failed; every item with it skips
            summary.skipped += [(it.id, reasons[k]) for it, k in zip(items, keys)
                                if k in reasons]
            summary.computed += sum(1 for k in keys if k in computed)
            bar.update(sum(1 for k in keys if k in todo) - len(todo))  # duplicates
        rows = [i for i, k in enumerate(keys) if k and k in found]
        vectors = np.stack([found[keys[i]] for i in rows]) if rows else None
        return [items[i] for i in rows], vectors


def encode(items, model: str | Backbone | None = None, batch_size: int = 32,
           show_progress_bar: bool | None = None, normalize_embeddings: bool = False,
           **extract_options) -> np.ndarray:
    """Vectors of `items` as float32 [n, dim] in input order, through the cache: the
    sentence-transformers `encode` convention (Reimers & Gurevych 2019, "Sentence-BERT") over
    every input `extract` takes, in-memory images included (`inputs.from_list`).

    One string or one PIL image gives one 1-D vector, as in sentence-transformers.  Any item
    that cannot be embedded stops the call (`strict`), so row i is always item i.
    `normalize_embeddings` L2-normalises the returned rows (for dot-product search) without
    touching the cache; `extract_options` (cache, device, layer, ...) go to `extract`.
    """
    single = isinstance(items, str) or is_pil_image(items)
    es = extract([items] if single else items, model, batch_size=batch_size,
                 progress=show_progress_bar, strict=True, **extract_options)
    vectors = np.asarray(es.vectors, dtype=np.float32)
    if normalize_embeddings:
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
        vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return vectors[0] if single else vectors


def _choose_path(backbone, ds: Dataset, dev: str, precision: str, runtime: str, decode: str,
                 store: Store) -> tuple[Backbone, bool]:
    """The backbone as it will run (wrapped in a CPU runtime if asked, moved to its device and
    precision) and whether JPEG files are decoded on the device.  Each fast path has its own
    fingerprint part (docs/performance.md); neither applies to backbones that use no device,
    which never import torch."""
    DECODES.check(decode)
    if RUNTIMES.check(runtime) != "torch":
        from .runtimes import with_runtime

        backbone = with_runtime(backbone, runtime, store.root)
    in_runtime = backbone.runtime != "torch"  # a runtime validates its own precision
    backbone.to(dev, precision if in_runtime else pick_precision(precision, dev))
    # decoded already: in-memory images come only in lists (`from_list`), never streamed
    in_memory = isinstance(ds.items, list) and any(it.image is not None for it in ds.items)
    if in_memory and decode == "device":
        raise UsageError("decode='device' decodes image files; in-memory images are decoded "
                         "already (use decode='auto' or 'cpu')")
    if not (backbone.uses_device and backbone.modality == "image"):
        if decode == "device":
            raise UsageError(f"decode='device' takes image backbones; {backbone.name} embeds "
                             f"{backbone.modality}s without a device")
        return backbone, False
    if decode == "cpu" or in_memory:
        return backbone, False
    from . import device_decode

    on_device = device_decode.applies(backbone, dev) if decode == "auto" else True
    if on_device and not isinstance(backbone, device_decode.TorchImageBackbone):
        raise UsageError("decode='device' takes torch image backbones (and --runtime torch)")
    return backbone, on_device


#: Why a computed vector is refused (never stored): the model's output was not finite.
NOT_FINITE = "the model produced NaN/inf values"


def _embedded_batches(backbone, todo, batch_size, workers, device, on_device, compile):
    """(indices into todo, float32 vectors, [(index, error)]) per batch, in order: decoded on
    the device (device_decode) or by the backbone's preprocess, in DataLoader workers or (with
    no workers) in this process, without importing torch for backbones that need none."""
    if workers is None:
        workers = available_cores() if backbone.modality == "image" else 0
    if on_device:
        from .device_decode import embed_stream

        yield from embed_stream(backbone, [it for _, it in todo], device, batch_size, workers,
                                compile)
        return
    dataset, split = _Items(todo, backbone), _Collate(backbone)
    if workers:
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=split, pin_memory=device.startswith("cuda"),
                            prefetch_factor=4)
    else:
        loader = (split([dataset[i] for i in range(start, min(start + batch_size, len(todo)))])
                  for start in range(0, len(todo), batch_size))
    for ok, batch, errors in loader:
        if batch is None:  # not collated in the worker: accept, then collate here
            indices, samples, refused = accept_samples(backbone, ok, lambda i: todo[i][1].name)
            errors += refused
            batch = backbone.collate(samples) if indices else None
        else:
            indices = ok
        vectors = np.asarray(backbone.embed(batch), dtype=np.float32) if indices else None
        yield indices, vectors, errors


def accept_samples(backbone, indexed_samples, name_of
                   ) -> tuple[list[int], list, list[tuple[int, str]]]:
    """(indices, samples, [(index, error)]): the samples `backbone.accept` takes, in order, and
    why each other one was refused (named by `name_of(index)`).  Run where the model runs
    (this process, or a Ray model actor), since `accept` also counts for `report`."""
    indices, samples, refused = [], [], []
    for i, sample in indexed_samples:
        why = backbone.accept(sample)
        if why is None:
            indices.append(i)
            samples.append(sample)
        else:
            refused.append((i, f"{name_of(i)}: {why}"))
    return indices, samples, refused


def _compute(backbone, todo, store, fingerprint, batch_size, workers, bar, strict, device,
             on_device=False, compile=False):
    batches = _embedded_batches(backbone, todo, batch_size, workers, device, on_device, compile)
    computed: dict[str, np.ndarray] = {}
    bad: list[tuple[str, str]] = []
    with store.writer(fingerprint, model_description(backbone)) as writer:
        for indices, vectors, errors in batches:
            for i, err in errors:
                bad.append((todo[i][0], err))
                if strict:
                    raise BadInputError(f"{err} (--strict stops at the first bad item)")
            if indices:
                finite = np.isfinite(vectors).all(axis=1)
                for i in np.flatnonzero(~finite):
                    bad.append((todo[indices[i]][0], NOT_FINITE))
                keep = [j for j in range(len(indices)) if finite[j]]
                keys = [todo[indices[j]][0] for j in keep]
                items = [todo[indices[j]][1] for j in keep]
                writer.add(keys, [it.id for it in items], vectors[keep],
                           [it.text if it.text is not None else
                            display_name(it.path) if it.path else None for it in items])
                computed.update(zip(keys, vectors[keep]))
            bar.update(len(indices) + len(errors))
    return computed, bad


def model_description(backbone: Backbone) -> dict:
    """What the store records about the model behind a fingerprint (`Store.description`)."""
    return {**backbone.describe(), "rebuild": backbone.creation, "precision": backbone.precision}


def embeddings_of(spec, model=None, **options) -> EmbeddingSet:
    """A saved EmbeddingSet as is, or a dataset extracted through the cache first."""
    if isinstance(spec, EmbeddingSet):
        return spec
    if is_embeddings_file(spec):
        return load_embeddings(spec)
    return extract(spec, model, **options)
