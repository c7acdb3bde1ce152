"""The registry: entry-point discovery, the Backbone contract over every registered backbone,
third-party plugins installed as packages, and broken plugins that never break the listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest

from embedkit import registry
from embedkit.backbone import Backbone
from embedkit.errors import NotFoundError

ALL_MODELS = [name for name, _ in registry.list_models()]


def test_builtins_register_through_entry_points_like_a_third_party():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group=registry.GROUP)}
    assert eps["efficientnet_lite"] == "embedkit.plugins.efficientnet_lite:family"
    assert eps["torchvision"] == "embedkit.plugins.torchvision_models:family"
    assert not registry.broken_plugins(), registry.broken_plugins()
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50",
                 "vgg16", "efficientnet_b0", "mobilenet_v3_large", "densenet121",
                 "convnext_tiny", "regnet_y_400mf", "vit_b_16"):
        assert name in ALL_MODELS


def test_plugins_do_not_claim_generic_top_level_names(tmp_path):
    # Run from an empty folder so the checkout itself is not on sys.path.
    code = "import importlib.util as u; print(u.find_spec('plugins'), u.find_spec('cli'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "None None"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backbone_contract(name):
    backbone = registry.create_backbone(name)
    assert isinstance(backbone, Backbone)
    assert backbone.name == name and backbone.modality in ("image", "text")
    layers = backbone.layers()
    assert layers and len(set(layers)) == len(layers)
    assert isinstance(backbone.dim, int) and backbone.dim > 0
    row = backbone.describe()
    assert {"name", "modality", "family", "layer", "dim", "weights", "offline"} <= set(row)
    assert row["layer"] == layers[0], "the default layer comes first"
    fp = backbone.fingerprint()
    assert fp == registry.create_backbone(name).fingerprint(), "fingerprint must be stable"
    if len(layers) > 1:
        assert registry.create_backbone(name, layer=layers[1]).fingerprint() != fp
    if not backbone.source.available:
        pytest.skip(f"weights absent offline: {backbone.source.path or backbone.source.hint}")
    from embedkit.inputs import Item

    if backbone.modality == "image":
        from PIL import Image

        path = os.path.join(os.environ["EMBEDKIT_HOME"], f"contract-{name}.png")
        Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(path)
        item = Item("x", path=path)
    else:
        item = Item("x", text="the cat sat on the mat")
    out = backbone.embed(backbone.collate([backbone.preprocess(item)] * 2))
    assert out.shape == (2, backbone.dim) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.allclose(out[0], out[1], atol=1e-6)
    # the fingerprint changes whenever the precision changes the output (bf16 autocast runs
    # on the CPU too): bf16 vectors must never be served for fp32 keys
    backbone.to("cpu", "bf16")
    reduced = backbone.embed(backbone.collate([backbone.preprocess(item)]))
    if not np.array_equal(reduced[0], out[0]):
        assert backbone.fingerprint() != fp, "precision changed the vectors, not the key"
    backbone.to("cpu", "fp32")
    assert backbone.fingerprint() == fp


def test_unknown_model_names_close_matches():
    with pytest.raises(NotFoundError, match="efficientnet_lite0"):
        registry.create_backbone("efficientnet_lite")
    with pytest.raises(NotFoundError, match="embedkit models"):
        registry.create_backbone("no-such-model-anywhere")


def _install_fake_distribution(site, dist, entry_points, modules):
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n{entry_points}\n")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


THIRD_PARTY = """
    import numpy as np
    from embedkit.backbone import Backbone, BackboneFamily, WeightsSource, fingerprint_of

    class Lengths(Backbone):
        name, modality, family = "text-length", "text", "demo"
        dim = 2
        source = WeightsSource("none needed", True)
        def layers(self): return ["stats"]
        def fingerprint(self): return fingerprint_of(name=self.name)
        def preprocess(self, item): return item.text
        def embed(self, batch):
            return np.array([[len(t), len(t.split())] for t in batch], np.float32)

    class Family(BackboneFamily):
        name, modality = "demo", "text"
        def models(self): return ["text-length"]
        def create(self, name, **options): return Lengths()

    family = Family()
"""


def test_third_party_plugin_installed_as_a_package_is_discovered_and_used(tmp_path):
    site = tmp_path / "site"
    _install_fake_distribution(site, "embedkit_demo_plugin", "demo = demo_plugin:family",
                               {"demo_plugin": THIRD_PARTY})
    _install_fake_distribution(site, "embedkit_broken_plugin", "broken = broken_plugin:family",
                               {"broken_plugin": "raise ImportError('needs libfoo')"})
    texts = tmp_path / "texts.txt"
    texts.write_text("a b c\nhello world\n")
    env = {**os.environ, "PYTHONPATH": str(site), "EMBEDKIT_HOME": str(tmp_path / "home")}
    listing = subprocess.run([sys.executable, "-m", "embedkit.cli.main", "models", "--json",
                              "--modality", "text", "--detail"], env=env, capture_output=True,
                             text=True)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    names = {r["name"]: r for r in rows}
    assert names["text-length"]["family"] == "demo" and names["text-length"]["dim"] == 2
    broken = [r for r in rows if "broken" in r["name"]]
    assert broken and "needs libfoo" in broken[0]["error"]
    out = subprocess.run([sys.executable, "-m", "embedkit.cli.main", "extract", str(texts),
                          "--model", "text-length", "-o", str(tmp_path / "t.parquet"), "-q"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from embedkit import load_embeddings

    es = load_embeddings(tmp_path / "t.parquet")
    assert es.vectors.tolist() == [[5, 3], [11, 2]]


def test_the_cli_lists_exactly_the_classifiers_the_core_builds():
    from embedkit.classify import CLASSIFIERS
    from embedkit.options import CLASSIFIER_NAMES

    assert tuple(CLASSIFIERS) == CLASSIFIER_NAMES.values


def test_a_plugin_that_is_not_a_backbone_family_is_listed_with_its_error(tmp_path):
    site = tmp_path / "site"
    _install_fake_distribution(site, "embedkit_odd_plugin", "odd = odd_plugin:family",
                               {"odd_plugin": "family = object()"})
    env = {**os.environ, "PYTHONPATH": str(site), "EMBEDKIT_HOME": str(tmp_path / "home")}
    listing = subprocess.run([sys.executable, "-m", "embedkit.cli.main", "models", "--json"],
                             env=env, capture_output=True, text=True)
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert "is not an embedkit BackboneFamily" in rows["<plugin odd>"]["error"]
    assert "efficientnet_lite0" in rows, "the others are listed all the same"
