"""What a query means: a word, an item id, a file, a raw vector or an analogy expression,
resolved against an EmbeddingSet or a backbone into keys and vectors of a `VectorSpace`.

The high floor of the queries: it may embed new items (`extract`) and build backbones
(`registry`); the vector maths below it (`vector_space`, `vector_search`) never imports it.
"""

from __future__ import annotations

import re

import numpy as np

from . import schema
from .errors import BadInputError, NotFoundError, UsageError
from .vector_search import NeighborIndex, measure_recall, rebuild_hint
from .vector_space import VectorSpace

# The names embedkit.neighbors has always re-exported (tests/test_query_layers.py holds them
# fixed); `save_index` / `saved_index` are public too, imported from here.
__all__ = ["embed_like", "item_vectors", "parse_expression", "parse_vector", "set_query",
           "word_space"]


def parse_expression(expr: str) -> tuple[list[str], list[str]]:
    """'king - man + woman' -> (['king', 'woman'], ['man']).  Terms are separated by spaced
    + / - signs (a sign glued to a word also works: 'king -man +woman'); hyphenated words such
    as 'e-mail' stay whole."""
    positive, negative, sign, signed = [], [], 1, False
    for tok in expr.split():
        while tok[:1] in "+-" and tok:
            if signed:
                raise UsageError(f"'{expr}': two signs in a row; write one between terms, e.g. "
                                 "'king - man + woman'")
            sign, signed, tok = (-1 if tok[0] == "-" else 1), True, tok[1:]
        if tok:
            (positive if sign > 0 else negative).append(tok)
            sign, signed = 1, False
    if signed:
        raise UsageError(f"'{expr}': ends with a sign; a term must follow it")
    if not positive:
        raise UsageError(f"'{expr}': an analogy needs at least one positive word, e.g. "
                         "'king - man + woman'")
    return positive, negative


def word_space(model: str | None = None, limit: int | None = None) -> VectorSpace:
    """The vocabulary of a word-vectors backbone (default: the bundled GloVe) as a VectorSpace."""
    from .registry import chosen_model, create_backbone

    name = chosen_model(model, "text")
    backbone = create_backbone(name, limit=limit)
    kv = backbone.keyed_vectors
    if kv is None:
        raise UsageError(f"{name} has no word vocabulary (it embeds whole texts); use word "
                         "vectors (glove-6b-50d, or a .kv/.bin/.txt/.vec file), or compare "
                         f"texts with: embedkit cosine TEXT1 TEXT2 --model {name}")
    return VectorSpace.from_keyed_vectors(kv, name)


