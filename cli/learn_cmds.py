"""Learning commands: train, evaluate, predict, plot.  `register(cli)` adds them to the group."""

from __future__ import annotations

from pathlib import Path

import click

from embedkit.cli.common import cache_option, choice, device_option, emit_json, figure_path, \
    json_option, model_options, quiet_option, run_options, skip_nonfinite_option, table
from embedkit.classify import DEFAULT_CV
from embedkit.finetune import DEFAULTS
from embedkit.options import AUGMENT_MODES, CLASSIFIER_NAMES, OPTIMIZERS, PROJECTIONS, \
    RESAMPLING, SCALERS




def _extraction_note(es):
    summary = es.summary
    if summary is not None:
        click.echo(str(summary), err=True)


def _skops_path(ctx, param, value: str) -> str:
    """A model is saved as NAME.skops: any other name could be a user's data (before, `-o
    feats.parquet` replaced the features with the model)."""
    if not value.lower().endswith(".skops"):
        raise click.BadParameter(f"{value}: a model is saved as a .skops file, e.g. -o "
                                 "model.skops")
    return value


@click.command()
@click.argument("features_or_dataset")
@model_options
@click.option("--classifier", "-c", type=choice(CLASSIFIER_NAMES), default="svm-linear",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              callback=_skops_path,
              help="Where to save the model (.skops).")
@click.option("--cv", type=int, default=DEFAULT_CV, show_default=True,
              help="Folds of the stratified cross-validation that picks hyper-parameters.")
@click.option("--scale", type=choice(SCALERS), default="standard",
              show_default=True, help="StandardScaler or L2 Normalizer before the classifier.")
@click.option("--class-weight", type=click.Choice(["balanced"]), default=None,
              help="Weigh classes by inverse frequency.")
@click.option("--resample", type=choice(RESAMPLING), default=None,
              help="Balance classes by random over-/under-sampling inside the training folds.")
@click.option("--augment", type=int, default=0, metavar="N",
              help="N augmented views per image (images only; cached like any embedding).")
@click.option("--augment-recipe", default=None, metavar="RECIPE",
              help="Transformations, default 'hflip,crop=0.85,jitter=0.2' "
                   "(also vflip, rotate=DEGREES).")
@click.option("--augment-mode", type=choice(AUGMENT_MODES), default="rows",
              show_default=True,
              help="rows: views are extra training rows; average: every embedding (training and "
                   "prediction) is the mean over the original and its views.")
@click.option("--holdout", type=float, default=None, metavar="FRACTION",
              help="Keep a stratified fraction out of training and report metrics on it.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of folds, resampling, augmentation and the classifier.")
@click.option("--label", "labels", multiple=True,
              help="Label column(s) to learn, one head each (default: all label columns).")
