"""Text and query commands: similar, cosine, analogy, eval-vectors, word2vec train,
zero-shot."""

from __future__ import annotations

import click

from embedkit.cli.common import EmbedkitGroup, cache_option, choice, embeddings_columns, \
    emit_json, json_option, run_options, table
from embedkit.errors import UsageError
from embedkit.options import ANALOGY_METHODS, INDEXES

INDEX_HELP = ("Search index: exact (default; every cosine computed, by blocked matrix "
              "products), or faiss' approximate ivf / hnsw for large sets, whose recall@k "
              "against exact search is measured and printed; or, with --embeddings, an index "
              "file saved by `embedkit index build` for that set (used without rebuilding).")
KEEP_HELP = ("Keep the query words/items in the answers (by default they are dropped, as "
             "gensim does).")
LIMIT_HELP = "Use only the N most frequent words of the vocabulary."


def _neighbor_rows(results, score: str = "cosine"):
    return [{"rank": i, "key": n.key, score: round(n.score, 4)}
            for i, n in enumerate(results, 1)]


def _recall_line(space, index, k):
    from embedkit.vector_search import RECALL_QUERIES, measure_recall

    index = space.index(index)
    recall = measure_recall(index, space.unit, k=k)
    return recall, f"recall@{k} of the {index.kind} index against exact search: " \
                   f"{recall:.3f} ({min(RECALL_QUERIES, len(space.unit))} sampled rows)"


def _search_index(index: str, emb):
    """--index: a kind (exact, ivf, hnsw), or a saved index file checked against the set."""
    import os

    if index in INDEXES.values:
        return index
    if not os.path.exists(index):
        INDEXES.check(index, "--index (a kind, or a saved index file)")
    if emb is None:
        raise UsageError(f"--index {index}: a saved index searches the set it was built from; "
                         "give that set with --embeddings")
    from embedkit.query_resolution import saved_index

    return saved_index(index, emb)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("query")
@click.option("--model", "-m", default=None,
              help="Word vectors to search (default glove-6b-50d); with --embeddings, the model "
                   "that embeds a dataset given there.")
@click.option("--embeddings", "-e", default=None,
              help="Search the items of this EmbeddingSet (.parquet; or another tool's "
                   ".parquet / .npy / .npz) or dataset instead.")
@embeddings_columns
@click.option("-k", "topn", type=int, default=10, show_default=True, help="How many answers.")
@click.option("--index", default="exact", show_default=True, metavar="exact|ivf|hnsw|FILE",
              help=INDEX_HELP)
@click.option("--keep-query-words", is_flag=True, help=KEEP_HELP)
@click.option("--limit", type=int, default=None, help=LIMIT_HELP)
@json_option
def similar(query, model, embeddings, topn, index, keep_query_words, limit, as_json):
    """Nearest neighbours of QUERY by cosine similarity.

    QUERY is a word of a word-vectors model, or, with --embeddings, an item of a saved
    EmbeddingSet: its id, the path of one of its files, or a new image / text (embedded with
    the set's own model).

    \b
    Examples:
      embedkit similar frog
      embedkit similar frog --model vectors.kv -k 5 --json
      embedkit similar 5/00012.png --embeddings digits.parquet
      embedkit similar "a gripping, moving film" --embeddings reviews.parquet
      embedkit similar 5/00012.png --embeddings digits.parquet --index digits.faiss
      embedkit similar "a photo of a dog" --embeddings photos.parquet   # a CLIP image set:
                                                  # the text is embedded by the text tower
    """
    from embedkit.query_resolution import set_query, word_space
    from embedkit.vector_space import VectorSpace

    emb = None
    if embeddings:
        from embedkit.extract import embeddings_of

        emb = embeddings_of(embeddings, model, progress=False)
    searched = _search_index(index, emb)  # a wrong index file is refused before any embedding
    if emb is not None:
        space = VectorSpace.from_embeddings(emb)
        q = set_query(emb, query)
    else:
        space = word_space(model, limit)
        q = query
    results = space.most_similar(q, topn=topn, keep_query_words=keep_query_words,
                                 index=searched)
    recall = _recall_line(space, searched, topn) if index != "exact" else None
    rows = _neighbor_rows(results)
    if as_json:
        return emit_json({"query": query, "space": space.name, "index": index,
                          "query_excluded": not keep_query_words,
                          "recall_at_k": recall[0] if recall else None, "neighbors": rows})
    click.echo(table(rows))
    if recall:
        click.echo(recall[1], err=True)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("a")
@click.argument("b")
@click.option("--model", "-m", default=None,
              help="Model that embeds A and B (default glove-6b-50d for words/texts, "
                   "efficientnet_lite0 for image files).")
