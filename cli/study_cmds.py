"""`embedkit study`: the whole transfer decision in one command and one page.

The logic lives in embedkit.study (the numbers) and embedkit.study_page (the page); this
command parses, calls them and prints the verdict and where the page is.
"""

from __future__ import annotations

import click

from embedkit.cli.common import (cache_option, choice, emit_json, json_option, list_options,
                                 run_options)
from embedkit.options import CLASSIFIER_NAMES, PROJECTIONS


def _log(message: str):
    click.echo(message, err=True)


@click.command("study", cls=list_options("--sources", "-s", "--models"))
@click.argument("target")
@click.option("--sources", "-s", multiple=True,
              help="Candidate source datasets (folders, bundled names or saved sets); the "
                   "closest to TARGET is the one the rule of thumb reasons about.")
@click.option("--models", multiple=True,
              help="Candidates: MODEL, MODEL@LAYER or a saved .parquet set (default: "
                   "efficientnet_lite0 at blocks.4 and at pre_logits for images).")
@click.option("--classifier", "-c", type=choice(CLASSIFIER_NAMES), default="svm-linear",
              show_default=True, help="The classifier judged on the picked candidate.")
@click.option("--budget", type=click.FloatRange(min=0), default=None,
              help="Seconds the ranking may spend probing (default 60).")
@click.option("--cv", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the nested cross-validation (fewer where a class is smaller).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--map", "projection", type=choice(PROJECTIONS), default="pca",
              show_default=True, help="2-D projection of the embedding map.")
@click.option("--label", default=None, help="Label column of a manifest target.")
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder for index.html and study.json.")
@run_options
@cache_option
@json_option
def study(target, sources, models, classifier, budget, cv, seed, projection, label, output,
          cache, as_json, run):
    """Study how to transfer to the labelled TARGET, into one self-contained HTML page.

    Ranks the candidate models and layers (validated against measured accuracy), compares
    TARGET with each source, applies the rule of thumb, judges a classifier on the pick by
    nested cross-validation, and maps the target's embeddings. OUT/index.html works offline;
    OUT/study.json holds every number on it.

    \b
    Example:
      embedkit study digits-target --sources digits-source animal-shape \\
          --models efficientnet_lite0@blocks.4 efficientnet_lite0 --budget 20 -o report/
    """
    from pathlib import Path

    from embedkit.study import study as run_study

    result = run_study(target, list(sources), list(models) or None, classifier=classifier,
                       budget=budget, output=output, cv=cv, seed=seed, projection=projection,
                       label=label, cache=cache, log=_log, **run)
    page = Path(output) / "index.html"
    if as_json:
        return emit_json(result)
    v = result["verdict"]
    if v["source"]:
        click.echo(f"source:   {v['source']} (cosine-mean {v['source_similarity']:.3f})")
    click.echo(f"pick:     {v['candidate']}"
               + (f" (cheapest of {len(v['tied'])} tied)" if len(v["tied"]) > 1 else ""))
    if v["transfer"]:
        click.echo(f"how:      {v['transfer']} (rule of thumb: {v['strategy']})")
    interval = (f"{v['confidence']:.0%} interval {v['low']:.3f}-{v['high']:.3f}, "
                if v["low"] is not None and v["high"] is not None else "")
    click.echo(f"accuracy: {v['accuracy']:.3f} ({interval}{v['classifier']}, {v['estimate']})")
    for warning in result["warnings"]:
        click.echo(f"warning:  {warning}")
    click.echo(f"page:     {page}")


def register(cli):
    cli.add_command(study)
