"""The rule of thumb: how to transfer, from the target's size and its similarity to the source.

| target data | similar to the source                    | dissimilar to the source                |
|-------------|------------------------------------------|-----------------------------------------|
| small       | freeze; linear classifier on top features | SVM on lower-layer (more generic) features |
| large       | fine-tune many layers                    | train from scratch (or fine-tune everything) |

Both axes are measured, and the thresholds are stated with every answer:

- **size**: labelled items per class (n / classes; total items for an unlabelled target).
  *Small* below 1,000 per class. Rationale: around 1,000 images per class is the scale at which
  ImageNet trains all layers of a network from scratch; well below it, fine-tuning millions of
  weights on a few hundred examples per class overfits, and frozen features with a light
  classifier are competitive (the course's premise).
- **similarity**: cosine of the mean embeddings (the course's seed method) of target and source
  under the probe model at its default layer (``pre_logits``). *Similar* from 0.9. Rationale,
  measured with EfficientNet-Lite0 on the bundled samples (docs/compare.md): same-domain pairs
  score 0.96-0.99 (digits 0-4 vs 5-9: 0.991; two halves of the animal classes: 0.964), while
  cross-domain pairs score 0.48-0.82 (digits vs animal silhouettes 0.64, digits vs faces 0.69).
  0.9 sits in the gap. Pooled post-activation features are non-negative, so cosines between
  unrelated sets stay well above 0: the scale is model- and layer-specific; pass
  ``similar_above`` when probing with another model or layer.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass

import numpy as np

from .embeddings import EmbeddingSet, is_embeddings_file
from .errors import EmbedkitError

__all__ = ["SIMILAR_ABOVE", "SIMILARITY_METRIC", "SMALL_BELOW_PER_CLASS", "STRATEGIES", "Advice",
           "advise", "inference_cost", "lower_layer", "quote_ranking", "ranking_lines"]

SMALL_BELOW_PER_CLASS = 1000
SIMILAR_ABOVE = 0.9
SIMILARITY_METRIC = "cosine-mean"

STRATEGIES = {
    (True, True): "freeze the network; train a linear classifier on the top-layer features",
    (True, False): "freeze the network; train an SVM on lower-layer (more generic) features",
    (False, True): "fine-tune many layers (the head first, then the top blocks; small learning "
                   "rates, lower for the bottom layers)",
    (False, False): "train from scratch, or fine-tune the whole network",
}


@dataclass
class Advice:
    target: str
    source: str
    model: str
    layer: str  # the layer the similarity was measured at
    items: int
    classes: int | None
    items_per_class: float
    similarity: float
    metric: str
    small_below: int
    similar_above: float
    small: bool
    similar: bool
    strategy: str
    command: str
    also: list[str]
    ranking: dict | None = None  # the candidates' ranking, when candidates were given

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        size = (f"{self.items} items in {self.classes} classes = {self.items_per_class:.0f} per "
                f"class" if self.classes else f"{self.items} items (no labels)")
        return [
            f"target size:  {size} -> {'small' if self.small else 'large'} "
            f"(small below {self.small_below} per class)",
            f"similarity:   {self.metric} {self.similarity:.3f} to {self.source} with "
            f"{self.model}@{self.layer} -> {'similar' if self.similar else 'dissimilar'} "
            f"(similar from {self.similar_above})",
            f"advice:       {self.strategy}",
            f"next:         {self.command}",
            *(f"              {line}" for line in self.also),
            *ranking_lines(self.ranking),
        ]


def ranking_lines(ranking: dict | None) -> list[str]:
    """What the ranking says, in the words the advice uses (see `quote_ranking`)."""
    if not ranking:
        return []
    best = ranking["best"]
    lines = [f"best model:   {best['candidate']}, {_measured(best)}"]
    if len(ranking["tied"]) > 1:
        pick = ranking["pick"]
        lines.append(f"              {len(ranking['tied'])} candidates tie with it on this "
                     f"data ({', '.join(r['candidate'] for r in ranking['tied'])}): the "
                     f"cheapest, {pick['candidate']} ({pick['cost']}), is the sensible pick")
    return lines


def _measured(row: dict) -> str:
    if row.get("low") is None or np.isnan(row["low"]):  # over budget: no interval
        return f"ranked by {row['method']}"
    return (f"probe accuracy {row['value']:.3f} (95% interval {row['low']:.3f}-"
            f"{row['high']:.3f}, {row['method']})")


def quote_ranking(ranking, cost) -> dict:
    """The winner of a `transfer.rank_models` ranking (default score), its interval, the
    candidates tied with it and the sensible pick among them: the cheapest to use, by
    `cost(row) -> (cost per item or None, text)` (`inference_cost(dataset)` counts the
    operations of one forward pass). Ties are a statement about the data: when it cannot tell
    candidates apart, paying more for the bigger one buys nothing measurable."""
    from .transfer import BUDGETED

    def plain(row):
        return {"candidate": row["candidate"], "value": row.get(BUDGETED, float("nan")),
                "low": row.get("low"), "high": row.get("high"), "method": row.get("method")}

    best = ranking.rows[0]
    tied = ranking.tied
    pick = {**plain(best), "cost": "-"}
    if len(tied) > 1:
        costed = [cost(row) for row in tied]
        known = [(c[0], c[1], row) for c, row in zip(costed, tied) if c[0] is not None]
        if known:
            _, text, row = min(known, key=lambda k: k[0])
            pick = {**plain(row), "cost": text}
    return {"best": plain(best), "tied": [plain(r) for r in tied], "pick": pick,
            "summary": ranking.summary}


def inference_cost(dataset):
    """cost(row) for `quote_ranking`: operations per item of embedding `dataset` with the
    row's MODEL@LAYER (`ranking.inference_flops`); unknown for a saved set."""
    from .ranking import inference_flops

    def cost(row: dict):
        if not row.get("model") or not dataset:
            return None, "cost unknown"
        try:
            flops = inference_flops(dataset, row["model"], layer=row.get("layer"))
        except EmbedkitError:  # a saved set's model that is not on this machine
            return None, "cost unknown"
        return flops, (f"{flops / 1e9:.2f} GFLOPs per item" if flops else
                       "no convolution or matrix product to count")

    return cost


