"""Every torchvision family embedkit lists, run for real and compared with torchvision itself.

No weights can be downloaded here, so each family's smallest member gets local random weights
(`torch.manual_seed(0)`, `weights=None`, `torch.save(state_dict)`), handed to embedkit the two
ways a user does: (a) `embedkit extract --weights FILE` and (b) in the torch hub cache under a
name as torchvision gives its files (`$TORCH_HOME/hub/checkpoints/resnet18-<sha256 prefix>.pth`,
torchvision's weights entry made to name it).  The reference is
independent of embedkit's preprocessing and layer code: the input is made by torchvision's own
transform for the weights (`Weights.DEFAULT.transforms()` on the PIL image), and the features
are read from torchvision's own model with forward hooks at module paths written out below:
`pre_logits` is the input of the classifier head, a block layer is the block's output averaged
over space (conv maps) or tokens (ViT), embedkit's default pooling.

The two images are non-square (50x37 and 37x50), sized so that the long side after the
short-side resize has a fractional part of at least 0.5 at every resize size used here
(256, 232, 236, 384): rounding it instead of truncating it, as torchvision does, makes it a
pixel longer and fails these tests.

Tolerance: |embedkit - torchvision| <= 1e-4 * |torchvision| + 1e-4 * max|torchvision| per
vector component (both in float32, embedkit channels-last; the differences seen are under
3e-6 of the largest component, a resize a pixel off gives over 1e-4).  Random weights leave
some vectors tiny (EfficientNet's near 1e-13), hence a bound relative to each vector's scale.

resnext* and wide_resnet* are torchvision's ResNet class, run by the same embedkit code as
resnet18 (same blocks, same head), so they are not run again; vit_b_32 stands for the ViTs
(the same code as vit_b_16 at a quarter of the compute).
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from embedkit import load_embeddings
from embedkit.cli.main import cli
from one_line_error import assert_one_line_error

FAMILIES = [
    # (smallest member, its classifier head: pre_logits is this module's input,
    #  one block layer: its module path)
    ("resnet18", "fc", "layer3"),
    ("vgg11", "classifier.6", "features.10"),
    ("regnet_x_400mf", "fc", "trunk_output.block2"),
    ("vit_b_32", "heads.head", "encoder.layers.encoder_layer_5"),
    ("densenet121", "classifier", "features.denseblock2"),
    ("convnext_tiny", "classifier.2", "features.3"),
    ("efficientnet_b0", "classifier.1", "features.4"),
    ("efficientnet_v2_s", "classifier.1", "features.3"),
    ("mobilenet_v3_small", "classifier.3", "features.6"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A landscape and a portrait image of smooth random colour (sorted by name)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, size in (("a_landscape.png", (50, 37)), ("b_portrait.png", (37, 50))):
        small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / name)
    return sorted(folder.glob("*.png"))


def torchvision_features(model, batch, head: str, block: str) -> dict[str, np.ndarray]:
    """torchvision's own forward pass, read with hooks: the input of `head` (pre_logits) and
    the output of `block` averaged over its spatial or token axes."""
    modules = dict(model.named_modules())
    seen = {}
    hooks = [modules[head].register_forward_pre_hook(
                 lambda module, inputs: seen.__setitem__("pre_logits", inputs[0])),
             modules[block].register_forward_hook(
                 lambda module, inputs, output: seen.__setitem__(block, output))]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    fmap = seen[block]
    pooled = fmap.mean(dim=(2, 3)) if fmap.ndim == 4 else fmap.mean(dim=1)
    return {"pre_logits": seen["pre_logits"].numpy(), block: pooled.numpy()}


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda family: family[0])
def family(request, images, tmp_path_factory):
    """One family's random weights saved to a file, and torchvision's features for them."""
    from torchvision import models

    name, head, block = request.param
    torch.manual_seed(0)
    model = models.get_model(name, weights=None).eval()
    weights = tmp_path_factory.mktemp(name) / "random-weights.pth"
    torch.save(model.state_dict(), weights)
    tv_weights = models.get_model_weights(name).DEFAULT
    transform = tv_weights.transforms()
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    return SimpleNamespace(name=name, block=block, weights=weights,
                           hub_file_name=os.path.basename(tv_weights.url),
                           expected=torchvision_features(model, batch, head, block))


def extract_with_cli(images, model: str, tmp_path, *options) -> np.ndarray:
    """`embedkit extract` on the images' folder; the vectors in the images' order."""
    output = tmp_path / "vectors.parquet"
    result = CliRunner().invoke(cli, ["extract", str(images[0].parent), "--model", model,
                                      *options, "--cache", str(tmp_path / "cache"),
                                      "-o", str(output), "-q", "--workers", "0"])
    assert result.exit_code == 0, result.output
    found = load_embeddings(output)
    order = [list(found.ids).index(p.name) for p in images]
    return found.vectors[order]


def assert_matches_torchvision(got: np.ndarray, expected: np.ndarray):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_weights_file_through_the_cli_gives_torchvisions_pre_logits(family, images, tmp_path):
    """(a) `--weights FILE`, the default layer: the input of torchvision's classifier head."""
    got = extract_with_cli(images, family.name, tmp_path, "--weights", str(family.weights))
    assert_matches_torchvision(got, family.expected["pre_logits"])