@click.option("--jobs", type=int, default=None, help="Parallel fits in the grid search.")
@skip_nonfinite_option("features_or_dataset")
@run_options
@cache_option
@json_option
def train(features_or_dataset, model, layer, pool, normalize, weights, classifier, output, cv,
          scale, class_weight, resample, augment, augment_recipe, augment_mode, holdout, seed,
          labels, jobs, cache, as_json, run):
    """Train a light classifier on frozen embeddings and save it as a skops file.

    FEATURES_OR_DATASET is a saved EmbeddingSet (.parquet) or a dataset (folder with class
    subfolders, manifest, bundled name) embedded with --model through the cache.  Each label
    column gets its own head; hyper-parameters are chosen by stratified cross-validation.

    \b
    Examples:
      embedkit train ./digits --classifier svm-linear -o digits.skops --cv 3
      embedkit train feats.parquet -c logreg --class-weight balanced -o m.skops
      embedkit train ./photos --augment 4 --holdout 0.25 -o m.skops
    """
    from embedkit.classify import check_options, train as train_heads, training_features

    check_options(classifier, scale=scale, class_weight=class_weight, resample=resample)
    features, extra = training_features(
        features_or_dataset, model, augment=augment, augment_mode=augment_mode,
        recipe=augment_recipe, seed=seed, layer=layer, pool=pool, normalize=normalize,
        weights=weights, label=labels[0] if labels else None, cache=cache, **run)
    _extraction_note(features)
    trained = train_heads(features, classifier, tasks=labels or None, cv=cv, scale=scale,
                          class_weight=class_weight, resample=resample, seed=seed,
                          holdout=holdout or 0.0, extra_rows=extra, n_jobs=jobs,
                          weights=weights)
    trained.save(output)
    if as_json:
        return emit_json({"output": output, "features": trained.features, **trained.info})
    info = trained.info
    for task, rec in info["tasks"].items():
        counts = ", ".join(f"{c}:{n}" for c, n in rec["train_counts"].items())
        click.echo(f"task '{task}': {len(rec['classes'])} classes, trained on "
                   f"{sum(rec['train_counts'].values())} items ({counts})"
                   + (f" + augmented views = {rec['train_rows']} rows" if extra else ""))
        params = ", ".join(f"{k}={v}" for k, v in rec["best_params"].items())
        click.echo(f"  best {params}: {info['scoring']} {rec['cv_score']:.3f} "
                   f"± {rec['cv_std']:.3f} over {cv} folds (seed {seed}; optimistic, the "
                   "folds also chose the parameters)")
        if rec.get("unconverged_fits"):
            click.echo(f"  note: {rec['unconverged_fits']} fit(s) did not converge", err=True)
        if rec.get("holdout"):
            h = rec["holdout"]
            click.echo(f"  held out {h['n']}: accuracy {h['accuracy']:.3f}, balanced accuracy "
                       f"{h['balanced_accuracy']:.3f}, macro F1 {h['f1_macro']:.3f}")
    from embedkit.classify import describe_features

    click.echo(f"saved {classifier} on {describe_features(trained.features)} to {output}")


def _per_task_path(path: str, task: str, several: bool) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}-{task}{path.suffix}") if several else path


@click.command()
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data")
@click.option("--confusion", type=click.Path(dir_okay=False), default=None, callback=figure_path,
              help="Save the confusion matrix as PNG (one file per task: NAME-TASK.png).")
@run_options
@cache_option
@json_option
def evaluate(model_file, data, confusion, cache, as_json, run):
    """Score MODEL on labelled DATA: accuracy, balanced accuracy, F1, per-class precision and
    recall, ROC-AUC / PR-AUC, confusion matrix.

    DATA is a saved EmbeddingSet from the model's backbone, or a dataset, embedded with the
    backbone recorded in MODEL.

    \b
    Example: embedkit evaluate digits.skops ./digits-test --confusion cm.png
    """
    from embedkit.classify import TrainedClassifier
    from embedkit.plots import confusion_matrix_png

    trained = TrainedClassifier.load(model_file)
    es = trained.embed(data, cache=cache, **run)
    _extraction_note(es)
    reports = trained.evaluate(es)
    written = {}
    if confusion:
        for task, report in reports.items():
            png = _per_task_path(confusion, task, len(reports) > 1)
            written[task] = str(confusion_matrix_png(
                report, png, title=f"{Path(model_file).name}: {task}"))
    if as_json:
        return emit_json({"model": model_file, "data": data, "tasks": reports,
                          "confusion_png": written or None})
    for task, r in reports.items():
        click.echo(f"task '{task}': {r['n']} items")
        click.echo(table([{"accuracy": r["accuracy"], "balanced_acc": r["balanced_accuracy"],
                           "f1_macro": r["f1_macro"], "f1_weighted": r["f1_weighted"],
                           "roc_auc": r["roc_auc"], "pr_auc": r["pr_auc"]}]))
        if r.get("auc_note"):
            click.echo(f"(AUC from {r['auc_from'] or 'no scores'}: {r['auc_note']})")
        if r.get("unseen_note"):
            click.echo(f"note: {r['unseen_note']}", err=True)
        click.echo(table(r["per_class"], ["class", "precision", "recall", "f1", "support"]))
        click.echo("confusion matrix (rows: true, columns: predicted)")
        click.echo(table([{"true": label, **dict(zip(r["labels"], row))}
                          for label, row in zip(r["labels"], r["confusion_matrix"])],
                         ["true", *r["labels"]]))
        if task in written:
            click.echo(f"saved confusion matrix to {written[task]}")


