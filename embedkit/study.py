"""The whole transfer decision in one call: `study(target, sources, models)` -> one dict.

A person choosing how to transfer asks, in order: which source is closest to my data, which
model and layer will serve it (and how sure is that), what does the rule of thumb say, how well
does a classifier do, and where does it fail. Each answer already has its module; this one runs
them on one target, in that order, and gathers what they measured into one JSON-ready dict
(`study.json`), which `embedkit.study_page` renders as a self-contained HTML page:

1. **Ranking** (`transfer.rank_models`, default score: the budgeted probe of
   `embedkit.ranking`) with ``validate=True``: every candidate MODEL@LAYER measured by a
   repeated cross-validated linear probe within `budget` seconds, with its interval and ties,
   and Kendall's tau between that ranking and an independent 5-fold probe accuracy. The
   target is extracted through the cache, so a second study is quick.
2. **Pick**: the ranking's winner, or on a tie the cheapest tied candidate
   (`advice.quote_ranking`, by the operations of one forward pass).
3. **Similarity** (`similarity.similarity_matrix`, cosine of the mean embeddings, the measure
   the rule of thumb thresholds) between the target and every source, under the pick's model
   at its default layer; the closest source is the one the advice reasons about.
4. **Advice** (`advice.advise`): the rule of thumb on the measured size and similarity, with
   its next command.
5. **Classifier** on the pick's features, judged honestly by nested cross-validation: each
   outer fold's model has its hyper-parameters chosen by `classify.train`'s inner grid search
   on the outer training part only, and predicts the outer held-out part (Varma and Simon,
   "Bias in error estimation when using cross-validation for model selection", BMC
   Bioinformatics 2006: the grid search's own best score is optimistically biased). The
   out-of-fold predictions give the metrics and the confusion matrix
   (`metrics.classification_report`); the fold accuracies give the Nadeau-Bengio interval
   (`ranking.Measurement`) quoted as the expected accuracy.
6. **Map**: a 2-D projection (`plots.project_2d`, PCA by default) of the pick's features, one
   point per target item, with its label and out-of-fold prediction.

Warnings the numbers need beside them (tiny classes, tied candidates, a ranking that disagrees
with the measured accuracy, an optimistic grid-search score, skipped candidates) are collected
in ``warnings``, never dropped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import EmbedkitError, UsageError
from .ranking import over_budget

__all__ = ["CONFUSED_SHOWN", "TINY_CLASS", "honest_evaluation", "most_confused", "study",
           "write_report"]

#: Classes with fewer items than this get a warning: every estimate on them is coarse.
TINY_CLASS = 10
#: How many misclassified items the report shows (most frequent confusions first).
CONFUSED_SHOWN = 12


def study(target, sources: Sequence = (), models: Sequence | None = None,
          classifier: str = "svm-linear", budget: float | None = None, output=None,
          cv: int = 5, seed: int = 0, projection: str = "pca", label: str | None = None,
          cache=None, log: Callable[[str], None] | None = None, **run) -> dict:
    """Run the transfer study of a labelled `target` and return its dict (also `study.json`).

    Args:
        target: a labelled dataset (folder with class subfolders, manifest, bundled name).
        sources: candidate source datasets (or saved sets); the closest by cosine-mean is the
            one the rule of thumb reasons about. None given: no similarity, no advice.
        models: candidates as `rank-models` takes them (MODEL, MODEL@LAYER, saved .parquet);
            default: the modality's default backbone at its default layer and, for image
            models, at the lower block `advice.lower_layer` names.
        classifier: the light classifier judged on the pick (embedkit.options.CLASSIFIER_NAMES).
        budget: seconds the ranking's probe may spend (default `ranking.DEFAULT_BUDGET`).
        output: a folder to write `index.html` and `study.json` into (`write_report`).
        cv: folds of the nested cross-validation (outer and inner; fewer where a class is
            smaller).
        seed: shuffling of the classifier's folds and the projection.
        projection: the 2-D map: pca, tsne or umap.
        label: the label column of a manifest target.
        cache, run: where vectors are cached; how the backbones run (batch_size, device,
            precision, progress), as `extract` takes them.
    """
    from . import __version__
    from .advice import SIMILARITY_METRIC, advise, inference_cost, quote_ranking
    from .classify import check_options, train_command
    from .extract import embeddings_of
    from .inputs import open_dataset
    from .options import PROJECTIONS
    from .ranking import CONFIDENCE, DEFAULT_BUDGET
    from .similarity import dataset_names, similarity_matrix
    from .transfer import parse_candidate, rank_models

    log = log or (lambda message: None)
    check_options(classifier)
    if output is not None:
        check_report_folder(output)  # before the work, not after it
    PROJECTIONS.check(projection)
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    started = time.perf_counter()
    timings = {}
    dataset = open_dataset(target, label=label)
    models = list(models) if models else _default_candidates(dataset.modality)
    extract = {"cache": cache, **run}  # how every dataset is embedded
    target_options = {**extract, **({"label": label} if label else {})}

    clock = time.perf_counter()
    ranking = rank_models(target, models, validate=True, budget=budget, log=log,
                          **target_options)
    quoted = quote_ranking(ranking, inference_cost(dataset))
    timings["ranking_s"] = time.perf_counter() - clock
    pick = next(r for r in ranking.rows if r["candidate"] == quoted["pick"]["candidate"])
    candidates = {c.label: c for spec in models for c in parse_candidate(spec)}
    chosen = candidates.get(pick["candidate"])
    features = (embeddings_of(chosen.saved) if chosen is not None and chosen.saved else
                embeddings_of(target, pick["model"], layer=pick["layer"], **target_options))

    clock = time.perf_counter()
    similarity = advice = None
    closest = None
    if sources:
        probe = pick["model"]
        names = dataset_names([target, *sources])
        sets = {names[0]: embeddings_of(target, probe, **target_options)}
        for name, spec in zip(names[1:], sources):
            log(f"embedding the source {name} with {probe}")
            sets[name] = embeddings_of(spec, probe, **extract)
        matrix = similarity_matrix(sets, SIMILARITY_METRIC)
        to_target = matrix.values[0, 1:]
        best = int(np.nanargmax(to_target))
        closest = sources[best]
        similarity = {**matrix.as_dict(), "probe": f"{probe} (default layer)",
                      "target": names[0], "closest": names[1 + best],
                      "closest_value": float(to_target[best])}
        log(f"the closest source is {names[1 + best]}; applying the rule of thumb")
        # advise embeds target and source with the same options, so no label column here:
        # a folder source has none to choose (the size per class counts the primary one)
        advice = advise(target, closest, model=probe, **extract).as_dict()
        advice["source"] = names[1 + best]
    timings["similarity_and_advice_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    log(f"judging {classifier} on {pick['candidate']} by nested cross-validation")
    evaluation = honest_evaluation(features, classifier, cv=cv, seed=seed)
    timings["classifier_s"] = time.perf_counter() - clock

    from .plots import project_2d

    clock = time.perf_counter()
    points = project_2d(features.vectors, projection, seed)
    timings["map_s"] = time.perf_counter() - clock
    paths = {item.id: item.path for item in dataset.items}
    texts = {item.id: item.text for item in dataset.items}
    truth = [str(v) for v in features.labels]
    items = [{"id": ident, "label": truth[i], "predicted": evaluation["predicted"][i],
              "x": float(points[i, 0]), "y": float(points[i, 1]),
              "path": paths.get(ident), "text": texts.get(ident)}
             for i, ident in enumerate(features.ids)]
    timings["total_s"] = time.perf_counter() - started

    report = evaluation["report"]
    verdict = {
        "candidate": pick["candidate"], "model": pick["model"], "layer": pick["layer"],
        "ranked_best": quoted["best"]["candidate"], "tied": [r["candidate"] for r in quoted["tied"]],
        "source": similarity["closest"] if similarity else None,
        "source_similarity": similarity["closest_value"] if similarity else None,
        "transfer": None if advice is None else ("freeze" if advice["small"] else "fine-tune"),
        "strategy": advice["strategy"] if advice else None,
        "next_command": train_command(str(target), pick["model"], classifier,
                                      layer=pick.get("layer"), label=label,
                                      label_columns=features.label_columns),
        "accuracy": report["accuracy"], "low": evaluation["low"], "high": evaluation["high"],
        "confidence": CONFIDENCE, "classifier": classifier,
        "estimate": f"nested {evaluation['outer_folds']}-fold cross-validation "
                    f"(inner {evaluation['inner_folds']}-fold grid search)",
    }
    result = {
        "embedkit": __version__,
        "target": str(target), "dataset": dataset.root, "modality": dataset.modality,
        "items": len(features), "dim": features.dim,
        "classes": {c: int(n) for c, n in zip(*np.unique(truth, return_counts=True))},
        "settings": {"sources": [str(s) for s in sources], "models": [str(m) for m in models],
                     "classifier": classifier, "budget_s": budget, "cv": cv, "seed": seed,
                     "projection": projection, "similarity_metric": SIMILARITY_METRIC,
                     "confidence": CONFIDENCE},
        "verdict": verdict,
        "warnings": _warnings(truth, ranking, quoted, evaluation, advice, pick),
        "similarity": similarity,
        "ranking": {**ranking.as_dict(), "best": quoted["best"], "pick": quoted["pick"]},
        "advice": advice,
        "classifier": {k: v for k, v in evaluation.items() if k != "predicted"},
        "confused": most_confused(report, items),
        "map": {"method": projection, "candidate": pick["candidate"], "points": items},
        "timings": timings,
    }
    result = _plain(result)
    if output is not None:
        write_report(result, output)
    return result


def _default_candidates(modality: str) -> list[str]:
    """The default backbone at its default layer, and for image models at a lower, more
    generic block too (the rule of thumb's alternative for dissimilar targets)."""
    from .advice import lower_layer
    from .registry import default_model

    model = default_model(modality)
    lower = lower_layer(model) if modality == "image" else None
    return [f"{model}@{lower}", model] if lower else [model]


def honest_evaluation(features, classifier: str = "svm-linear", cv: int = 5,
                      seed: int = 0) -> dict:
    """Nested cross-validation of `classify.train` on a labelled EmbeddingSet.

    Outer: stratified `cv` folds (fewer when the smallest class is smaller), shuffled with
    `seed`; on each training part `train` chooses hyper-parameters by its own inner stratified
    grid search (as many folds as that part's smallest class allows, at most `cv`) and refits;
    the refitted head predicts the held-out part. Returns the out-of-fold predictions, their
    `classification_report`, the fold accuracies with their Nadeau-Bengio interval, and the
    grid search's own (optimistic) score on all items for comparison."""
    from sklearn.model_selection import StratifiedKFold

    from .classify import train
    from .metrics import classification_report
    from .ranking import Measurement

    truth = np.asarray([str(v) for v in features.labels], dtype=object)
    classes, counts = np.unique(truth, return_counts=True)
    smallest = int(counts.min())
    outer = min(cv, smallest)
    splits = list(StratifiedKFold(outer, shuffle=True, random_state=seed).split(
        np.zeros(len(truth)), truth)) if outer >= 2 else []
    inner = min([cv] + [int(np.unique(truth[tr], return_counts=True)[1].min())
                        for tr, _ in splits]) if splits else 0
    if len(classes) < 2 or outer < 2 or inner < 2:
        small = classes[counts.argmin()]
        raise UsageError(f"class '{small}' has {smallest} item(s): judging a classifier by "
                         "nested cross-validation needs at least 3 per class (and 2 classes)")
    task = next(iter(features.label_columns))
    predicted = np.empty(len(truth), dtype=object)
    folds = []
    for train_rows, test_rows in splits:
        head = train(features.subset(train_rows), classifier, tasks=[task], cv=inner,
                     seed=seed).heads[task]
        predicted[test_rows] = [str(p) for p in head.predict(features.vectors[test_rows])]
        folds.append(float(np.mean(predicted[test_rows] == truth[test_rows])))
    measured = Measurement(folds=folds, test_fraction=1 / (outer - 1))
    low, high = measured.interval()
    whole = train(features, classifier, tasks=[task], cv=outer, seed=seed).info["tasks"][task]
    return {"classifier": classifier, "outer_folds": outer, "inner_folds": inner,
            "seed": seed, "fold_accuracies": folds, "low": low, "high": high,
            "report": classification_report(truth, predicted, list(classes)),
            "grid_search": {"scoring": "balanced_accuracy", "cv_score": whole["cv_score"],
                            "cv_std": whole["cv_std"], "best_params": whole["best_params"],
                            "folds": outer},
            "predicted": [str(p) for p in predicted]}


def most_confused(report: dict, items: list[dict], shown: int = CONFUSED_SHOWN) -> list[dict]:
    """The confusions (true -> predicted) by how often they happen, each with the ids of its
    misclassified items, at most `shown` items in all."""
    labels, matrix = report["labels"], report["confusion_matrix"]
    pairs = sorted(((matrix[i][j], t, p) for i, t in enumerate(labels)
                    for j, p in enumerate(labels) if i != j and matrix[i][j]),
                   key=lambda c: (-c[0], c[1], c[2]))
    out, left = [], shown
    for count, true, predicted in pairs:
        if left <= 0:
            break
        ids = [it["id"] for it in items if it["label"] == true and it["predicted"] == predicted]
        out.append({"true": true, "predicted": predicted, "count": int(count),
                    "ids": ids[:left]})
        left -= len(out[-1]["ids"])
    return out


def _warnings(truth, ranking, quoted, evaluation, advice, pick) -> list[str]:
    out = []
    classes, counts = np.unique(truth, return_counts=True)
    tiny = [f"'{c}' ({n})" for c, n in zip(classes, counts) if n < TINY_CLASS]
    if tiny:
        out.append(f"tiny classes: {', '.join(tiny)} item(s), under {TINY_CLASS} per class: "
                   "every estimate here rests on few examples and its interval is wide")
    if len(quoted["tied"]) > 1:
        out.append(f"near-tied candidates: {', '.join(r['candidate'] for r in quoted['tied'])}"
                   " have overlapping probe accuracy intervals; the data cannot order them, so "
                   f"the pick is the cheapest to run ({quoted['pick']['candidate']})")
    first = ranking.validation[0] if ranking.validation else None
    if first is not None and first["candidates"] == 2:
        out.append("ranking validation over 2 candidates: Kendall tau can only be +1 or -1 "
                   "there; give 3 or more candidates (--models) for it to say something")
    if first is not None and first["candidates"] >= 2:
        tau = first["kendall_tau"]
        if tau is None or (isinstance(tau, float) and math.isnan(tau)):
            out.append("ranking validation: Kendall tau is undefined (the scores or the "
                       "measured accuracies do not vary across candidates)")
        elif tau < 0:
            out.append(f"ranking validation: Kendall tau {tau:.3f} < 0: the ranking disagrees "
                       "with the independently measured probe accuracy")
    grid = evaluation["grid_search"]
    honest = evaluation["report"]["balanced_accuracy"]
    if round(grid["cv_score"], 3) > round(honest, 3):  # a gap the page can show
        out.append(f"optimistic CV: the grid search's own score (balanced accuracy "
                   f"{grid['cv_score']:.3f}) is above the nested estimate ({honest:.3f}): its "
                   "folds also chose the hyper-parameters; quote the nested one")
    out += [f"ranking: {note}" for note in ranking.notes]
    over = [r["candidate"] for r in ranking.rows if over_budget(r)]
    if over:
        out.append(f"over budget: {', '.join(over)} ranked by the fallback score, not measured;"
                   " raise --budget to measure them")
    if advice:
        out += [f"advice: {line}" for line in advice["also"] if "no labels" in line]
    return out + _layer_warning(advice, pick, len(quoted["tied"]) > 1)


def _layer_warning(advice, pick, tied: bool) -> list[str]:
    """Where the rule of thumb's layer (top for a similar source, lower for a dissimilar one)
    is not the layer the ranking picked: the study follows the measurement, and says so."""
    if not advice or not advice["small"] or not pick["model"]:
        return []
    from .registry import create_backbone

    try:
        top = create_backbone(pick["model"]).layers()[0]
    except EmbedkitError:  # a saved set's model that is not on this machine
        return []
    at_top = pick["layer"] in (None, top)
    if at_top == advice["similar"]:
        return []
    wanted = "top-layer" if advice["similar"] else "lower-layer (more generic)"
    measured = "as good as any (tied)" if tied else "best"
    return [f"layer: the rule of thumb suggests {wanted} features, but the ranking measured "
            f"{pick['candidate']} {measured} on this target; the verdict follows the "
            "measurement"]


def _plain(value):
    """JSON-ready: NaN and infinities become None, NumPy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_report_folder(output) -> Path:
    """The report folder, if the study may write there: any folder without an index.html, or
    an earlier study's (it holds study.json); never a file name, nor a folder whose index.html
    is not a study's page (it would be replaced).  Only index.html and study.json are written."""
    folder = Path(output)
    if folder.suffix.lower() in (".html", ".htm", ".json"):
        raise UsageError(f"{output}: the study writes a folder (index.html and study.json in "
                         f"it); name the folder, e.g. -o {folder.with_suffix('')}/")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{output}: is a file; the study writes a folder")
    if (folder / "index.html").exists() and not (folder / "study.json").exists():
        raise UsageError(f"{output}: holds an index.html that is not a study's page; pick "
                         "another folder")
    return folder


def write_report(result: dict, output) -> Path:
    """`output/study.json` and `output/index.html` (self-contained); returns the page's path."""
    from .files import atomic_write
    from .study_page import render

    folder = check_report_folder(output)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "study.json", json.dumps(result, indent=2).encode())
    page = folder / "index.html"
    atomic_write(page, render(result).encode())
    return page