def lower_layer(model: str) -> str | None:
    """A lower, more generic block to read: 60% of the way up the model's block layers
    (blocks.4 of EfficientNet-Lite's blocks.0-6 + bn2; layer3 of a ResNet); None for a model
    without block layers (text models)."""
    from .registry import create_backbone

    blocks = [name for name in create_backbone(model).layers()[1:] if name != "logits"]
    return blocks[int(len(blocks) * 0.6)] if blocks else None


def _spec_text(spec) -> str:
    if isinstance(spec, EmbeddingSet):
        return str(spec.meta.get("dataset", "TARGET"))
    return str(spec)


def advise(target, source, model: str | None = None, layer: str | None = None,
           small_below: int = SMALL_BELOW_PER_CLASS, similar_above: float = SIMILAR_ABOVE,
           candidates=None, budget: float | None = None, **extract_options) -> Advice:
    """Apply the rule of thumb to a target (dataset or saved set) and a source (a sample of
    the data the pretrained model learnt from, or any stand-in for it), both embedded by the
    probe `model` (default: the modality's default backbone) at `layer` (default: its own).
    Returns the measured size and similarity, the thresholds, the strategy and the next
    embedkit command. With `candidates` (as `transfer.rank_models` takes them) the target
    must be labelled; they are ranked within `budget` seconds, and the advice quotes the
    winner with its interval and, on a tie, the cheapest tied candidate as the pick."""
    from .extract import embeddings_of
    from .similarity import cosine_mean, check_same_probe

    target_set = embeddings_of(target, model, layer=layer, **extract_options)
    model = target_set.meta.get("model") or model
    layer = target_set.meta.get("layer") or layer
    if is_embeddings_file(source) or isinstance(source, EmbeddingSet):
        source_set = embeddings_of(source)
    else:
        source_set = embeddings_of(source, model, layer=layer, **extract_options)
    check_same_probe({"target": target_set, "source": source_set})
    similarity = cosine_mean(target_set, source_set)
    labels = target_set.labels
    labelled = labels is not None and all(v is not None for v in labels)
    classes = len(np.unique(labels.astype(str))) if labelled else None
    per_class = len(target_set) / classes if classes else float(len(target_set))
    small, similar = per_class < small_below, similarity >= similar_above
    target_text = _spec_text(target) if not is_embeddings_file(target) else \
        target_set.meta.get("dataset", str(target))
    command, also = _next_steps(target_text, model, small, similar,
                                target_set.label_columns if labelled else None)
    ranked = None
    if candidates:
        from .transfer import rank_models

        ranking = rank_models(target, candidates, budget=budget, **extract_options)
        ranked = quote_ranking(ranking, inference_cost(target_set.meta.get("dataset")))
    return Advice(target=target_text, source=_spec_text(source), model=model, layer=layer,
                  items=len(target_set), classes=classes, items_per_class=per_class,
                  similarity=similarity, metric=SIMILARITY_METRIC, small_below=small_below,
                  similar_above=similar_above, small=small, similar=similar,
                  strategy=STRATEGIES[(small, similar)], command=command, also=also,
                  ranking=ranked)


def _next_steps(target: str, model: str, small: bool, similar: bool,
                label_columns: dict | None) -> tuple[str, list[str]]:
    """The next command and the advice's further steps; the target's `label_columns` (None:
    it has no labels) fit the command's folds to its smallest class."""
    from .classify import labelled_class_counts, train_command

    t = shlex.quote(target)
    lower = lower_layer(model) if not similar else None
    command = train_command(target, model, "logreg" if similar else "svm-rbf", layer=lower,
                            label_columns=label_columns)
    also = []
    for name, values in (label_columns or {}).items():
        classes, counts = labelled_class_counts(values)
        if len(classes) < 2:
            also.append(f"the target has a single class ('{name}'): a classifier needs two or "
                        "more; label more classes before training")
        elif counts.min() < 2:
            also.append(f"class '{classes[counts.argmin()]}' of '{name}' has a single item: "
                        "training needs two per class; add examples first")
    if label_columns is None:
        also.append("the target has no labels: label it (class subfolders or a manifest "
                    "column) before training")
    if not similar and lower:
        also.append(f"check which layer: embedkit rank-models {t} --models {model} "
                    f"--layers {lower},pre_logits --metric logme --validate")
    if not small:
        unfreeze = "top-3" if similar else "all"
        also.append(f"fine-tune: embedkit finetune {t} --model {model} --unfreeze {unfreeze} "
                    "--lr 1e-3 --lr-decay 0.5 --epochs 10 --augment crop=0.85 "
                    "--compare-probe -o finetuned/  (the command above is the baseline it "
                    "must beat)")
    return command, also
