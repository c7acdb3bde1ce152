"""CLIP through open_clip, offline: a tiny CLIP made from a config, saved to a checkpoint and
loaded back with --weights, the path users take with a real checkpoint.

The tiny model is trained for 60 contrastive steps (CLIP's loss, open_clip.ClipLoss) on five
(digit image, caption) pairs, so the answer is known by construction: each caption must find
its own image, and zero-shot must label each of the five images with its own class.  The rest
is checked against open_clip itself (its transform, tokenizer and encoders on the in-memory
model) or a float64 NumPy reference.  What it cannot prove: that a real checkpoint's captions
find photos semantically (that needs the hub or --weights with a real CLIP).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

ARCH = "embedkit-tiny-clip"
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}
MODEL = f"openclip/{ARCH}@random"
WORDS = ["five", "six", "seven", "eight", "nine"]
CAPTIONS = [f"a photo of a {w}" for w in WORDS]


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    """fp32 on the CPU even where CUDA is present (auto would pick bf16 there), so vectors
    compare with open_clip's and NumPy's at fp32 tolerances."""
    import importlib

    module = importlib.import_module("embedkit.extract")
    monkeypatch.setattr(module, "pick_device", lambda device="auto": "cpu")


@pytest.fixture(scope="module")
def pairs(digits_small, tmp_path_factory):
    """The first image of each digit, filed under its word: five/..., six/..., ..."""
    import shutil

    root = tmp_path_factory.mktemp("pairs")
    for digit, word in zip("56789", WORDS):
        (root / word).mkdir()
        shutil.copy(sorted((digits_small / digit).glob("*.png"))[0], root / word / "0.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, pairs):
    """(checkpoint path, the torch model it holds), trained so that caption i matches image i."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    folder = tmp_path_factory.mktemp("tiny-clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH)
    transform = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    images = torch.stack([transform(Image.open(pairs / w / "0.png").convert("RGB"))
                          for w in WORDS])
    tokens = open_clip.get_tokenizer(ARCH)(CAPTIONS)
    optimizer, loss = torch.optim.Adam(model.parameters(), 2e-3), open_clip.ClipLoss()
    for _ in range(60):
        value = loss(model.encode_image(images, normalize=True),
                     model.encode_text(tokens, normalize=True), model.logit_scale.exp())
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    model.eval()
    path = folder / "tiny-clip.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path), model


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    path = tmp_path_factory.mktemp("captions") / "captions.txt"
    path.write_text("\n".join(CAPTIONS) + "\n")
    return path


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_one_name_embeds_images_and_texts_as_open_clip_does(tiny, digits_small, captions):
    import embedkit
    from embedkit.inputs import load_image
    from open_clip.transform import PreprocessCfg, image_transform_v2

    weights, model = tiny
    images = embedkit.extract(digits_small, MODEL, weights=weights, progress=False)
    texts = embedkit.extract(captions, MODEL, weights=weights, progress=False)
    assert images.dim == texts.dim == 16
    assert images.meta["modality"] == "image" and texts.meta["modality"] == "text"
    assert images.meta["fingerprint"] != texts.meta["fingerprint"]
    np.testing.assert_allclose(np.linalg.norm(images.vectors, axis=1), 1, atol=1e-5)
    # reference: open_clip itself on the in-memory model (not the checkpoint), its own transform
    transform = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    from embedkit.inputs import open_dataset

    items = {it.id: it for it in open_dataset(digits_small).items}
    batch = torch.stack([transform(load_image(items[i])) for i in images.ids])
    tokens = open_clip.get_tokenizer(ARCH)(CAPTIONS)
    with torch.no_grad():
        ref_img = model.encode_image(batch, normalize=True).numpy()
        ref_txt = model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(images.vectors, ref_img, atol=1e-5)
    np.testing.assert_allclose(texts.vectors, ref_txt, atol=1e-5)


