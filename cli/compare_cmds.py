"""Comparison commands: dataset similarity, source and model ranking, transfer advice.

Every dataset argument is a saved EmbeddingSet (.parquet) or a dataset (folder, manifest,
bundled sample name) embedded through the cache by the probe --model. The logic lives in
embedkit.similarity, embedkit.transfer and embedkit.advice; these commands parse and print.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import click

from embedkit.cli.common import cache_option, emit_json, figure_path, json_option, \
    list_options, model_options, read_saved_set, run_options, skip_nonfinite_flag, table

csv_option = click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")


def _extract_options(layer, pool, normalize, weights, cache, run) -> dict:
    """How the probe --model embeds every dataset (the options every embedding command takes)."""
    return {"layer": layer, "pool": pool, "normalize": normalize, "weights": weights,
            "cache": cache, **run}


def _log(message: str):
    click.echo(message, err=True)


def _embed_all(specs, model, options, skip_nonfinite: bool = False) -> dict:
    """{display name: EmbeddingSet} for saved sets or datasets embedded by the probe; with
    `skip_nonfinite` (--skip-nonfinite) the saved sets are read without their non-finite
    vectors."""
    from embedkit.embeddings import is_embeddings_file
    from embedkit.extract import embeddings_of
    from embedkit.similarity import dataset_names

    sets = {}
    for name, spec in zip(dataset_names(specs), specs):
        _log(f"embedding {name}" + (f" with {model}" if model else ""))
        sets[name] = read_saved_set(spec, "--skip-nonfinite", skip_nonfinite=True) \
            if skip_nonfinite and is_embeddings_file(spec) else \
            embeddings_of(spec, model, **options)
    return sets


def _metrics_option(choices, default, help_text):
    return click.option("--metric", "metrics", multiple=True, default=[default],
                        show_default=True, type=click.Choice([*choices, "all"]),
                        help=help_text)


def _plain(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _emit_csv(rows: list[dict], columns: list[str]):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _plain(v) for k, v in row.items()} for row in rows)
    click.echo(out.getvalue(), nl=False)


def _heatmap_path(path: str, metric: str, several: bool) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}-{metric}{p.suffix or '.png'}") if several else p


# -- similarity --------------------------------------------------------------------------------
def similarity_command(cli):
    from embedkit.similarity import MEASURES

    @cli.command("similarity")
    @click.argument("datasets", nargs=-1, required=True)
    @model_options
    @_metrics_option(list(MEASURES), "cosine-mean",
                     "Measure (repeatable, or all): cosine-mean (seed method), emd (Cui et al. "
                     "2018), frechet, mmd (unbiased MMD^2), cka (same items, two models).")
    @click.option("--gamma", type=float, default=None, help="EMD similarity exp(-gamma EMD) "
                  "(default 0.01, as in Cui et al.).")
    @click.option("--heatmap", type=click.Path(dir_okay=False), default=None,
                  callback=figure_path,
                  help="Save the matrix as a PNG (one file per metric: NAME-METRIC.png).")
    @skip_nonfinite_flag
    @run_options
    @cache_option
    @json_option
    @csv_option
    def similarity(datasets, model, layer, pool, normalize, weights, metrics, gamma, heatmap,
                   skip_nonfinite, cache, as_json, as_csv, run):
        """Label-free similarity between datasets A B [C ...]: a matrix per metric.

        \b
        Example:
          embedkit similarity digits-target ./digits-source ./animals --model efficientnet_lite0 \\
              --metric cosine-mean --metric emd --heatmap similarity.png
        """
        from embedkit.plots import heatmap as draw
        from embedkit.similarity import metric_names, similarity_matrix

        names = metric_names(metrics)
        if len(datasets) < 2:
            raise click.UsageError("give at least two datasets to compare")
        sets = _embed_all(datasets, model,
                          _extract_options(layer, pool, normalize, weights, cache, run),
                          skip_nonfinite)
        options = {"gamma": gamma} if gamma is not None else {}
        results = [similarity_matrix(sets, n, **options) for n in names]
        if heatmap:  # bright = similar for every metric
            for r in results:
                path = draw(r.values, r.names, r.names,
                            _heatmap_path(heatmap, r.metric, len(results) > 1), title=r.metric,
                            fmt=".3g", cmap="viridis" if r.higher_is_more_similar else "viridis_r")
                _log(f"saved {path}")
        if as_json:
            return emit_json([r.as_dict() for r in results])
        if as_csv:
            rows = [{"metric": r.metric, **row} for r in results for row in r.rows()]
            return _emit_csv(rows, ["metric", "dataset", *results[0].names])
        for r in results:
            order = "higher = more similar" if r.higher_is_more_similar else \
                "lower = more similar"
            click.echo(f"\n{r.metric} ({order})")
            click.echo(table(r.rows(), ["dataset", *r.names]))
            for note in r.notes:
                click.echo(f"  note: {note}")


# -- rank-sources ------------------------------------------------------------------------------
def rank_sources_command(cli):
    from embedkit.similarity import MEASURES

    @cli.command("rank-sources", cls=list_options("--sources", "-s"))
    @click.argument("target")
    @click.option("--sources", "-s", multiple=True, help="Candidate source datasets (saved sets "
                  "or datasets); values after the first may follow without repeating --sources.")
    @model_options
    @_metrics_option([n for n, m in MEASURES.items() if not m.paired], "cosine-mean",
                     "Similarity measure(s); the first one orders the ranking.")
    @click.option("--gamma", type=float, default=None, help="EMD gamma (default 0.01).")
    @skip_nonfinite_flag
    @run_options
    @cache_option
    @json_option
    @csv_option
    def rank_sources(target, sources, model, layer, pool, normalize, weights, metrics,
                     gamma, skip_nonfinite, cache, as_json, as_csv, run):
        """Rank candidate source datasets by their similarity to TARGET, most similar first.

        Each source stands for the model one would train on it: the closer it is to the
        target, the better the transfer is expected to be.

        \b
        Example:
          embedkit rank-sources ./digits-target --sources ./digits-source ./animals ./faces \\
              --model efficientnet_lite0 --metric cosine-mean --metric emd
        """
        from embedkit.similarity import metric_names, rank_sources as rank

        candidates = list(sources)
        if not candidates:
            raise click.UsageError("name the candidate sources: --sources S1 S2 ...")
        names = [n for n in metric_names(metrics) if not MEASURES[n].paired]
        sets = _embed_all([target, *candidates], model,
                          _extract_options(layer, pool, normalize, weights, cache, run),
                          skip_nonfinite)
        target_name, *source_names = list(sets)
        options = {"gamma": gamma} if gamma is not None else {}
        rows = rank(sets[target_name], {n: sets[n] for n in source_names}, names, **options)
        columns = ["rank", "source", *names]
        if as_json:
            return emit_json({"target": target_name, "metrics": names,
                              "higher_is_more_similar": {n: MEASURES[n].higher_is_more_similar
                                                         for n in names},
                              "ranking": [{k: _plain(v) for k, v in r.items()} for r in rows]})
        if as_csv:
            return _emit_csv(rows, columns)
        click.echo(table(rows, columns))
        best, metric = rows[0], names[0]
        order = "higher" if MEASURES[metric].higher_is_more_similar else "lower"
        runner_up = (f"; next: {rows[1]['source']} at {rows[1][metric]:.4g}"
                     if len(rows) > 1 else "")
        click.echo(f"\npick {best['source']}: the closest to {target_name} of {len(rows)} "
                   f"candidates by {metric} ({best[metric]:.4g}, {order} = more similar"
                   f"{runner_up})")


# -- rank-models -------------------------------------------------------------------------------
def _interval(row) -> str:
    low, high = row.get("low"), row.get("high")
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return "-"
    return f"{low:.3f}-{high:.3f}"


def rank_models_command(cli):
    from embedkit.ranking import DEFAULT_BUDGET
    from embedkit.transfer import BUDGETED, DEFAULT_SCORE, FALLBACK_SCORE, SCORES

    @cli.command("rank-models", cls=list_options("--models"))
    @click.argument("target")
    @click.option("--models", "models", multiple=True,
                  help="Candidates: MODEL, MODEL@LAYER or a saved .parquet set; values after "
                       "the first may follow without repeating --models.")
    @click.option("--layers", default=None,
                  help="Comma-separated layers to try for every bare MODEL, e.g. "
                       "blocks.4,blocks.5,pre_logits.")
    @_metrics_option(list(SCORES), DEFAULT_SCORE,
                     f"Score(s); the first orders the ranking. {BUDGETED}: a repeated 5-fold "
                     f"CV linear probe on every candidate the --budget affords, {FALLBACK_SCORE} "
                     "beyond it. leep/nce need the model's classifier head (logits).")
    @click.option("--budget", type=click.FloatRange(min=0), default=DEFAULT_BUDGET,
                  show_default=True,
                  help=f"Seconds the {BUDGETED} ranking may spend probing, after extraction.")
    @click.option("--validate", is_flag=True,
                  help="Also measure each candidate's 5-fold CV linear-probe accuracy (its own "
                       "folds) and report Kendall's tau / weighted tau of every score against "
                       "it.")
    @run_options
    @cache_option
    @json_option
    @csv_option
    def rank_models(target, models, layers, metrics, budget, validate, cache, as_json,
                    as_csv, run):
        """Rank pretrained models (and layers) for the labelled TARGET, best first.

        By default each candidate is measured: a repeated, stratified 5-fold cross-validated
        linear probe, as many repetitions as the budget allows on the candidates still in
        contention; each row says how it was ranked, what that cost, and its accuracy
        interval; candidates the data cannot separate from the leader are marked tied.

        \b
        Example:
          embedkit rank-models ./digits-target --models efficientnet_lite0 efficientnet_lite2 \\
              --layers blocks.4,pre_logits --budget 30
          embedkit rank-models ./digits-target --models efficientnet_lite0 --metric logme \\
              --metric transrate --validate
        """
        from embedkit.transfer import rank_models as rank, score_names

        candidates = list(models)
        if not candidates:
            raise click.UsageError("name the candidates: --models M1 M2@LAYER ...")
        names = score_names(list(metrics))
        ranking = rank(target, candidates, names, validate=validate, budget=budget,
                       layers=[l.strip() for l in layers.split(",")] if layers else None,
                       cache=cache, log=_log, **run)
        budgeted = BUDGETED in names
        others = [n for n in names if n != BUDGETED]
        if budgeted and FALLBACK_SCORE not in others:
            others.append(FALLBACK_SCORE)
        columns = ["rank", "candidate", "dim",
                   *([BUDGETED, "interval", "tied", "method", "seconds"] if budgeted else []),
                   *others, *(["accuracy"] if validate else [])]
        if as_json:
            return emit_json(ranking.as_dict())
        if as_csv:
            return _emit_csv(ranking.rows, [part for c in columns for part in
                                            (["low", "high"] if c == "interval" else [c])])
        rows = [{**r, "interval": _interval(r),
                 "tied": {True: "tied", False: "", None: "-"}.get(r.get("tied"), "")}
                for r in ranking.rows]
        click.echo(table(rows, columns))
        if ranking.summary:
            click.echo("")
        for line in ranking.summary:
            click.echo(line)
        if validate:
            click.echo("\nscore vs measured accuracy (5-fold CV linear probe, seed 0):")
            click.echo(table(ranking.validation, ["metric", "candidates", "kendall_tau",
                                                  "p_value", "weighted_tau"]))
        for note in ranking.notes:
            click.echo(f"note: {note}")


# -- advise ------------------------------------------------------------------------------------
def advise_command(cli):
    from embedkit.advice import SIMILAR_ABOVE, SMALL_BELOW_PER_CLASS
    from embedkit.ranking import DEFAULT_BUDGET

    @cli.command("advise", cls=list_options("--models"))
    @click.argument("target")
    @click.option("--source", "-s", required=True,
                  help="A sample of the data the pretrained model learnt from (or a stand-in).")
    @model_options
    @click.option("--small-below", type=int, default=SMALL_BELOW_PER_CLASS, show_default=True,
                  help="Items per class under which the target counts as small.")
    @click.option("--similar-above", type=float, default=SIMILAR_ABOVE, show_default=True,
                  help="cosine-mean similarity from which the source counts as similar.")
    @click.option("--models", "candidates", multiple=True,
                  help="Also rank these candidates (as rank-models takes them; values after "
                       "the first may follow without repeating --models) and quote the winner, "
                       "its interval, and on a tie the cheapest tied candidate.")
    @click.option("--layers", default=None, help="Layers to try for every bare --models MODEL.")
    @click.option("--budget", type=click.FloatRange(min=0), default=DEFAULT_BUDGET,
                  show_default=True, help="Seconds the ranking may spend probing.")
    @run_options
    @cache_option
    @json_option
    def advise(target, source, model, layer, pool, normalize, weights, small_below,
               similar_above, candidates, layers, budget, cache, as_json, run):
        """How to transfer to TARGET: the rule of thumb on measured size and similarity.

        \b
        Example:
          embedkit advise ./digits-target --source ./digits-source --model efficientnet_lite0
          embedkit advise ./digits-target --source ./digits-source \\
              --models efficientnet_lite0 efficientnet_lite2 --layers blocks.4,pre_logits
        """
        from embedkit.advice import advise as apply_rule
        from embedkit.transfer import parse_candidate

        expanded = [c for spec in candidates for c in parse_candidate(
            spec, [l.strip() for l in layers.split(",")] if layers else None)]
        options = _extract_options(layer, pool, normalize, weights, cache, run)
        advice = apply_rule(target, source, model=model, small_below=small_below,
                            similar_above=similar_above, candidates=expanded, budget=budget,
                            **options)
        if as_json:
            return emit_json(advice.as_dict())
        click.echo("\n".join(advice.lines()))


def register(cli):
    similarity_command(cli)
    rank_sources_command(cli)
    rank_models_command(cli)
    advise_command(cli)

