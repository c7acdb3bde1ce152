"""timm models as `timm/<name>`: weights from `--weights FILE` or timm's local Hugging Face cache."""

from __future__ import annotations

import os

from embedkit.backbone import (BackboneFamily, ImagePreprocess, TorchImageBackbone,
                               WeightsSource, file_sha256, last_linear, load_state_dict_file,
                               unknown_options)
from embedkit.errors import NotFoundError, WeightsUnavailable

OPTIONS = ("layer", "pool", "normalize", "weights")


def timm_preprocess(cfg: dict) -> ImagePreprocess:
    """Preprocessing from a timm pretrained config (input size, crop_pct, mean/std, interpolation)."""
    return ImagePreprocess.from_crop_pct(cfg["input_size"][-1], cfg.get("crop_pct", 0.875),
                                         cfg["mean"], cfg["std"],
                                         cfg.get("interpolation", "bilinear"))


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
                  **options) -> TorchImageBackbone:
    def build():
        import timm  # imported only when a model is really built: a cached run never needs it

        return timm.create_model(arch, pretrained=False)

    if preprocessing is None:
        import timm

        preprocessing = timm_preprocess(timm.models.get_pretrained_cfg(arch).to_dict())
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


def _hf_cache_file(arch: str) -> str | None:
    """A timm checkpoint already in the local Hugging Face cache (never downloads)."""
    import timm

    try:
        hub_id = timm.models.get_pretrained_cfg(arch).hf_hub_id
    except Exception:
        return None
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(hub_id, fname)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    except Exception:
        return None
    return None


class TimmFamily(BackboneFamily):
    name = "timm"
    modality = "image"

    def handles(self, name: str) -> bool:
        return name.startswith("timm/")

    def create(self, name, weights=None, **options):
        import timm

        unknown_options(name, {**options, "weights": weights}, OPTIONS)
        arch = name.split("/", 1)[1]
        if not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=4)
            raise NotFoundError(f"timm has no model '{arch}'"
                                + (f"; did you mean {', '.join('timm/' + c for c in close)}?"
                                   if close else ""))
        path = weights or _hf_cache_file(arch)
        hub = timm.models.get_pretrained_cfg(arch)
        hub_id = getattr(hub, "hf_hub_id", None)
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
                             weights_id=weights_id, source=source, **options)


family = TimmFamily()