def test_text_query_searches_images_with_the_text_tower(tiny, digits_small, captions, tmp_path):
    from click.testing import CliRunner

    import embedkit
    from embedkit.cli.main import cli

    weights, _ = tiny
    feats = tmp_path / "digits.parquet"
    embedkit.extract(digits_small, MODEL, weights=weights, progress=False).save(feats)
    texts = embedkit.extract(captions, MODEL, weights=weights, progress=False)
    images = embedkit.load_embeddings(feats)
    out = CliRunner().invoke(cli, ["similar", CAPTIONS[2], "--embeddings", str(feats), "-k",
                                   "20", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)["neighbors"]
    scores = _unit(images.vectors) @ _unit(texts.vectors[2:3]).T  # float64 reference
    order = np.argsort(-scores[:, 0], kind="stable")
    assert [n["key"] for n in got] == [images.ids[i] for i in order]
    np.testing.assert_allclose([n["cosine"] for n in got], scores[order, 0], atol=1e-4)


def test_each_caption_finds_its_own_image(tiny, pairs, tmp_path):
    from click.testing import CliRunner

    import embedkit
    from embedkit.cli.main import cli

    feats = tmp_path / "pairs.parquet"
    embedkit.extract(pairs, MODEL, weights=tiny[0], progress=False).save(feats)
    for word, caption in zip(WORDS, CAPTIONS):
        out = CliRunner().invoke(cli, ["similar", caption, "--embeddings", str(feats), "-k",
                                       "1", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["neighbors"][0]["key"] == f"{word}/0.png"
    known = embedkit.zero_shot(pairs, MODEL, WORDS, weights=tiny[0], progress=False)
    assert [i.split("/")[0] for i in known.ids] == list(known.predictions)
    assert known.accuracy == 1.0 and set(known.per_class.values()) == {1.0}


def test_zero_shot_is_argmax_cosine_against_the_prompts(tiny, digits_small, tmp_path):
    from click.testing import CliRunner

    import embedkit
    from embedkit.cli.main import cli

    weights, _ = tiny
    labels = ["5", "6", "7", "8", "9"]
    got = embedkit.zero_shot(digits_small, MODEL, labels, template="a photo of the digit {}",
                             weights=weights, progress=False)
    images = embedkit.extract(digits_small, MODEL, weights=weights, progress=False)
    prompts = embedkit.extract([f"a photo of the digit {x}" for x in labels], MODEL,
                               weights=weights, progress=False)
    expected = np.asarray(labels)[np.argmax(_unit(images.vectors) @ _unit(prompts.vectors).T,
                                            axis=1)]
    assert got.ids == images.ids and list(got.predictions) == list(expected)
    truth = np.asarray(images.labels, dtype=str)
    assert got.accuracy == pytest.approx(np.mean(expected == truth))
    for label in labels:
        mask = truth == label
        assert got.per_class[label] == pytest.approx(np.mean(expected[mask] == label))
    # constructed to be known: the same images filed under the class the reference predicts
    # (accuracy 1), and under the next class (accuracy 0)
    import shutil

    for name, shift in (("known", 0), ("wrong", 1)):
        for i, (item, label) in enumerate(zip(images.ids, expected)):
            target = tmp_path / name / labels[(labels.index(label) + shift) % len(labels)]
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(digits_small / item, target / f"{i}.png")
    for name, accuracy in (("known", 1.0), ("wrong", 0.0)):
        filed = embedkit.zero_shot(tmp_path / name, MODEL, ",".join(labels), weights=weights,
                                   template="a photo of the digit {}", progress=False)
        assert filed.accuracy == accuracy
    out = CliRunner().invoke(cli, ["zero-shot", str(digits_small), "--model", MODEL,
                                   "--weights", weights, "--labels", ",".join(labels),
                                   "--template", "a photo of the digit {}", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["accuracy"] == pytest.approx(got.accuracy)
    assert [r["prediction"] for r in report["items"]] == list(expected)


def test_bad_names_and_options_are_one_line_errors(tiny):
    from embedkit.errors import NotFoundError, UsageError
    from embedkit.registry import create_backbone

    with pytest.raises(UsageError, match="openclip/ARCH@TAG"):
        create_backbone("openclip/ViT-B-32")
    with pytest.raises(NotFoundError, match="no pretrained tag 'nope'.*laion2b_s34b_b79k"):
        create_backbone("openclip/ViT-B-32@nope")
    with pytest.raises(NotFoundError, match="no architecture"):
        create_backbone("openclip/NoSuchNet@x", weights=tiny[0])
    with pytest.raises(NotFoundError, match="one layer"):
        create_backbone(MODEL, weights=tiny[0], layer="blocks.0")


def test_a_pickled_object_is_refused_not_unpickled(tmp_path, tiny, digits_small):
    import pickle

    import embedkit
    from embedkit.errors import BadWeights

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state_dict": Exception("not a tensor")}))
    with pytest.raises(BadWeights, match="evil.pth: refused"):
        embedkit.extract(digits_small, MODEL, weights=str(bad), progress=False)


def test_missing_hub_weights_name_the_repo_and_folder(monkeypatch, tmp_path):
    from embedkit.registry import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = create_backbone("openclip/ViT-B-32@laion2b_s34b_b79k")
    src = backbone.source
    assert not src.available and not src.downloadable  # offline: refused before any work
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in src.hint and "cache" in src.hint
    assert backbone.tower("text").modality == "text"
    assert backbone.tower("text").fingerprint() != backbone.fingerprint()
    from click.testing import CliRunner
    from PIL import Image

    from embedkit.cli.main import cli

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    out = CliRunner().invoke(cli, ["extract", str(tmp_path / "red.png"), "--model",
                                   "openclip/ViT-B-32@laion2b_s34b_b79k"])
    assert out.exit_code == 4
    assert out.output.count("\n") == 1 and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in out.output
    assert _hf_cache() in out.output


def _hf_cache():
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


def test_an_image_query_is_embedded_with_the_same_weights_as_the_set(tiny, pairs, tmp_path):
    """A new image against a set made with --weights: the set's recorded recipe (weights
    included) embeds the query, so the image finds itself."""
    import shutil

    from click.testing import CliRunner

    import embedkit
    from embedkit.cli.main import cli

    feats = tmp_path / "pairs.parquet"
    embedkit.extract(pairs, MODEL, weights=tiny[0], progress=False).save(feats)
    query = tmp_path / "query.png"
    shutil.copy(pairs / WORDS[2] / "0.png", query)
    out = CliRunner().invoke(cli, ["similar", str(query), "--embeddings", str(feats), "-k", "1",
                                   "--json"])
    assert out.exit_code == 0, out.output
    top = json.loads(out.output)["neighbors"][0]
    assert top["key"] == f"{WORDS[2]}/0.png" and top["cosine"] > 0.9999
