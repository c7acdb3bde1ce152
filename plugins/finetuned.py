"""Fine-tuned backbones: a folder written by `embedkit finetune` is a model name.

The folder holds `model.safetensors` (the base network with its top tuned and a new linear head)
and `finetune.json` (base architecture, the layer the head reads, preprocessing, classes,
training record).  As a backbone it is read like any torch image network: `pre_logits` are the
features the new head reads (the default), the base's block layers up to that layer are there
under `body.` (`embedkit layers OUT/`), and `logits` are the new head's class scores.

The folder is checked before anything is built from it (`embedkit.finetune.read_folder`):
finetune.json against its schema, its base against the registry, the weights' tensor names and
shapes against the network; what fails is refused in one line.

Its fingerprint comes from the weights file's sha256 (plus layer, pooling and preprocessing),
not from the folder's location: its vectors cache apart from the base model's, and a moved
folder still hits the cache.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from embedkit.backbone import (BackboneFamily, TorchImageBackbone, WeightsSource,
                               _layer_shape_cache, file_sha256, fingerprint_of, unknown_options)
from embedkit.errors import WeightsUnavailable
from embedkit.finetune import is_finetuned, make_net, read_folder

OPTIONS = ("layer", "pool", "normalize")


class FinetunedBackbone(TorchImageBackbone):
    """A TorchImageBackbone whose identity is its weights file, not its path."""

    def __init__(self, name, *, spec: dict, **kwargs):
        super().__init__(name, **kwargs)
        self.spec = spec

    def fingerprint(self) -> str:
        return fingerprint_of(
            modality="image", family=self.family, arch=self.spec["base"]["model"],
            weights=self._weights_id, layer=self.layer, pool=self._effective_pool(),
            normalize=self.normalize, preprocess=asdict(self.preprocessing),
            **({"precision": self.precision} if self.precision != "fp32" else {}))

    def layer_info(self):
        # remembered per weights file: the same folder may be fine-tuned again with other classes
        if self._layer_info is None:
            self._layer_info = _layer_shape_cache(
                f"{self.family}/{self._weights_id}/{self.preprocessing.input_size}",
                self._probe_layers)
        return self._layer_info


class FinetunedFamily(BackboneFamily):
    name = "finetuned"
    modality = "image"

    def handles(self, name: str) -> bool:
        return is_finetuned(name)

    def create(self, name, **options):
        unknown_options(name, options, OPTIONS)
        # every file of the folder is checked before anything is built from it
        folder = read_folder(os.path.abspath(name))
        spec, base, path = folder.spec, folder.base, str(folder.weights)
        available = folder.shapes is not None
        source = WeightsSource(
            description=f"fine-tuned {spec['base']['model']} ({len(spec['classes'])} classes)",
            available=available, path=path if available else None,
            hint=f"{path} is missing; fine-tune again (embedkit finetune ... -o {name})")
        net_spec = spec["net"]

        def build():
            # the base's architecture only: its weights are not read
            return make_net(base._build(), net_spec)

        def load_weights(model):
            if not available:
                raise WeightsUnavailable(f"no weights for {name}: {source.hint}")
            folder.load_weights(model)

        return FinetunedBackbone(
            str(folder.path), spec=spec, family=self.name, build=build,
            load_weights=load_weights,
            weights_id=f"sha256:{file_sha256(path)}" if available else "missing",
            source=source, preprocessing=base.preprocessing,
            block_modules=lambda model: [f"body.{b}" for b in net_spec["blocks"]],
            classifier_module=lambda model: "head",
            class_names=lambda: spec["classes"], **options)


family = FinetunedFamily()