@click.command()
@click.argument("model_file", metavar="MODEL", type=click.Path())
@click.argument("inputs")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write predictions to .csv or .json (default: a table on stdout).")
@run_options
@cache_option
@json_option
def predict(model_file, inputs, output, cache, as_json, run):
    """Predict labels for INPUTS (images, texts, a dataset, or saved features of the model's
    backbone), with class probabilities where the classifier gives them.

    MODEL is a classifier file from `train`, or a folder from `finetune` (its own head
    predicts, with softmax probabilities).

    \b
    Examples:
      embedkit predict digits.skops ./new-images -o preds.csv
      embedkit predict finetuned/ ./new-images
    """
    from embedkit.classify import TrainedClassifier
    from embedkit.errors import UsageError
    from embedkit.finetune import is_finetuned, predictions, read_spec

    suffix = Path(output).suffix.lower() if output else None
    if output and suffix not in (".csv", ".json"):
        raise UsageError(f"{output}: write predictions as .csv or .json")
    if is_finetuned(model_file):
        rows, es = predictions(model_file, inputs, cache=cache, **run)
        tasks = [read_spec(model_file)["task"]]
    else:
        trained = TrainedClassifier.load(model_file)
        es = trained.embed(inputs, cache=cache, **run)
        rows, tasks = trained.predictions(es), trained.tasks
    _extraction_note(es)
    if output:
        _write_rows(rows, Path(output), suffix)
        click.echo(f"wrote {len(rows)} predictions ({', '.join(tasks)}) to {output}")
    elif as_json:
        emit_json(rows)
    else:
        click.echo(table(rows))


def _write_rows(rows: list[dict], path: Path, suffix: str):
    import csv
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@click.command()
@click.argument("features")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              callback=figure_path, help="PNG file to write (or .svg, .pdf).")
@click.option("--method", type=choice(PROJECTIONS), default="pca",
              show_default=True, help="2-D projection (umap needs: pip install 'embedkit[umap]').")
@click.option("--label", default=None, help="Label column that colours the points.")
@click.option("--seed", type=int, default=0, show_default=True)
@skip_nonfinite_option("features")
@run_options
@cache_option
def plot(features, model, layer, pool, normalize, weights, output, method, label, seed, cache,
         run):
    """Draw a 2-D map of FEATURES (saved set, or dataset + --model), coloured by label.

    \b
    Example: embedkit plot ./digits --method tsne -o digits-map.png
    """
    from embedkit.extract import embeddings_of
    from embedkit.plots import embedding_map

    es = embeddings_of(features, model, layer=layer, pool=pool, normalize=normalize,
                       weights=weights, cache=cache, label=label, **run)
    _extraction_note(es)
    embedding_map(es, output, method=method, label=label, seed=seed)
    click.echo(f"saved {method} map of {len(es)} items to {output}")


@click.command()
@click.argument("dataset")
@click.option("--model", "-m", default=None,
              help="Base backbone, a torch image network (default efficientnet_lite0).")
@click.option("--layer", default=None,
              help="Layer the new linear head reads (default pre_logits; embedkit layers MODEL).")
@click.option("--pool", default=None, help="Pooling of a block layer: avg (default), max, gem.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Explicit weights file for the base model.")
@click.option("--unfreeze", default=DEFAULTS.unfreeze, show_default=True,
              help="Blocks to tune: top-N (just below the layer), all, or none (head only).")
@click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True,
              help="Learning rate of the head.")
@click.option("--lr-decay", type=float, default=DEFAULTS.lr_decay, show_default=True,
              help="Each block's rate is this times the rate of the block above it.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--augment", default=None, metavar="RECIPE",
              help="Augment on the fly, e.g. 'hflip,crop=0.85,jitter=0.2' (also vflip, "
                   "rotate=DEGREES); default none.")
@click.option("--val", type=float, default=DEFAULTS.val, show_default=True,
              help="Stratified fraction held out to pick the best epoch and stop early.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--label-smoothing", type=float, default=DEFAULTS.label_smoothing,
              show_default=True)
@click.option("--class-balanced", is_flag=True, help="Weigh the loss by inverse class frequency.")
@click.option("--optimizer", type=choice(OPTIMIZERS), default=DEFAULTS.optimizer,
              show_default=True)
@click.option("--weight-decay", type=float, default=DEFAULTS.weight_decay, show_default=True)
@click.option("--warmup", type=float, default=DEFAULTS.warmup, show_default=True,
              help="Fraction of the steps with a linear warm-up before the cosine decay.")
