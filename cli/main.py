"""`embedkit`: the command-line entry point. One thin command per verb."""

from __future__ import annotations

import click

from embedkit.cli.common import EmbedkitGroup, cache_option, choice, embeddings_columns, \
    emit_json, json_option, model_options, run_options, table
from embedkit.options import ENGINES, INDEXES, MODALITIES, RUNTIMES


@click.group(cls=EmbedkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedkit")
def cli():
    """Frozen embeddings from pretrained backbones, cached, compared and classified.

    \b
    Start here:
      embedkit datasets export digits-target ./digits
      embedkit extract ./digits -o digits.parquet
    """


@cli.command()
@click.option("--modality", type=choice(MODALITIES), default=None)
@click.option("--available", is_flag=True,
              help="Only backbones whose weights are here now (with where they come from).")
@click.option("--detail", is_flag=True,
              help="Also weights, default layer and dimension (probes each architecture).")
@json_option
def models(modality, available, detail, as_json):
    """List registered backbones by name and family, at once.

    \b
    Example: embedkit models --modality image
             embedkit models --available       # weights on this machine now
             embedkit models --detail          # with weights, default layer and dim
    """
    from embedkit.registry import broken_plugins, create_backbone, list_models

    rows = []
    for name, family in list_models(modality):
        row = {"name": name, "modality": family.modality, "family": family.name}
        try:
            if available or detail:
                backbone = create_backbone(name)  # no weights loaded
                source = backbone.source
                if available and not source.available:
                    continue
                row = backbone.describe() if detail else {
                    **row, "offline": source.available, "weights": source.description}
            rows.append(row)
        except Exception as exc:  # one bad backbone never breaks the listing
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"})
    for b in broken_plugins():
        rows.append({"name": f"<plugin {b.plugin.name}>", "family": b.plugin.package,
                     "error": b.error})
    if as_json:
        return emit_json(rows)
    columns = ["name", "modality", "family", *(["layer", "dim"] if detail else []),
               *(["offline", "weights"] if detail or available else [])]
    click.echo(table(rows, columns))
    for r in rows:
        if r.get("error"):
            click.echo(f"! {r['name']}: {r['error']}", err=True)


@cli.command()
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@json_option
def layers(model, weights, as_json):
    """List the layers of MODEL that can be extracted, with output shapes (default first).

    \b
    Example: embedkit layers efficientnet_lite0
    """
    from embedkit.registry import create_backbone

    backbone = create_backbone(model, weights=weights)
    info = backbone.layer_info()
    rows = []
    for i, name in enumerate(backbone.layers()):
        shape = info[name].shape
        rows.append({"layer": name, "output": "x".join(map(str, shape)),
                     "default": i == 0,
                     "pooling": "none (vector)" if len(shape) == 1 else "avg|max|gem|flatten"})
    if as_json:
        return emit_json(rows)
    click.echo(table(rows))


@cli.group(cls=EmbedkitGroup)
def datasets():
    """Bundled sample datasets (offline)."""


@datasets.command("list")
@json_option
def datasets_list(as_json):
    """List bundled sample datasets."""
    from embedkit import samples

    rows = samples.describe()
    click.echo(table(rows)) if not as_json else emit_json(rows)


@datasets.command("export")
@click.argument("name")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--per-class", type=int, default=None, help="At most N items per class.")
@click.option("--skip", type=int, default=0, show_default=True,
              help="Skip the first N items of each class (a test set disjoint from --per-class N).")
def datasets_export(name, folder, per_class, skip):
    """Write bundled dataset NAME into FOLDER (class subfolders = labels).

    \b
    Example: embedkit datasets export digits-target ./train --per-class 20
             embedkit datasets export digits-target ./test --per-class 10 --skip 20
    """
    from embedkit import samples

    path = samples.export(name, folder, per_class=per_class, overwrite=True, skip=skip)
    n = sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    click.echo(f"wrote {n} items to {path}")


def output_options(f):
    """-o (a file or a folder of Parquet parts), --parts, --chunk-size: where a streamed set
    goes."""
    for option in reversed([
        click.option("-o", "--output", type=click.Path(), default=None,
                     help="Save the set as it streams: .parquet, .npy (+ NAME.ids.csv), .csv, "
                          "or a folder of Parquet parts (a path ending in /)."),
        click.option("--parts", type=int, default=None,
                     help="Split a folder output into N Parquet parts."),
        click.option("--chunk-size", type=int, default=None,
                     help="Items hashed, computed and written at a time, which bounds memory "
                          "(default 8192; 65536 on CUDA and Ray).")]):
        f = option(f)
    return f


@cli.command()
@click.argument("dataset")
@model_options
@output_options
@click.option("--label", default=None, help="Primary label column of a manifest.")
@click.option("--within", type=click.Path(file_okay=False), default=None,
              help="Refuse manifest paths that resolve outside this folder.")
@click.option("--limit", type=int, default=None,
              help="Word vectors: keep only the N most frequent words.")
@run_options
@click.option("--workers", type=int, default=None,
              help="Decode workers (default: one per available core).")
@click.option("--runtime", type=choice(RUNTIMES), default="torch",
              show_default=True, help="CPU inference runtime for image backbones "
              "(onnx / openvino: extras embedkit[onnx] / embedkit[openvino]).")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the model on the GPU decode path (pays off on large "
                   "runs); the CPU path runs eager or through --runtime.")
@click.option("--strict", is_flag=True, help="Fail on the first bad item instead of skipping it.")
@click.option("--engine", type=choice(ENGINES), default="local", show_default=True,
              help="local, or ray: Ray Data on a cluster or a local Ray (embedkit[ray]; "
              "docs/scaling.md).")
@click.option("--address", default=None,
              help="Ray cluster to join: auto, ray://host:10001 (default: a local Ray).")
@click.option("--num-workers", type=int, default=None,
              help="Ray model actors (default: one per GPU of the cluster).")
@click.option("--num-gpus-per-worker", type=float, default=None,
              help="GPUs each Ray model actor reserves (default 1 where the cluster has GPUs).")
@cache_option
@json_option
def extract(dataset, model, layer, pool, normalize, weights, output, parts, chunk_size, label,
            within, limit, workers, runtime, compile_, strict, engine, address, num_workers,
            num_gpus_per_worker, cache, as_json, run):
    """Embed DATASET (folder, manifest, .txt, or bundled name) through the cache.

    \b
    Example: embedkit extract ./digits --model efficientnet_lite0 -o digits.parquet
             embedkit extract lines.txt --model glove-6b-50d -o lines/ --parts 8
    """
    import embedkit

    result = embedkit.extract(dataset, model, layer=layer, pool=pool, normalize=normalize,
                              weights=weights, cache=cache, workers=workers, runtime=runtime,
                              compile=compile_, strict=strict, label=label, within=within,
                              output=output, parts=parts, chunk_size=chunk_size, **run,
                              engine=engine, address=address, num_workers=num_workers,
                              num_gpus_per_worker=num_gpus_per_worker,
                              backbone_options={"limit": limit} if limit is not None else None)
    _report_saved(result, output, as_json)


def _report_saved(result, output, as_json):
    summary = result.summary
    if as_json:
        return emit_json({**summary.as_dict(), "output": output, "dim": result.dim,
                          "model": result.meta["model"]})
    click.echo(str(summary))
    if output:
        click.echo(f"saved {len(result)} x {result.dim} ({result.meta['model']}, layer "
                   f"{result.meta['layer']}) to {output}")


@cli.group(cls=EmbedkitGroup)
def cache():
    """Inspect and maintain the embedding cache."""


@cache.command("info")
@cache_option
@json_option
def cache_info(cache, as_json):
    """Where the cache is, its size, and vectors per model."""
    from dataclasses import asdict

    from embedkit.store import Store

    info = Store(cache).info()
    if as_json:
        return emit_json(asdict(info))
    click.echo(f"{info.root}: {info.vectors} vectors in {info.shards} shards, "
               f"{info.bytes / 1e6:.1f} MB")
    if info.models:
        click.echo(table(info.models, ["name", "layer", "pool", "dim", "vectors", "shards",
                                       "fingerprint"]))


@cache.command("verify")
@click.option("--repair", is_flag=True,
              help="Quarantine damaged shards (shards/damaged/) and remove damaged runtime "
                   "exports; the next run recomputes their items and exports again.")
@click.option("--deep", type=click.IntRange(min=1), default=None, metavar="N",
              help="Also recompute N random cached items with their backbones (vectors made "
                   "in a CPU runtime: with eager PyTorch) and compare.")
@click.option("--device", default="auto", show_default=True, help="Device for --deep.")
@cache_option
def cache_verify(repair, deep, device, cache):
    """Re-hash every shard and runtime export against the checksum recorded when it was
    written; exit 6 if anything is wrong.

    \b
    Example: embedkit cache verify --deep 20
    """
    from embedkit.errors import StoreError
    from embedkit.store import Store

    store = Store(cache)
    problems = store.verify(repair=repair)
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems and not repair:
        raise StoreError(f"{len(problems)} problem(s); run: embedkit cache verify --repair")
    click.echo("repaired: damaged shards quarantined and damaged runtime exports removed; "
               "they are recomputed when next needed" if problems else
               "ok: every shard and runtime export matches its checksum")
    if deep is not None:
        from embedkit.deep_verify import verify_deep

        report = verify_deep(store, deep, device=device)
        for line in report.unchecked:
            click.echo(f"not checked: {line}", err=True)
        for line in report.mismatches:
            click.echo(f"mismatch: {line}", err=True)
        click.echo(f"deep: {report.agreed} of {report.checked} recomputed items agree"
                   + (f"; {len(report.unchecked)} not checkable" if report.unchecked else ""))
        if report.mismatches:
            raise StoreError(f"{len(report.mismatches)} cached vector(s) differ from a "
                             "recomputation; run: embedkit cache clear --fingerprint FP for "
                             "that model")


@cache.command("compact")
@cache_option
def cache_compact(cache):
    """Merge small shards."""
    from embedkit.store import Store

    before, after = Store(cache).compact()
    click.echo(f"{before} shards -> {after}")


@cache.command("clear")
@click.option("--fingerprint", default=None, help="Only this model fingerprint (cache info).")
@click.option("--yes", is_flag=True, help="Do not ask.")
@cache_option
def cache_clear(fingerprint, yes, cache):
    """Delete cached vectors (all, or one model's)."""
    from embedkit.store import Store

    from embedkit.errors import UsageError

    store = Store(cache)
    known = store.fingerprints() if fingerprint else []
    if fingerprint and fingerprint not in known:
        raise UsageError(f"--fingerprint {fingerprint}: no vectors of that model in {store.root}"
                         f" (its fingerprints: {', '.join(known) or 'none'}; see: embedkit cache "
                         "info)")
    if not yes:
        click.confirm(f"delete {'all' if not fingerprint else fingerprint} vectors in "
                      f"{store.root}?", abort=True)
    click.echo(f"removed {store.clear(fingerprint)} shards")


@cli.group(cls=EmbedkitGroup)
def index():
    """Approximate search indexes saved to disk, for `embedkit similar --index FILE`."""


@index.command("build")
@click.argument("embeddings", metavar="FEATS")
@embeddings_columns
@click.option("--index", "kind", required=True,
              type=click.Choice([v for v in INDEXES.values if v != "exact"]),
              help="faiss IndexIVFFlat (k-means cells) or IndexHNSWFlat (a graph).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Index file (.faiss); its description goes to OUTPUT.json.")
@click.option("--nlist", type=int, default=None, help="ivf: cells (default sqrt(n)).")
@click.option("--nprobe", type=int, default=None, help="ivf: cells visited (default nlist/8).")
@click.option("--hnsw-m", type=int, default=32, show_default=True, help="hnsw: links per node.")
@click.option("--ef-search", type=int, default=None,
              help="hnsw: candidates per query (default 128).")
@json_option
def index_build(embeddings, kind, output, nlist, nprobe, hnsw_m, ef_search, as_json):
    """Build an ivf / hnsw index over the saved set FEATS, print its recall@10 against exact
    search, and save it (faiss write_index) with the set's checksum, so `similar --index`
    answers without rebuilding and refuses any other set.

    \b
    Example: embedkit index build digits.parquet --index hnsw -o digits.faiss
             embedkit similar 5/00012.png --embeddings digits.parquet --index digits.faiss
    """
    from embedkit.query_resolution import save_index
    from embedkit.vector_search import RECALL_QUERIES

    emb = _saved_set(embeddings)
    params = {"nlist": nlist, "nprobe": nprobe} if kind == "ivf" else \
        {"hnsw_m": hnsw_m, "ef_search": ef_search}
    _, recall = save_index(emb, kind, output, **params)
    if as_json:
        return emit_json({"output": output, "index": kind, "rows": len(emb), "dim": emb.dim,
                          "recall_at_10": recall})
    click.echo(f"saved the {kind} index of {len(emb)} x {emb.dim} vectors to {output}; "
               f"recall@10 against exact search: {recall:.3f} "
               f"({min(RECALL_QUERIES, len(emb))} sampled rows)")


@cli.command("export")
@click.argument("embeddings", metavar="SOURCE")
@embeddings_columns
@model_options
@output_options
@click.option("--to", "target", default=None, metavar="lancedb://FOLDER/TABLE",
              help="Write to a LanceDB table (extra embedkit[lancedb]).")
@click.option("--overwrite", is_flag=True, help="Replace an existing LanceDB table.")
@click.option("--label", default=None, help="Primary label column of a manifest.")
@cache_option
@json_option
def export(embeddings, model, layer, pool, normalize, weights, output, parts, chunk_size, target,
           overwrite, label, cache, as_json):
    """Write SOURCE out without computing anything: a saved set (FEATS), or a dataset's vectors
    from the cache under --model (items not cached are listed as skipped).

    \b
    Example: embedkit export ./photos --model efficientnet_lite0 -o photos/ --parts 4
             embedkit export digits.parquet --to lancedb://./vectors/digits
    """
    from embedkit.embeddings import EmbeddingSet, is_embeddings_file
    from embedkit.errors import UsageError

    if (output is None) == (target is None):
        raise UsageError("export writes to one place: -o FILE_OR_FOLDER/ or --to "
                         "lancedb://FOLDER/TABLE")
    if target is not None and not target.startswith("lancedb://"):
        raise UsageError(f"--to {target}: export writes to lancedb://FOLDER/TABLE")
    if isinstance(embeddings, EmbeddingSet) or is_embeddings_file(embeddings):
        emb = _saved_set(embeddings)
        if output:
            emb.save(output, parts=parts)
    else:
        import embedkit

        emb = embedkit.extract(embeddings, model, layer=layer, pool=pool, normalize=normalize,
                               weights=weights, cache=cache, label=label, cached_only=True,
                               output=output, parts=parts, chunk_size=chunk_size,
                               progress=False)
    if target:
        emb.to_lancedb(target, overwrite=overwrite)
    if emb.summary is not None:
        return _report_saved(emb, output or target, as_json)
    if as_json:
        return emit_json({"output": output or target, "rows": len(emb), "dim": emb.dim})
    click.echo(f"wrote {len(emb)} x {emb.dim} vectors and {len(emb.label_columns)} label "
               f"column(s) to {output or target}")


def _saved_set(path):
    """FEATS as a set: read already (with --vector-column / --id-column), or read here."""
    from embedkit.embeddings import EmbeddingSet, is_embeddings_file, load_embeddings
    from embedkit.errors import UsageError

    if isinstance(path, EmbeddingSet):
        return path
    if not is_embeddings_file(path):
        raise UsageError(f"{path}: index build reads a saved embeddings file (.parquet, .npy, "
                         ".npz); create one with: embedkit extract DATASET -o FILE.parquet")
    return load_embeddings(path)


from embedkit.cli import compare_cmds, learn_cmds, study_cmds, text_cmds  # noqa: E402

for _area in (text_cmds, learn_cmds, compare_cmds, study_cmds):
    _area.register(cli)


def main():
    cli(prog_name="embedkit")


if __name__ == "__main__":
    main()
