"""timm models as `timm/<name>` (timm's own registry, e.g. `timm/resnet50.a1_in1k`) or
`timm/hf-hub:org/name` (a model published on the Hugging Face Hub with timm's config.json).

Weights: `--weights FILE` (.safetensors or .pth), else the checkpoint in the local Hugging Face
cache, else a download into that cache where online (huggingface_hub honours HF_HUB_OFFLINE and
HF_ENDPOINT).  Preprocessing is timm's own data config (`timm.data.resolve_data_config`:
input size, interpolation, crop_pct, mean/std), resolved from the pretrained config alone so
creating a backbone never loads weights.
"""

from __future__ import annotations

import os

from embedkit.backbone import (BackboneFamily, ImagePreprocess, TorchImageBackbone,
                               WeightsSource, file_sha256, last_linear, load_state_dict_file,
                               unknown_options)
from embedkit.errors import NotFoundError, UsageError, WeightsUnavailable
from embedkit.options import INTERPOLATIONS

OPTIONS = ("layer", "pool", "normalize", "weights")


def timm_preprocess(cfg: dict, name: str = "timm") -> ImagePreprocess:
    """timm's eval transform as an ImagePreprocess: `resolve_data_config` fills what a pretrained
    config leaves out exactly as `timm.data.resolve_model_data_config(model)` would; only the
    "center" crop mode (resize the short side to size / crop_pct, centre-crop) is supported."""
    from timm.data import resolve_data_config

    data = resolve_data_config(pretrained_cfg=cfg)
    mode = data.get("crop_mode") or "center"
    height, width = data["input_size"][-2:]
    if mode != "center" or height != width or data["interpolation"] not in INTERPOLATIONS:
        raise UsageError(f"{name}: timm preprocessing with crop_mode '{mode}', input "
                         f"{height}x{width}, interpolation '{data['interpolation']}' is not "
                         "supported (embedkit takes a square input, crop_mode 'center' and "
                         f"{INTERPOLATIONS.listed()} interpolation)")
    return ImagePreprocess.from_crop_pct(width, data["crop_pct"], data["mean"], data["std"],
                                         data["interpolation"])


def timm_blocks(model) -> list[str]:
    """Stage outputs from timm's own feature_info, plus EfficientNet's final conv map (bn2)."""
    blocks = [f["module"] for f in getattr(model, "feature_info", [])]
    modules = dict(model.named_modules())
    if "blocks" in modules and hasattr(modules["blocks"], "__len__"):
        stages = [f"blocks.{i}" for i in range(len(modules["blocks"]))]
        blocks = stages if len(stages) >= len(blocks) else blocks
    if "conv_head" in modules and "bn2" in modules:
        blocks.append("bn2")
    return blocks


def timm_classifier(model) -> str:
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name
    return last_linear(model)


def timm_backbone(name, arch, *, family, load_weights, weights_id, source, preprocessing=None,
                  pretrained_cfg=None, model_args=None, **options) -> TorchImageBackbone:
    def build():
        import timm  # imported only when a model is really built: a cached run never needs it

        extra = {"pretrained_cfg": pretrained_cfg} if pretrained_cfg else {}
        return timm.create_model(arch, pretrained=False, **extra, **(model_args or {}))

    if preprocessing is None:
        import timm

        cfg = pretrained_cfg or timm.models.get_pretrained_cfg(arch).to_dict()
        preprocessing = timm_preprocess(cfg, name)
    from embedkit.plugins.imagenet import imagenet_classes

    return TorchImageBackbone(
        name, family=family, build=build, load_weights=load_weights, weights_id=weights_id,
        source=source, preprocessing=preprocessing, block_modules=timm_blocks,
        classifier_module=timm_classifier, class_names=imagenet_classes, **options)


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _download(hub_id: str | None, name: str, source) -> str:
    """The checkpoint of `hub_id`, fetched into the Hugging Face cache (HF_HUB_OFFLINE and
    HF_ENDPOINT are honoured by huggingface_hub itself)."""
    if not hub_id:
        raise WeightsUnavailable(f"no weights for {name} on this machine: {source.hint}")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(hub_id, "model.safetensors")
    except Exception as exc:  # offline, unknown repo, network error: one line with the fix
        raise WeightsUnavailable(f"cannot download the weights of {name} ({hub_id}): "
                                 f"{type(exc).__name__}; {source.hint}") from None


def _hf_cache_file(hub_id: str | None) -> str | None:
    """A checkpoint of `hub_id` already in the local Hugging Face cache (never downloads)."""
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        try:
            path = try_to_load_from_cache(hub_id, fname)
        except Exception:  # a malformed repo id: nothing cached under it
            return None
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_config(name: str, hub_id: str) -> tuple[str, dict, dict]:
    """(architecture, pretrained config, model kwargs) from the repo's timm config.json: from
    the local Hugging Face cache, downloaded there where online (timm's own reader)."""
    from timm.models._hub import load_model_config_from_hf

    try:
        cfg, arch, model_args = load_model_config_from_hf(hub_id)
    except Exception as exc:  # offline and not cached, unknown repo, not a timm repo
        raise WeightsUnavailable(
            f"cannot read the timm config.json of {hub_id} for {name} "
            f"({type(exc).__name__}); offline, put the repo {hub_id} (config.json and "
            f"model.safetensors) in the Hugging Face cache ({_hf_cache_dir()}) where online"
        ) from None
    return arch, cfg, model_args or {}


class TimmFamily(BackboneFamily):
    name = "timm"
    modality = "image"

    def handles(self, name: str) -> bool:
        return name.startswith("timm/")

    def create(self, name, weights=None, **options):
        import timm

        unknown_options(name, {**options, "weights": weights}, OPTIONS)
        arch = name.split("/", 1)[1]
        pretrained_cfg, model_args = None, None
        if arch.startswith("hf-hub:"):
            hub_id = arch[len("hf-hub:"):]
            arch, pretrained_cfg, model_args = _hub_config(name, hub_id)
        elif not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=4)
            raise NotFoundError(f"timm has no model '{arch}'"
                                + (f"; did you mean {', '.join('timm/' + c for c in close)}?"
                                   if close else ""))
        else:
            hub_id = getattr(timm.models.get_pretrained_cfg(arch), "hf_hub_id", None)
        path = weights or _hf_cache_file(hub_id)
        source = WeightsSource(
            description=f"file {path}" if path else f"Hugging Face hub {hub_id or arch} (not cached)",
            available=bool(path), path=path, downloadable=bool(hub_id and not path),
            hint=(f"offline, put {hub_id}'s model.safetensors in the Hugging Face cache "
                  f"({_hf_cache_dir()}) where online, or pass --weights FILE (.safetensors or "
                  f".pth) for {arch}"))

        def load_weights(model):
            model.load_state_dict(load_state_dict_file(path or _download(hub_id, name, source)))

        weights_id = f"sha256:{file_sha256(path)}" if path else f"hub:{hub_id}"
        return timm_backbone(name, arch, family=self.name, load_weights=load_weights,
                             weights_id=weights_id, source=source,
                             pretrained_cfg=pretrained_cfg, model_args=model_args, **options)


family = TimmFamily()