@click.option("--patience", type=int, default=DEFAULTS.patience, show_default=True,
              help="Stop after this many epochs without a better validation score (0: never).")
@click.option("--compare-probe", is_flag=True,
              help="Also train the frozen-feature linear classifier on the same split.")
@click.option("--resume", is_flag=True, help="Continue the unfinished run in OUT/.")
@click.option("--label", default=None, help="Label column to learn (manifests with several).")
@click.option("-o", "--output", type=click.Path(file_okay=False), required=True,
              help="Folder to write the fine-tuned backbone to.")
@click.option("--batch-size", "-b", type=int, default=DEFAULTS.batch_size, show_default=True)
@click.option("--input-size", type=int, default=None, metavar="PX",
              help="Train and embed at this size instead of the weights' own (small images).")
@click.option("--workers", type=int, default=None,
              help="Image loading processes (default 0 on the CPU, 4 on a GPU).")
@device_option
@quiet_option
@cache_option
@json_option
def finetune(dataset, model, layer, pool, weights, unfreeze, lr, lr_decay, epochs, augment, val,
             seed, label_smoothing, class_balanced, optimizer, weight_decay, warmup, patience,
             compare_probe, resume, label, output, batch_size, input_size, workers, device,
             quiet, cache, as_json):
    """Fine-tune the top blocks of a backbone with a new linear head; OUT/ is a new backbone.

    The bottom of the network stays frozen (BatchNorm statistics too); each tuned block learns
    at --lr-decay times the rate of the block above it, the head at --lr.  The best epoch on a
    held-out split is kept.  Use OUT/ as --model anywhere, and `embedkit predict OUT/ images/`.

    \b
    Examples:
      embedkit finetune ./photos --unfreeze top-2 --epochs 10 --augment hflip,crop=0.85 -o ft/
      embedkit finetune digits-target --unfreeze top-3 --lr 3e-3 --compare-probe -o ft/
      embedkit finetune ./photos --unfreeze top-2 --epochs 10 -o ft/ --resume
      embedkit extract ./more-photos --model ft/ -o feats.parquet
    """
    from embedkit.finetune import finetune as run

    backbone = run(dataset, model, output, layer=layer, pool=pool, weights=weights, label=label,
                   unfreeze=unfreeze, lr=lr, lr_decay=lr_decay, epochs=epochs, augment=augment,
                   val=val, seed=seed, label_smoothing=label_smoothing,
                   class_balanced=class_balanced, optimizer=optimizer,
                   weight_decay=weight_decay, warmup=warmup, patience=patience,
                   batch_size=batch_size, input_size=input_size, device=device,
                   workers=workers, resume=resume,
                   compare_probe=compare_probe, cache=cache, progress=False if quiet else None)
    t = backbone.training
    if as_json:
        return emit_json({"output": output, "fingerprint": backbone.fingerprint(), **t})
    click.echo(table([{"epoch": h["epoch"], "train_loss": h["train_loss"],
                       "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"]}
                      for h in t["history"]]))
    tuned = ", ".join(t["tuned_blocks"]) or "none (head only)"
    click.echo(f"tuned blocks: {tuned}; learning rates "
               + ", ".join(f"{g['name']} {g['lr']:.3g}" for g in t["param_groups"]))
    click.echo(f"fine-tuned:   val accuracy {t['val_accuracy']:.3f} on {t['items']['val']} "
               f"held-out items (best epoch {t['best_epoch']} of {t['epochs_run']}"
               f"{', stopped early' if t['stopped_early'] else ''}; {t['train_seconds']:.0f} s "
               f"on {t['device']})")
    probe = t.get("probe")
    if probe and "val_accuracy" in probe:
        click.echo(f"frozen probe: val accuracy {probe['val_accuracy']:.3f} on the same split "
                   f"({probe['classifier']} on frozen features, {probe['seconds']:.0f} s)")
    elif probe:
        click.echo(f"frozen probe: not trained ({probe['skipped']})")
    click.echo(f"saved backbone to {output} (fingerprint {backbone.fingerprint()[:12]}); use "
               f"--model {output} anywhere, or: embedkit predict {output} IMAGES")


def register(cli):
    for command in (train, evaluate, predict, plot, finetune):
        cli.add_command(command)
