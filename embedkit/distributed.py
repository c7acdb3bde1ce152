"""Extraction on Ray Data: the same backbone contract and the same store, on a cluster.

One process drives one device; a dataset of millions of images, or a node with several GPUs,
needs more.  Ray Data (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI
Applications"; Ray Data's streaming executor, Luan et al. 2025, "The Streaming Batch Model for
Efficient and Fault-Tolerant Heterogeneous Execution") runs a pipeline of stages over blocks of
rows, each stage on the resources it asks for, with bounded memory between them.  Here:

    items not in the cache        read_binary_files (files) / Arrow tables (texts)
      -> _Decoder actors          CPU: the content-key check and `backbone.preprocess`
      -> _Embedder actors         the model, built once per actor from the backbone's recipe,
                                  on a GPU where the cluster has one: `accept`, `collate`,
                                  `embed`; each batch written as one shard in the store's own
                                  format (`store.write_shard`) straight into its shard folder
      -> the driver               vectors, errors and the backbone's `report_state` (OOV
                                  counts) back as Arrow tables; the shards are absorbed into
                                  the store's index (`Store.absorb`)

So a job that dies keeps every shard its finished batches wrote: the next run absorbs them
(any run does, on opening the store) and computes only the rest.  The batch functions return
plain Arrow columns (a fixed-size list of float32 for vectors), so Ray's tensor extension type
never reaches a file.

Resources come from the cluster, never from a guess: a GPU that does not exist is refused at
once (Ray would otherwise wait for it forever).  Without `address`, embedkit starts a local Ray
sized to this machine and stops it afterwards; actors ask for half a CPU, since whole-CPU actors
leave nothing for the readers on a small machine and the job then hangs without a word.
"""

from __future__ import annotations

import contextlib

import os
import pickle
import uuid
from dataclasses import dataclass

import numpy as np

from .backbone import Backbone
from .errors import BadInputError, EmbedkitError, MissingExtra, UsageError
from .files import available_cores, display_name
from .store import SHARD_SUFFIX, Store, column_vectors, vector_column, write_shard

__all__ = ["compute_on_ray", "plan_workers", "WorkerPlan"]

#: CPUs each actor asks for: a fraction, so readers and decoders always find room (see above).
ACTOR_CPUS = 0.5
#: Rows per Ray batch, and so per shard: text rows are small (the store's own flush size);
#: a batch of preprocessed images is large (3 x 224 x 224 float32 = 0.6 MB each), so eight
#: model batches.  `embedkit cache compact` merges small shards later.
TEXT_ROWS = 4096
IMAGE_MODEL_BATCHES = 8


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtra("--engine ray", "ray", "ray[data]") from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    """How many model actors, with how many GPUs each, and torch threads for CPU actors."""

    workers: int
    gpus: float
    threads: int

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"