@click.option("--embeddings", "-e", default=None,
              help="Look A and B up in this EmbeddingSet (ids, file paths) or embed them like it.")
@embeddings_columns
@json_option
def cosine(a, b, model, embeddings, as_json):
    """Cosine similarity of two items: words, texts, image files or raw vectors.

    \b
    Examples:
      embedkit cosine -0.4,0.8 -0.3,0.2          # raw vectors: 0.8682
      embedkit cosine king queen
      embedkit cosine "a fine film" "a great movie" --model all-minilm-l6-v2
      embedkit cosine cat.jpg dog.jpg
    """
    from embedkit.query_resolution import item_vectors
    from embedkit.vector_search import cosine as cos

    va, vb = item_vectors([a, b], model=model, embeddings=embeddings)
    score = cos(va, vb)
    if as_json:
        return emit_json({"a": a, "b": b, "model": model, "cosine": score})
    click.echo(f"{score:.4f}")


@click.command()
@click.argument("expression", nargs=-1, required=True)
@click.option("--model", "-m", default=None, help="Word vectors (default glove-6b-50d).")
@click.option("--method", type=choice(ANALOGY_METHODS), default="add", show_default=True,
              help="3CosAdd (vector offset) or 3CosMul (Levy & Goldberg 2014).")
@click.option("--keep-query-words", is_flag=True, help=KEEP_HELP)
@click.option("-k", "topn", type=int, default=10, show_default=True, help="How many answers.")
@click.option("--limit", type=int, default=None, help=LIMIT_HELP)
@json_option
def analogy(expression, model, method, keep_query_words, topn, limit, as_json):
    """Solve a word analogy written as vector arithmetic.

    The query words are dropped from the answers unless --keep-query-words.  Quote the
    expression when a sign touches a word ("king -man +woman"): unquoted, -man reads as an
    option.

    \b
    Examples:
      embedkit analogy "king - man + woman"
      embedkit analogy paris - france + italy --method mul -k 3 --json
    """
    from embedkit.query_resolution import parse_expression, word_space

    expression = " ".join(expression)
    positive, negative = parse_expression(expression)
    space = word_space(model, limit)
    results = space.analogy(positive, negative, method=method, topn=topn,
                            keep_query_words=keep_query_words)
    rows = _neighbor_rows(results, "cosine" if method == "add" else "3cosmul")
    name = {"add": "3CosAdd", "mul": "3CosMul"}[method]
    if as_json:
        return emit_json({"expression": expression, "positive": positive, "negative": negative,
                          "method": method, "query_excluded": not keep_query_words,
                          "model": space.name, "answers": rows})
    excluded = "query words kept" if keep_query_words else \
        "query words excluded (--keep-query-words keeps them)"
    click.echo(f"{expression}  [{name}; {excluded}; {space.name}]", err=True)
    click.echo(table(rows))


