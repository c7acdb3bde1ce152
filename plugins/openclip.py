"""CLIP models through open_clip (the optional `[clip]` extra): one image-text space.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") trains an image tower and a text tower so that an image and a caption of it land
close together; OpenCLIP (Cherti et al. 2023, "Reproducible scaling laws for contrastive
language-image learning") reproduces it on LAION.  Names are ``openclip/<ARCH>@<TAG>``, an
open_clip architecture and one of its pretrained tags, e.g.
``openclip/ViT-B-32@laion2b_s34b_b79k`` (`open_clip.list_pretrained()` lists them).

One name, two towers: `create(name)` gives the image tower (modality "image") and
`create(name, tower="text")` the text tower; both share the fingerprint base (architecture,
tag, weights identity) and one loaded model.  `extract` picks the tower that matches the
dataset through `Backbone.tower(modality)`, so `extract photos/` and `extract captions.txt`
take the same `--model`.  Vectors are L2-normalised, as CLIP compares them (cosine = dot).

Images are preprocessed by open_clip's own transform (`image_transform_v2`) from the tag's
config: image size, mean / std, interpolation, resize mode.  Weights: `--weights FILE` (a
.safetensors / .pth checkpoint, loaded with `weights_only=True`), else open_clip's pretrained
machinery (the Hugging Face cache, downloading where online; `HF_HUB_OFFLINE` honoured).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import warnings

import numpy as np

from embedkit.backbone import (Backbone, BackboneFamily, WeightsSource, autocast, file_sha256,
                               fingerprint_of, unknown_options)
from embedkit.errors import (BadInputError, BadWeights, MissingExtra, NotFoundError,
                             UsageError, WeightsUnavailable)

PREFIX = "openclip/"
LAYER = "embedding"
TOWERS = ("image", "text")
#: The one name `embedkit models` lists; every open_clip architecture@tag is accepted.
LISTED = ["openclip/ViT-B-32@laion2b_s34b_b79k"]


def parse_name(name: str) -> tuple[str, str]:
    """'openclip/ViT-B-32@laion2b_s34b_b79k' -> ('ViT-B-32', 'laion2b_s34b_b79k')."""
    arch, _, tag = name[len(PREFIX):].partition("@")
    if not arch or not tag:
        raise UsageError(f"'{name}': CLIP models are named openclip/ARCH@TAG, e.g. "
                         f"{LISTED[0]} (open_clip.list_pretrained() lists them)")
    return arch, tag


def _hf_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


@functools.lru_cache(maxsize=2)
def _load_model(arch: str, tag: str, weights: str | None, weights_key: str):
    """The CLIP model of `arch` with its weights, on the CPU, frozen; one per (arch, weights)
    for both towers (`weights_key` makes a changed file reload)."""
    import open_clip

    try:
        with _quiet_open_clip():
            if weights:
                model = open_clip.create_model(arch, pretrained=weights, weights_only=True)
            else:
                model = open_clip.create_model(arch, pretrained=tag, require_pretrained=True,
                                               weights_only=True)
    except Exception as exc:  # any failure to read, fetch or fit the checkpoint: one line
        if weights:
            raise BadWeights(f"{weights}: refused or does not fit open_clip {arch}: "
                             f"{_first_line(exc)}") from None
        raise WeightsUnavailable(f"openclip/{arch}@{tag}: {_missing_hint(arch, tag)}") \
            from None
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip reports through the root logger (`logging.error`), which installs a stderr
    handler when the root has none, and torch warns about pickle protocols: both would precede
    our one-line error.  A NullHandler for the duration keeps the root logger untouched."""
    root = logging.getLogger()
    handler = logging.NullHandler() if not root.handlers else None
    if handler:
        root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        if handler:
            root.removeHandler(handler)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def _missing_hint(arch: str, tag: str) -> str:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo, filename = os.path.split(cfg.get("hf_hub", ""))
    where = (f"the Hugging Face repo {repo} ({filename or 'open_clip_model.safetensors'}) is "
             f"not in the cache {_hf_cache_dir()}" if repo else
             f"{cfg.get('url', '?')} is not in open_clip's download folder")
    return (f"{where}; run once online (open_clip downloads it there) or give a checkpoint "
            "with --weights FILE")


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at its import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_weights(arch: str, tag: str) -> str | None:
    """The tag's checkpoint in the Hugging Face cache, or None (no network)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    hub = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "")
    repo, filename = os.path.split(hub)  # "org/repo/" names the repo's default files
    # open_clip fetches the safetensors twin of a named .bin first
    names = [filename] * bool(filename) + ["open_clip_model.safetensors",
                                           "open_clip_pytorch_model.bin"]
    for fname in names:
        found = try_to_load_from_cache(repo, fname) if repo else None
        if isinstance(found, str):
            return found
    return None


class OpenClipTower(Backbone):
    """One tower of a CLIP model: images or texts -> unit vectors of the shared space."""

    family = "openclip"
    layer = LAYER
    pool = None
    normalize = True

    def __init__(self, name: str, tower: str = "image", weights: str | None = None):
        import open_clip

        self.name = name
        self.modality = tower
        self.arch, self.tag = parse_name(name)
        self.weights = os.path.abspath(weights) if weights else None
        self.config = open_clip.get_model_config(self.arch)
        if self.config is None:
            raise NotFoundError(f"'{name}': open_clip has no architecture '{self.arch}' "
                                "(open_clip.list_models() lists them)")
        self.pretrained = open_clip.get_pretrained_cfg(self.arch, self.tag)
        if not self.pretrained and not self.weights:
            tags = open_clip.list_pretrained_tags_by_model(self.arch)
            raise NotFoundError(f"'{name}': open_clip has no pretrained tag '{self.tag}' for "
                                f"{self.arch} (it has: {', '.join(tags) or 'none'}); or give "
                                "a checkpoint with --weights FILE")
        self.device = "cpu"
        self.precision = "fp32"
        self._transform = None
        self._tokenizer = None

    # -- description ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def layers(self) -> list[str]:
        return [LAYER]

    @property
    def source(self) -> WeightsSource:
        if self.weights:
            return WeightsSource(f"file {self.weights}", os.path.isfile(self.weights),
                                 self.weights)
        cached = _cached_weights(self.arch, self.tag)
        where = self.pretrained.get("hf_hub") or self.pretrained.get("url", "")
        return WeightsSource(f"open_clip {self.tag} ({where})", cached is not None, cached,
                             _missing_hint(self.arch, self.tag), downloadable=not _offline())

    def preprocess_config(self) -> dict:
        """open_clip's own preprocessing for these weights: its defaults, the tag's mean /
        std / interpolation / resize mode, the architecture's image size."""
        from dataclasses import asdict

        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = merge_preprocess_dict(asdict(PreprocessCfg()), self.pretrained)
        cfg["size"] = self.config["vision_cfg"].get("image_size", cfg["size"])
        return cfg

    def fingerprint(self) -> str:
        weights = file_sha256(self.weights) if self.weights else f"tag:{self.tag}"
        tower = ({"preprocess": self.preprocess_config()} if self.modality == "image" else
                 {"context_length": self.config["text_cfg"].get("context_length", 77)})
        return fingerprint_of(modality=self.modality, family=self.family, arch=self.arch,
                              weights=weights, tower=self.modality, layer=LAYER,
                              normalize=True, **tower,
                              **({"precision": self.precision} if self.precision != "fp32"
                                 else {}))

    def tower(self, modality: str) -> "Backbone | None":
        """The sibling tower for `modality`, built through the registry so its recipe is kept."""
        if modality == self.modality:
            return self
        if modality not in TOWERS:
            return None
        options = dict((self.creation or {}).get("options", {}))
        options.update(tower=modality)
        if self.weights:
            options["weights"] = self.weights
        from embedkit.registry import create_backbone

        return create_backbone(self.name, **options).to(self.device, self.precision)

    # -- model ------------------------------------------------------------------------------
    @property
    def model(self):
        weights_key = file_sha256(self.weights) if self.weights else self.tag
        model = _load_model(self.arch, self.tag, self.weights, weights_key)
        return model.to(self.device)

    def preprocess(self, item):
        if self.modality == "text":
            from embedkit.inputs import normalise_text

            text = normalise_text(item.text)
            if not text:
                raise BadInputError("empty text")
            return text
        from embedkit.inputs import load_image

        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self._transform = image_transform_v2(PreprocessCfg(**self.preprocess_config()),
                                                 is_train=False)
        return self._transform(load_image(item))

    def collate(self, samples):
        if self.modality == "text":
            if self._tokenizer is None:
                import open_clip

                self._tokenizer = open_clip.get_tokenizer(self.arch)
            return self._tokenizer(list(samples))
        import torch

        return torch.stack(samples)

    def embed(self, batch) -> np.ndarray:
        import torch

        model = self.model
        x = batch.to(self.device)
        with torch.inference_mode(), autocast(x.device.type, self.precision):
            encode = model.encode_image if self.modality == "image" else model.encode_text
            feats = encode(x, normalize=True).float()
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tokenizer"] = None
        return state


class OpenClipFamily(BackboneFamily):
    name = "openclip"
    modality = "any"

    def models(self) -> list[str]:
        return list(LISTED) if importlib.util.find_spec("open_clip") else []

    def handles(self, name: str) -> bool:
        return isinstance(name, str) and name.startswith(PREFIX)

    def create(self, name: str, weights=None, layer=None, pool=None, normalize=None,
               tower: str = "image", **options):
        unknown_options(name, options, ("weights", "tower"))
        if importlib.util.find_spec("open_clip") is None:
            raise MissingExtra(f"the {name} backbone", extra="clip", package="open-clip-torch")
        parse_name(name)
        if tower not in TOWERS:
            raise UsageError(f"{name}: tower is 'image' or 'text', not '{tower}'")
        if layer not in (None, LAYER):
            raise NotFoundError(f"{name} has one layer, '{LAYER}' (the shared image-text "
                                "space)")
        if pool is not None:
            raise UsageError(f"{name} gives one vector per item; --pool does not apply")
        if normalize is False:
            raise UsageError(f"{name}: CLIP vectors are always L2-normalised")
        return OpenClipTower(name, tower, weights)


family = OpenClipFamily()