def plan_workers(resources: dict, num_workers: int | None = None,
                 num_gpus_per_worker: float | None = None) -> WorkerPlan:
    """The embedding actors for a cluster with `resources` (`ray.cluster_resources()`).

    By default one actor per GPU, or on a cluster without GPUs one per 4 CPUs (at least one).
    Asking for more GPUs than the cluster has is a UsageError: Ray would queue the actors
    forever, waiting for a GPU that never comes."""
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    if num_gpus_per_worker is None:
        num_gpus_per_worker = 1 if gpus >= 1 else 0
    if not isinstance(num_gpus_per_worker, (int, float)) or isinstance(num_gpus_per_worker, bool) \
            or num_gpus_per_worker < 0:
        raise UsageError(f"--num-gpus-per-worker must be a number of at least 0, not "
                         f"{num_gpus_per_worker!r}")
    if num_gpus_per_worker > gpus:
        raise UsageError(f"--num-gpus-per-worker {num_gpus_per_worker:g}: the Ray cluster has "
                         f"{gpus:g} GPUs (Ray would wait for them forever); use 0 for CPU "
                         "workers")
    if num_workers is None:
        num_workers = (int(gpus // num_gpus_per_worker) if num_gpus_per_worker
                       else max(1, int(cpus) // 4))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise UsageError(f"--num-workers must be a whole number of at least 1, not "
                         f"{num_workers!r}")
    if num_workers * num_gpus_per_worker > gpus + 1e-9:
        raise UsageError(f"--num-workers {num_workers} x --num-gpus-per-worker "
                         f"{num_gpus_per_worker:g} needs {num_workers * num_gpus_per_worker:g} "
                         f"GPUs; the Ray cluster has {gpus:g}")
    # CPU actors share the cluster's cores between them (torch would otherwise start one
    # thread per core in every actor); GPU actors need one thread to feed the device
    threads = 1 if num_gpus_per_worker else max(1, int(cpus) // num_workers)
    return WorkerPlan(num_workers, float(num_gpus_per_worker), threads)


def _rebuilt(recipe: dict, modality: str) -> Backbone:
    """The driver's backbone, rebuilt in a worker from its registry recipe (cheap: model
    weights load on the first `embed`, which a decoder never calls)."""
    from .registry import create_backbone

    backbone = create_backbone(recipe["name"], **recipe.get("options", {}))
    return backbone.tower(modality) or backbone


def _model(recipe: dict, modality: str, device: str, precision: str,
           fingerprint: str) -> Backbone:
    """The rebuilt backbone on its device; it must have the driver's fingerprint, so every
    vector lands under the key it was asked for."""
    backbone = _rebuilt(recipe, modality).to(device, precision)
    if backbone.fingerprint() != fingerprint:
        raise UsageError(f"{backbone.name} rebuilt on a Ray worker has another fingerprint than "
                         "on the driver (other weights or library versions on that node?)")
    return backbone


class _Decoder:
    """CPU stage: checks that a file's bytes still hash to the content key it was looked up
    under and preprocesses each item, both exactly as the local path does (`extract._Items`:
    same error messages).  Samples travel pickled to the embedding actors, as DataLoader workers
    send them to the local extractor (this is in-flight data between our own stages, never a
    file read from disk)."""

    def __init__(self, recipe, modality, files):
        self.backbone = _rebuilt(recipe, modality)
        self.files = files  # absolute path -> (content key, item id), for file rows

    def __call__(self, table):
        import pyarrow as pa

        from .extract import _Items
        from .inputs import Item

        if "path" in table.column_names:  # _Items checks the bytes against the key
            rows = [(self.files[path][0], Item(self.files[path][1], path=path, data=data))
                    for path, data in zip(table.column("path").to_pylist(),
                                          table.column("bytes").to_pylist())]
        else:
            rows = [(k, Item(i, text=t)) for k, i, t in zip(
                table.column("key").to_pylist(), table.column("id").to_pylist(),
                table.column("text").to_pylist())]
        items = _Items(rows, self.backbone)
        samples, errors = [], []
        for i in range(len(rows)):
            _, sample, error = items[i]
            samples.append(None if error else pickle.dumps(sample, protocol=5))
            errors.append(error)
        return pa.table({
            "key": pa.array([k for k, _ in rows], pa.string()),
            "id": pa.array([it.id for _, it in rows], pa.string()),
            "name": pa.array([it.name for _, it in rows], pa.string()),
            "source": pa.array([it.text if it.text is not None else display_name(it.path)
                                for _, it in rows], pa.string()),
            "sample": pa.array(samples, pa.binary()),
            "error": pa.array(errors, pa.string()),
        })


class _Embedder:
    """The model stage: one backbone per actor, on its GPU if it reserved one.  Each batch is
    written as one shard into the store's folder before its rows are returned, so whatever
    the driver has seen is on disk."""

    def __init__(self, recipe, modality, fingerprint, precision, device, threads, shard_dir,
                 batch_size):
        if device == "cpu" and threads:
            import torch

            torch.set_num_threads(threads)
        self.backbone = _model(recipe, modality, device, precision, fingerprint)
        self.fingerprint, self.shard_dir, self.batch_size = fingerprint, shard_dir, batch_size

    def __call__(self, table):
        import pyarrow as pa

        from .extract import NOT_FINITE, accept_samples

        keys = table.column("key").to_pylist()
        ids = table.column("id").to_pylist()
        names = table.column("name").to_pylist()
        sources = table.column("source").to_pylist()
        errors = table.column("error").to_pylist()
        indices, samples, refused = accept_samples(
            self.backbone, ((i, pickle.loads(blob)) for i, blob in
                            enumerate(table.column("sample").to_pylist()) if errors[i] is None),
            lambda i: names[i])
        for i, error in refused:
            errors[i] = error
        vectors = np.zeros((len(keys), self.backbone.dim), np.float32)
        for start in range(0, len(indices), self.batch_size):
            batch = self.backbone.collate(samples[start:start + self.batch_size])
            vectors[indices[start:start + self.batch_size]] = np.asarray(
                self.backbone.embed(batch), np.float32)
        for i in indices:
            if not np.isfinite(vectors[i]).all():
                errors[i] = NOT_FINITE
        good = [i for i in range(len(keys)) if errors[i] is None]
        if good:
            name = f"{self.fingerprint[:16]}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
            write_shard(self.shard_dir / name, self.fingerprint, [keys[i] for i in good],
                        [ids[i] for i in good], vectors[good], [sources[i] for i in good])
        column = vector_column(vectors)
        mask = pa.array([e is not None for e in errors], pa.bool_())
        # e.g. OOV counts, which the driver adds up (row 0 carries them; an empty batch waits)
        report = self.backbone.report_state() if keys else None
        reports = [None] * len(keys)
        if report is not None:
            reports[0] = pickle.dumps(report, protocol=5)
        return pa.table({
            "key": pa.array(keys, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(column.values, column.type.list_size,
                                                        mask=mask),
            "error": pa.array(errors, pa.string()),
            "report": pa.array(reports, pa.binary()),
        })


def _inputs(ray, todo, modality: str, rows: int):
    """The items as a Ray dataset, read by Ray Data's own readers: the files by
    `read_binary_files` (with their absolute paths, so workers on other nodes can read them
    from shared storage), texts as Arrow tables of `rows` rows."""
    import pyarrow as pa

    if modality == "image":
        paths = [os.path.abspath(it.path) for _, it in todo]
        files = {p: (key, it.id) for p, (key, it) in zip(paths, todo)}
        # a file that vanished since it was hashed is left out; the driver reports it
        return ray.data.read_binary_files(paths, include_paths=True,
                                          ignore_missing_paths=True), files
    table = pa.table({"key": [k for k, _ in todo], "id": [it.id for _, it in todo],
                      "text": [it.text for _, it in todo]})
    return ray.data.from_arrow([table.slice(s, rows) for s in range(0, len(todo), rows)]), {}


def _join(ray, address: str):
    """Connect to a running cluster: "auto" (this node is part of it) or "ray://host:port"
    (Ray Client, which needs grpcio: the extra installs ray[client])."""
    try:
        ray.init(address=address)
    except ImportError:
        raise MissingExtra(f"--address {address}", "ray", "ray[client]") from None
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--address {address}: no Ray cluster answers ({first}); start one "
                         "with: ray start --head") from None


def _check_items(backbone: Backbone, todo, on_device: bool, compile: bool):
    if on_device or compile or backbone.runtime != "torch":
        raise UsageError("--engine ray runs the torch runtime with CPU decoding; leave out "
                         "--runtime, --decode device and --compile")
    if backbone.creation is None:
        raise UsageError(f"--engine ray rebuilds the model on each worker from its registry "
                         f"name; {backbone.name} was built by hand (give the model by name)")
    for _, item in todo:
        if item.text is None and (item.path is None or item.data is not None
                                  or item.image is not None):
            raise UsageError(f"--engine ray reads files and texts; {item.name} is held in "
                             "memory (use the local engine)")


def compute_on_ray(backbone: Backbone, todo, store: Store, fingerprint: str, batch_size: int,
                   progress: bool | None, strict: bool, description: dict, *,
                   address: str | None = None, num_workers: int | None = None,
                   num_gpus_per_worker: float | None = None, on_device: bool = False,
                   compile: bool = False):
    """`extract`'s computing phase on Ray: the same (computed, bad) as the local path, for
    `todo` = [(content key, item)] not found in the cache.  `address` joins a running cluster
    ("auto", "ray://host:10001"); without it a local Ray is started and stopped here.  A Ray
    session already open in this process is used as it is."""
    _check_items(backbone, todo, on_device, compile)
    with session(address) as ray:
        plan = plan_workers(ray.cluster_resources(), num_workers, num_gpus_per_worker)
        if backbone.precision != "fp32" and not plan.gpus:
            raise UsageError(f"--precision {backbone.precision} needs GPU workers; the Ray "
                             "workers here run on CPUs (use fp32)")
        store.writer(fingerprint, description).close()  # records the model, writes nothing
        job = (todo, backbone.creation, backbone.modality, fingerprint, backbone.precision,
               batch_size, plan, store.shard_dir, progress, strict)
        try:
            if not ray.util.client.ray.is_connected():
                computed, bad, reports = _pipeline(*job)
            else:
                # Ray Data's executor needs a worker of the cluster: through Ray Client
                # (ray://) the pipeline is driven by a task on the cluster, and only its
                # results come back
                computed, bad, reports = ray.get(ray.remote(num_cpus=0)(_pipeline).remote(*job))
        except Exception as exc:
            raise _embedkit_error(exc) or exc
        finally:
            store.absorb()
    for report in reports:  # the summary's notes, as the local engine gathers them
        backbone.merge_report(report)
    return computed, bad


@contextlib.contextmanager
def session(address: str | None = None):
    """Ray, connected: to the cluster at `address` ("auto", "ray://host:10001"), or to a
    local Ray started here (fractional CPUs per actor, so readers are not starved on a small
    machine) and shut down when the block ends.  A session already open in this process is
    used as it is and left open, so `extract` opens one for all its chunks."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        # workers' lines reach the terminal with a plain prefix, not colour codes (the CLI
        # escapes every control character it prints)
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        if address:
            _join(ray, address)
        else:
            ray.init(num_cpus=available_cores(), include_dashboard=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _embedkit_error(exc: BaseException) -> EmbedkitError | None:
    """The embedkit error behind a Ray failure (a worker's BadInputError or UsageError arrives
    wrapped in Ray's exceptions, with a remote traceback), so the CLI prints its one line."""
    for _ in range(10):
        inner = getattr(exc, "cause", None)  # RayTaskError / UserCodeException: the original
        if inner is None and isinstance(exc, EmbedkitError):
            return exc
        exc = inner or exc.__cause__
        if exc is None:
            return None
    return None


def _pipeline(todo, recipe, modality, fingerprint, precision, batch_size, plan, shard_dir,
              progress, strict):
    """Run the decoder and model stages over `todo`; (computed, bad) as the local path."""
    ray = _ray()
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = bars and progress is not False  # Ray's own progress
    computed: dict[str, np.ndarray] = {}
    bad: list[tuple[str, str]] = []
    reports = []
    try:
        rows = TEXT_ROWS if modality == "text" else batch_size * IMAGE_MODEL_BATCHES
        dataset, files = _inputs(ray, todo, modality, rows)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        decoded = dataset.map_batches(
            _Decoder, fn_constructor_args=(recipe, modality, files),
            batch_size=rows, batch_format="pyarrow", num_cpus=ACTOR_CPUS,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // 2)))
        embedded = decoded.map_batches(
            _Embedder, fn_constructor_args=(recipe, modality, fingerprint, precision,
                                            plan.device, plan.threads, shard_dir, batch_size),
            batch_size=rows, batch_format="pyarrow", num_cpus=ACTOR_CPUS, num_gpus=plan.gpus,
            compute=ray.data.ActorPoolStrategy(size=plan.workers))
        for table in embedded.iter_batches(batch_format="pyarrow", batch_size=None):
            reports += [pickle.loads(r) for r in table.column("report").to_pylist() if r]
            vectors = column_vectors(table.column("vector"))
            for key, vector, error in zip(table.column("key").to_pylist(), vectors,
                                          table.column("error").to_pylist()):
                if error is None:
                    computed[key] = vector
                    continue
                bad.append((key, error))
                if strict:
                    raise BadInputError(f"{error} (--strict stops at the first bad item)")
    finally:
        context.enable_progress_bars = bars
    seen = set(computed) | {k for k, _ in bad}
    for key, item in todo:  # files left out by the reader: gone since they were hashed
        if key not in seen:
            bad.append((key, f"{item.name}: cannot read (it vanished during the run)"))
            if strict:
                raise BadInputError(f"{bad[-1][1]} (--strict stops at the first bad item)")
    return computed, bad, reports