@click.command("eval-vectors")
@click.option("--model", "-m", default=None, help="Word vectors (default glove-6b-50d).")
@click.option("--analogies", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Analogy questions, questions-words.txt format (default: gensim's copy of "
                   "the Google set).")
@click.option("--pairs", type=click.Path(dir_okay=False, exists=True), multiple=True,
              help="Word-pair similarity files (default: gensim's wordsim353.tsv and "
                   "simlex999.txt). Repeatable.")
@click.option("--no-analogies", is_flag=True, help="Only the word-pair correlations.")
@click.option("--method", type=choice(ANALOGY_METHODS), default="add", show_default=True)
@click.option("--restrict-vocab", type=int, default=300_000, show_default=True,
              help="Only the N most frequent words answer and count as known (gensim's rule).")
@click.option("--limit", type=int, default=None, help=LIMIT_HELP)
@json_option
def eval_vectors(model, analogies, pairs, no_analogies, method, restrict_vocab, limit, as_json):
    """Evaluate word vectors: analogy accuracy per section, word-pair correlations.

    Reproduces gensim's evaluate_word_analogies / evaluate_word_pairs (questions or pairs with
    a word outside the first --restrict-vocab words are skipped and counted as OOV).

    \b
    Example: embedkit eval-vectors --model glove-6b-50d --json
    """
    from embedkit.query_resolution import word_space
    from embedkit.wordvector_evaluation import (default_test_file, evaluate_analogies,
                                                evaluate_word_pairs)

    space = word_space(model, limit)
    report = {"model": space.name}
    if not no_analogies:
        report["analogies"] = evaluate_analogies(
            space, analogies or default_test_file("questions-words.txt"),
            restrict_vocab=restrict_vocab, method=method).as_dict()
    files = pairs or (default_test_file("wordsim353.tsv"), default_test_file("simlex999.txt"))
    report["pairs"] = [evaluate_word_pairs(space, f, restrict_vocab=restrict_vocab).as_dict()
                       for f in files]
    if as_json:
        return emit_json(report)
    if "analogies" in report:
        a = report["analogies"]
        rows = [{"section": s["section"], "correct": s["correct"], "evaluated": s["total"],
                 "accuracy": round(s["accuracy"], 4)} for s in a["sections"]]
        rows.append({"section": "TOTAL", "correct": a["correct"], "evaluated": a["evaluated"],
                     "accuracy": round(a["accuracy"], 4)})
        click.echo(f"analogies ({a['method']}, {a['path']}): {a['oov_questions']:,} of "
                   f"{a['questions']:,} questions skipped as OOV ({100 * a['oov_ratio']:.1f}%)")
        click.echo(table(rows))
        click.echo()
    click.echo(table([{"pairs": p["path"].rsplit("/", 1)[-1], "pearson": round(p["pearson"], 4),
                       "spearman": round(p["spearman"], 4), "scored": p["pairs"],
                       "oov": p["oov_pairs"], "oov %": round(100 * p["oov_ratio"], 2)}
                      for p in report["pairs"]]))


@click.group(cls=EmbedkitGroup)
def word2vec():
    """Train word vectors on your own corpus."""


@word2vec.command("train")
@click.argument("corpus")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to save the vectors (.kv, memory-mappable).")
@click.option("--sg/--cbow", default=True, show_default=True,
              help="Skip-gram (default, better on small corpora) or CBOW.")
@click.option("--dim", type=int, default=100, show_default=True)
@click.option("--window", type=int, default=5, show_default=True)
@click.option("--min-count", type=int, default=5, show_default=True,
              help="Ignore words seen fewer times.")
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--workers", type=int, default=None, help="Threads (default: all CPUs).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def word2vec_train(corpus, output, sg, dim, window, min_count, epochs, workers, seed, quiet):
    """Train word2vec on CORPUS (a text file, one sentence or document per line; or a .csv /
    .jsonl with a text column; or a folder of .txt files), tokenised by embedkit's tokeniser.

    \b
    Example:
      embedkit word2vec train corpus.txt -o vectors.kv --dim 50 --epochs 10
      embedkit similar court --model vectors.kv
    """
    from embedkit.wordvectors import train_word2vec

    kv = train_word2vec(corpus, output, sg=sg, dim=dim, window=window, min_count=min_count,
                        epochs=epochs, workers=workers, seed=seed,
                        progress=False if quiet else None)
    click.echo(f"saved {len(kv.index_to_key):,} words x {kv.vector_size} "
               f"({'skip-gram' if sg else 'CBOW'}) to {output}; use it with --model {output}")


@click.command("zero-shot")
@click.argument("dataset")
@click.option("--model", "-m", required=True,
              help="An image-text model, e.g. openclip/ViT-B-32@laion2b_s34b_b79k.")
@click.option("--labels", required=True, help="Class names, comma-separated: cat,dog,bird.")
@click.option("--template", default="a photo of a {}", show_default=True,
              help="The prompt each class name fills; {} marks its place.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="A local checkpoint of the model (.safetensors / .pth).")
@run_options
@cache_option
@json_option
def zero_shot(dataset, model, labels, template, weights, cache, as_json, run):
    """Classify the images of DATASET among --labels with no training: each image takes the
    class whose prompt, embedded by the model's text tower, is nearest by cosine (CLIP,
    Radford et al. 2021).  With labelled data (class subfolders) it reports the accuracy.

    \b
    Examples:
      embedkit zero-shot ./pets --model openclip/ViT-B-32@laion2b_s34b_b79k --labels cat,dog
      embedkit zero-shot ./pets -m openclip/ViT-B-32@laion2b_s34b_b79k --labels cat,dog \\
          --template "a blurry photo of a {}" --json
    """
    from embedkit.zero_shot import zero_shot as classify

    result = classify(dataset, model, labels, template=template, weights=weights, cache=cache,
                      **run)
    if as_json:
        return emit_json(result.as_dict())
    if result.accuracy is None:
        click.echo(table(result.as_dict()["items"]))
        return
    rows = [{"class": c, "accuracy": a} for c, a in result.per_class.items()]
    click.echo(table(rows))
    click.echo(f"accuracy {result.accuracy:.4f} over {len(result.ids)} images "
               f"({len(result.labels)} labels)")


def register(cli):
    for command in (similar, cosine, analogy, eval_vectors, word2vec, zero_shot):
        cli.add_command(command)