def parse_vector(text) -> np.ndarray | None:
    """'-0.4,0.8' / '-0.4 0.8' / '[-0.4, 0.8]' -> a float vector; None if `text` is not one."""
    if not isinstance(text, str):
        return None
    parts = [p for p in re.split(r"[\s,;]+", text.strip().strip("[]()")) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return np.asarray(values, dtype=np.float64) if len(values) >= 2 else None


def set_query(emb, query: str):
    """What `query` means for the EmbeddingSet `emb`: one of its ids (returned as the key), the
    path of one of its files (its id), or a new item (an image file or a text) embedded with the
    set's own model and options (returned as a vector)."""
    import os

    if query in set(emb.ids):
        return query
    root = emb.meta.get("dataset")
    if root and os.path.exists(query):
        rel = os.path.relpath(os.path.abspath(query), root).replace(os.sep, "/")
        if rel in set(emb.ids):
            return rel
    if emb.meta.get("modality") == "image" and not os.path.isfile(query):
        tower = text_tower(emb.meta)
        if tower is None:
            raise NotFoundError(f"'{query}' is neither an id of the set nor an image file; "
                                f"ids look like '{emb.ids[0]}'")
        return _embedded(tower, query)
    return embed_like(emb, [query])[0]


def text_tower(meta: dict):
    """The text tower of the image-text model (CLIP) that made an image set, or None: a text
    query is then embedded into the images' own space (text-to-image search)."""
    from .registry import backbone_from_meta

    if not meta.get("backbone"):
        return None
    return backbone_from_meta(meta).tower("text")


def _embedded(backbone, query: str) -> np.ndarray:
    from .extract import extract

    got = extract([query], backbone, progress=False)
    _raise_skipped(got, [query])
    return got.vectors[0]


def embed_like(emb, items: list) -> np.ndarray:
    """New items embedded exactly as the set `emb` was (same model, layer, pooling, norm)."""
    from .extract import extract
    from .registry import backbone_from_meta

    meta = emb.meta
    if not meta.get("model"):
        raise UsageError("this embeddings file does not say which model made it, so new items "
                         "cannot be embedded like it; query it by id")
    # the recorded recipe (name and every option, weights included), else the older fields
    got = extract(list(items), backbone_from_meta(meta), progress=False)
    _raise_skipped(got, items)
    if meta.get("fingerprint") and got.meta["fingerprint"] != meta["fingerprint"]:
        raise UsageError(f"the set was embedded by {meta['model']} with options that cannot be "
                         "reproduced here (its fingerprint differs); query it by id")
    return got.vectors


#: What `save_index` records in a sidecar's `about`, held to a schema like the rest of it
#: (embedkit.schema): the set's checksum is what `saved_index` compares.
SET_FIELDS = {"checksum": schema.SHA256, "rows": schema.integer(1),
              "model": schema.text(optional=True), "fingerprint": schema.text(optional=True),
              "source": schema.text(optional=True), "recall_at_10": schema.fraction()}


def save_index(emb, kind: str, path, **params) -> tuple:
    """Build the `kind` (ivf / hnsw) index over the unit rows of the set `emb`, measure its
    recall@10 against exact search, and save it to `path` with the set's checksum, so that
    `saved_index` refuses it for any other set.  Returns (index, recall@10)."""
    space = VectorSpace.from_embeddings(emb)
    index = space.index(kind, **params)
    recall = measure_recall(index, space.unit, k=10)
    # what the set's meta says of itself, as SET_FIELDS holds it (text, else null), so that
    # `saved_index` reads back whatever was saved
    said = {k: v if isinstance(v, str) and v else None
            for k, v in ((k, emb.meta.get(k)) for k in ("model", "fingerprint", "source"))}
    index.save(path, about={"checksum": emb.checksum(), "rows": len(emb), **said,
                            "recall_at_10": recall})
    return index, recall


def saved_index(path, emb):
    """The index `save_index` wrote to `path`, if it was built from exactly the set `emb` (the
    same ids and vectors); a UsageError otherwise (the wrong pair of files was given: its rows
    would name other items).  The file itself is checked by `NeighborIndex.load` first: a
    damaged, replaced or edited index or sidecar is an ArtifactError."""
    index = NeighborIndex.load(path, about_fields=SET_FIELDS)
    about = index.about_["about"]
    if about["checksum"] != emb.checksum():
        raise UsageError(f"{path} was built from another set ({about['rows']} rows of "
                         f"{about['model'] or about['source'] or 'unknown vectors'}), "
                         f"not these {len(emb)}; {rebuild_hint(path, index.about_)}")
    return index


def _raise_skipped(result, items: list):
    if len(result) == len(items):
        return
    ident, reason = result.summary.skipped[0] if result.summary.skipped else ("?", "skipped")
    item = items[int(ident)] if str(ident).isdigit() and int(ident) < len(items) else ident
    raise BadInputError(f"{item!r}: {reason}")


def item_vectors(items: list, model: str | None = None, embeddings=None) -> np.ndarray:
    """Vectors for a few query items, each one of: a raw vector ('-0.4,0.8'); with `embeddings`
    (an EmbeddingSet or its file) an id, file or text resolved by `set_query`; otherwise an image
    path or a text embedded by `model` (default: efficientnet_lite0 for images, glove-6b-50d
    for texts).  An out-of-vocabulary word is reported with close spellings."""
    raw = [parse_vector(x) for x in items]
    if all(v is not None for v in raw):
        return np.stack(raw) if len({len(v) for v in raw}) == 1 else _mismatch(raw)
    if embeddings is not None:
        from .extract import embeddings_of

        emb = embeddings_of(embeddings)
        space = VectorSpace.from_embeddings(emb)
        out = []
        for x in items:
            q = set_query(emb, x)
            out.append(space.vectors[space.index_of(q)] if isinstance(q, str) else q)
        return np.stack(out).astype(np.float64)
    from .extract import extract

    try:
        got = extract(list(items), model, progress=False)
    except BadInputError:
        _raise_oov_word(items, model)
        raise
    if len(got) != len(items):
        _raise_oov_word(items, model)
        _raise_skipped(got, items)
    return got.vectors.astype(np.float64)


def _raise_oov_word(items: list, model: str | None):
    """For single words missing from a word-vectors model: the error with close spellings."""
    import os

    from .text import tokenize

    if any(os.path.isfile(str(x)) for x in items):
        return
    words = [x for x in items if isinstance(x, str) and len(tokenize(x)) == 1]
    if not words or (model and not _is_word_model(model)):
        return
    space = word_space(model)
    for w in words:
        if tokenize(w)[0] not in space:
            raise NotFoundError(space.missing_message(tokenize(w)[0]))


def _is_word_model(model: str) -> bool:
    from .registry import resolve_family

    return resolve_family(model).name == "word_vectors"


def _mismatch(raw):
    raise UsageError(f"vectors of different lengths: {', '.join(str(len(v)) for v in raw)}")