class Published:
    """torchvision's weights entry for a model, as if the published file were `file_name`:
    everything else (transforms, metadata, tag) is the real entry's."""

    def __init__(self, entry, file_name: str):
        self._entry, self.url = entry, f"{os.path.dirname(entry.url)}/{file_name}"

    def __getattr__(self, name):
        return getattr(self._entry, name)

    def __str__(self):
        return str(self._entry)


def publish_as(weights, tmp_path, monkeypatch, file_name: str):
    """`weights` linked into $TORCH_HOME/hub/checkpoints under `file_name`, and torchvision's
    weights entries made to name that file."""
    import torchvision

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.link(weights, checkpoints / file_name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = torchvision.models.get_model_weights
    monkeypatch.setattr(torchvision.models, "get_model_weights", lambda name: SimpleNamespace(
        DEFAULT=Published(real(name).DEFAULT, file_name)))


def test_hub_cache_file_gives_torchvisions_block_output(family, images, tmp_path, monkeypatch):
    """(b) the file in $TORCH_HOME/hub/checkpoints under a published name (NAME-<the first
    digits of its sha256>.pth, as torchvision names its files; the real published files cannot
    be had offline), a block layer averaged as embedkit does by default."""
    with open(family.weights, "rb") as f:
        prefix = hashlib.file_digest(f, "sha256").hexdigest()[:8]
    publish_as(family.weights, tmp_path, monkeypatch, f"{family.name}-{prefix}.pth")
    got = extract_with_cli(images, family.name, tmp_path, "--layer", family.block)
    assert_matches_torchvision(got, family.expected[family.block])


def test_other_weights_under_the_published_name_are_refused(images, tmp_path, monkeypatch):
    """Weights in the hub cache are fingerprinted by their published tag, so a file there whose
    sha256 does not start with the digits in its name would be cached as the published
    weights: it is refused (exit 4) before anything is computed."""
    from torchvision import models

    torch.manual_seed(0)
    weights = tmp_path / "random.pth"
    torch.save(models.get_model("resnet18", weights=None).state_dict(), weights)
    published = os.path.basename(models.get_model_weights("resnet18").DEFAULT.url)
    publish_as(weights, tmp_path, monkeypatch, published)
    result = CliRunner().invoke(cli, ["extract", str(images[0].parent), "--model", "resnet18",
                                      "--cache", str(tmp_path / "cache"), "--workers", "0"])
    assert_one_line_error(result, 4, published, "does not start with")
