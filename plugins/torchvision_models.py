"""torchvision classification models by name (resnet, vgg, efficientnet_b*, mobilenet_v3, ...).

Weights resolve in order: `--weights FILE`, the torch hub cache (torchvision's own file names,
under `$TORCH_HOME/hub/checkpoints`), then a download where online.  Preprocessing comes from
torchvision's weights metadata.
"""

from __future__ import annotations

import os
import sys

from embedkit.backbone import (BackboneFamily, ImagePreprocess, TorchImageBackbone,
                               WeightsSource, file_sha256, last_linear, load_state_dict_file,
                               remembered, unknown_options)
from embedkit.errors import BadWeights, WeightsUnavailable

PREFIXES = ("resnet", "resnext", "wide_resnet", "vgg", "efficientnet_b", "efficientnet_v2",
            "mobilenet_v3", "densenet", "convnext", "regnet", "vit")
OPTIONS = ("layer", "pool", "normalize", "weights")


def _names() -> list[str]:
    """torchvision's classification models of the listed families, remembered per torchvision
    version: importing torchvision costs seconds, a listing should not."""
    from importlib.metadata import version

    def names():
        from torchvision import models

        return sorted(n for n in models.list_models(module=models) if n.startswith(PREFIXES))

    return remembered("torchvision-models.json", f"torchvision-{version('torchvision')}", names)


def download_url(url: str) -> str:
    """Where to download torchvision's weights from: their published URL, or the same file
    name under `$EMBEDKIT_WEIGHTS_MIRROR` (a site that mirrors download.pytorch.org)."""
    mirror = os.environ.get("EMBEDKIT_WEIGHTS_MIRROR")
    return f"{mirror.rstrip('/')}/{os.path.basename(url)}" if mirror else url


def _hash_prefix(url: str) -> str | None:
    """torchvision names its weights NAME-<first hex digits of the sha256>.pth."""
    tail = os.path.splitext(os.path.basename(url))[0].rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def _check_published(path: str):
    """The published weights found under their own name in the hub cache must be them: their
    fingerprint is the published tag, not the file's sha256, so other weights under that name
    would be cached as the published ones.  Their sha256 must start with the digits in the
    name, as torch.hub checks at download."""
    prefix = _hash_prefix(path)
    if prefix and not file_sha256(path).startswith(prefix):
        raise BadWeights(f"{path}: refused: its sha256 does not start with {prefix}, the checksum "
                         f"in its name, so it is not the published weights; delete it (it is "
                         f"downloaded again where online), or pass your file with --weights")


def hub_cache_file(url: str) -> str:
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def torchvision_blocks(model) -> list[str]:
    """Feature stages from low level to high level, as dotted module paths."""
    import torch

    if hasattr(model, "features"):
        children = list(model.features.named_children())
        if type(model).__name__ == "VGG":  # one stage ends at each max-pool
            children = [(n, m) for n, m in children if isinstance(m, torch.nn.MaxPool2d)]
        return [f"features.{n}" for n, _ in children]
    if hasattr(model, "trunk_output"):  # RegNet
        return [f"trunk_output.{n}" for n, _ in model.trunk_output.named_children()]
    if hasattr(model, "layer4"):  # ResNet family
        return ["layer1", "layer2", "layer3", "layer4"]
    if hasattr(model, "encoder") and hasattr(model.encoder, "layers"):  # ViT
        return [f"encoder.layers.{n}" for n, _ in model.encoder.layers.named_children()]
    return []


def _preprocessing(weights) -> ImagePreprocess:
    t = weights.transforms()
    return ImagePreprocess(int(t.crop_size[0]), int(t.resize_size[0]), tuple(t.mean),
                           tuple(t.std), t.interpolation.value)


class TorchvisionFamily(BackboneFamily):
    name = "torchvision"
    modality = "image"

    def models(self):
        return _names()

    def handles(self, name):
        return name.startswith(PREFIXES) and name in _names()

    def create(self, name, weights=None, **options):
        import torch
        from torchvision import models

        unknown_options(name, {**options, "weights": weights}, OPTIONS)
        tv_weights = models.get_model_weights(name).DEFAULT
        cached = hub_cache_file(tv_weights.url)
        path = weights or (cached if os.path.isfile(cached) else None)
        url = download_url(tv_weights.url)
        source = WeightsSource(
            description=f"file {path}" if path else f"download {url}",
            available=bool(path), path=path or cached, downloadable=not path,
            hint=(f"offline, put {os.path.basename(cached)} in {os.path.dirname(cached)} "
                  f"(from {tv_weights.url}) or pass --weights FILE"))

        preprocessing = _preprocessing(tv_weights)
        # ViT builders fix their input size: build at the size the weights were trained at.
        size = {"image_size": preprocessing.input_size} if name.startswith("vit") else {}

        def build():
            return models.get_model(name, weights=None, **size)

        def load_weights(model):
            if not path:  # into torch's own hub cache, where the next run finds it
                os.makedirs(os.path.dirname(cached), exist_ok=True)
                try:  # the file name carries its sha256 prefix: a wrong file is refused
                    torch.hub.download_url_to_file(url, cached, hash_prefix=_hash_prefix(url),
                                                   progress=sys.stderr.isatty())
                except OSError as exc:
                    raise WeightsUnavailable(
                        f"cannot download the weights of {name} from {url} "
                        f"({exc.__class__.__name__}: {getattr(exc, 'reason', exc)}); "
                        f"{source.hint}") from None
                except RuntimeError as exc:
                    raise BadWeights(f"{url}: refused: the downloaded file does not match the "
                                     f"checksum in its name ({exc})") from None
            elif weights is None:  # not --weights FILE, which is fingerprinted by its sha256
                _check_published(cached)
            model.load_state_dict(load_state_dict_file(path or cached))

        return TorchImageBackbone(
            name, family=self.name, build=build, load_weights=load_weights,
            weights_id=f"sha256:{file_sha256(weights)}" if weights else str(tv_weights),
            source=source, preprocessing=preprocessing,
            block_modules=torchvision_blocks, classifier_module=last_linear,
            class_names=lambda: tv_weights.meta.get("categories"), **options)


family = TorchvisionFamily()
