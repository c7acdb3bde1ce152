"""Image backbones: real ImageNet predictions, layers and pooling, and weight resolution
(bundled package, torch hub cache, explicit file, missing offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedkit.errors import BadWeights, NotFoundError, UsageError, WeightsUnavailable
from embedkit.inputs import Item
from embedkit.registry import create_backbone


def _batch(backbone, arrays):
    return torch.stack([backbone.preprocessing(Image.fromarray(a)) for a in arrays])


@pytest.fixture(scope="module")
def chelsea_coffee():
    from skimage import data

    return [data.chelsea(), data.coffee()]


def test_bundled_weights_and_preprocessing_predict_imagenet_classes(chelsea_coffee):
    """EfficientNet-Lite0's bundled weights through timm: chelsea is a cat, coffee is espresso."""
    backbone = create_backbone("efficientnet_lite0", layer="logits")
    logits = backbone.embed(_batch(backbone, chelsea_coffee))
    assert logits.shape == (2, 1000)
    top3 = [[backbone.class_names[i] for i in np.argsort(-row)[:3]] for row in logits]
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top3[0]), top3[0]
    assert top3[1][0] == "espresso", top3[1]


def test_pre_logits_is_the_input_of_the_classifier(chelsea_coffee, lite0):
    """The default layer is the pooled penultimate: applying the classifier gives the logits."""
    batch = _batch(lite0, chelsea_coffee)
    feats = lite0.embed(batch)
    head = lite0.model.classifier
    logits = create_backbone("efficientnet_lite0", layer="logits").embed(batch)
    manual = head(torch.from_numpy(feats)).detach().numpy()
    np.testing.assert_allclose(manual, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pool,dim", [("avg", 80), ("max", 80), ("gem", 80),
                                      ("flatten", 80 * 14 * 14)])
def test_block_layers_and_pooling_shapes(chelsea_coffee, pool, dim):
    backbone = create_backbone("efficientnet_lite0", layer="blocks.3", pool=pool)
    assert backbone.dim == dim
    out = backbone.embed(_batch(backbone, chelsea_coffee))
    assert out.shape == (2, dim) and np.isfinite(out).all()


def test_pooling_values_match_their_definitions(chelsea_coffee):
    """avg / max / GeM pooling of blocks.5 computed by hand from the flattened map."""
    get = lambda pool: create_backbone("efficientnet_lite0", layer="blocks.5", pool=pool)
    batch = _batch(get("avg"), chelsea_coffee)
    fmap = get("flatten").embed(batch).reshape(2, 192, 7 * 7).astype(np.float64)
    np.testing.assert_allclose(get("avg").embed(batch), fmap.mean(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(get("max").embed(batch), fmap.max(-1), rtol=1e-5, atol=1e-5)
    gem = (np.clip(fmap, 1e-6, None) ** 3).mean(-1) ** (1 / 3)
    np.testing.assert_allclose(get("gem").embed(batch), gem, rtol=1e-3, atol=1e-4)


def test_normalize_gives_unit_vectors(chelsea_coffee):
    backbone = create_backbone("efficientnet_lite0", normalize=True)
    out = backbone.embed(_batch(backbone, chelsea_coffee))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert backbone.fingerprint() != create_backbone("efficientnet_lite0").fingerprint()


def test_layer_and_pool_errors_say_what_to_do():
    with pytest.raises(NotFoundError, match="blocks.3.*embedkit layers efficientnet_lite0"):
        create_backbone("efficientnet_lite0", layer="block.3")
    with pytest.raises(UsageError, match="flatten.*over the limit"):
        create_backbone("efficientnet_lite0", layer="blocks.0", pool="flatten")
    with pytest.raises(UsageError, match="already a vector"):
        create_backbone("efficientnet_lite0", layer="pre_logits", pool="max")


def test_lite_variants_use_their_own_input_sizes():
    sizes = {n: create_backbone(n).preprocessing for n in
             ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")}
    assert [p.input_size for p in sizes.values()] == [224, 240, 260]
    p = sizes["efficientnet_lite0"]
    assert (p.mean, p.std, p.interpolation, p.resize_size) == ((0.5,) * 3, (0.5,) * 3,
                                                                "bicubic", 256)


def _library_transform(name: str):
    """The eval transform of the library `name`'s weights come from, built by that library
    from the same numbers embedkit reads."""
    if name.startswith("timm/"):
        import timm
        from timm.data import create_transform, resolve_data_config

        cfg = timm.models.get_pretrained_cfg(name[len("timm/"):]).to_dict()
        return create_transform(**resolve_data_config(pretrained_cfg=cfg))
    if name.startswith("efficientnet_lite"):  # timm's transform with the README's numbers
        from timm.data import create_transform

        return create_transform(224, crop_pct=0.875, interpolation="bicubic",
                                mean=(0.5,) * 3, std=(0.5,) * 3)
    from torchvision import models

    return models.get_model_weights(name).DEFAULT.transforms()


@pytest.mark.parametrize("name", ["resnet18", "convnext_tiny", "efficientnet_b0",
                                  "efficientnet_v2_s", "regnet_x_400mf", "timm/resnet10t",
                                  "efficientnet_lite0"])
def test_preprocessing_equals_the_libraries_own_transform_on_non_square_images(name):
    """torchvision's `Resize(int)` (which timm's center-crop eval transform uses too) truncates
    the long side: int(size * long / short).  At 50x37 and 37x50 the long side's fractional
    part is at least 0.5 for every resize size here (256, 236, 384, 232, 201), so rounding it
    would make each image a pixel longer than the library makes it."""
    rng = np.random.default_rng(0)
    ours, theirs = create_backbone(name).preprocessing, _library_transform(name)
    for size in ((50, 37), (37, 50)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        np.testing.assert_allclose(ours(image), theirs(image), rtol=0, atol=1e-5,
                                   err_msg=f"{name}, {size[0]}x{size[1]} image")


# -- torchvision: the real resolution code, fed with local files ---------------------------

@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_torchvision_missing_weights_offline_names_the_file(torch_home):
    backbone = create_backbone("resnet18")
    assert not backbone.source.available
    assert "resnet18-f37072fd.pth" in backbone.source.hint
    assert str(torch_home / "hub" / "checkpoints") in backbone.source.hint


def test_torchvision_weights_in_the_hub_cache_are_found_and_checked(torch_home,
                                                                     chelsea_coffee):
    """A checkpoint under torchvision's own file name in the hub cache is found, with the
    preprocessing and layers of its weights; loading it checks its sha256 against the digits
    in that name, so random weights there are refused rather than cached as the published ones
    (the forward pass on weights that pass is compared with torchvision's in
    test_torchvision_forward.py)."""
    from torchvision import models

    ckpt = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(models.resnet18(weights=None).state_dict(), ckpt)
    backbone = create_backbone("resnet18")
    assert backbone.source.available and backbone.source.path == str(ckpt)
    assert [backbone.preprocessing.input_size, backbone.preprocessing.resize_size] == [224, 256]
    assert backbone.layers()[:5] == ["pre_logits", "layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(BadWeights, match="does not start with f37072fd"):
        backbone.embed(_batch(backbone, chelsea_coffee))


def test_explicit_weights_file_and_its_identity(tmp_path, torch_home):
    from torchvision import models

    path = tmp_path / "my-resnet.pth"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    a = create_backbone("resnet18", weights=str(path))
    assert a.source.available and a.source.path == str(path)
    torch.save(models.resnet18(weights=None).state_dict(), path)  # different random weights
    b = create_backbone("resnet18", weights=str(path))
    assert a.fingerprint() != b.fingerprint(), "weights identity is part of the fingerprint"
    with pytest.raises(WeightsUnavailable, match="not found"):
        create_backbone("resnet18", weights=str(tmp_path / "nope.pth"))


def test_timm_model_from_a_local_file_gives_timms_features_for_non_square_photos(
        tmp_path, chelsea_coffee):
    """Landscape photos, not cropped square: timm's own eval transform and pre-logits features
    for the same weights.  chelsea trimmed to 449x300 has a long side of 300.83 px at
    resnet10t's resize of 201: timm truncates it to 300, as embedkit must (rounding made it
    301)."""
    import timm
    from timm.data import create_transform, resolve_model_data_config

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False).eval()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    backbone = create_backbone("timm/resnet10t", weights=str(path))
    transform = create_transform(**resolve_model_data_config(model))
    photos = [chelsea_coffee[0][:, :449], chelsea_coffee[1]]
    with torch.no_grad():
        timm_input = torch.stack([transform(Image.fromarray(a)) for a in photos])
        expected = model.forward_head(model.forward_features(timm_input), pre_logits=True)
    np.testing.assert_allclose(backbone.embed(_batch(backbone, photos)), expected,
                               rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    with pytest.raises(NotFoundError, match="timm/resnet10t"):
        create_backbone("timm/resnet10")


def test_preprocess_runs_on_items(digits_small, lite0):
    path = next(p for p in digits_small.rglob("*.png"))
    x = lite0.preprocess(Item("a", path=str(path)))
    assert tuple(x.shape) == (3, 224, 224) and x.dtype == torch.float32
    assert -1.0 - 1e-6 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-6


def test_reduced_precision_is_part_of_the_fingerprint():
    fp32 = create_backbone("efficientnet_lite0")
    bf16 = create_backbone("efficientnet_lite0")
    bf16.precision = "bf16"  # what extract(..., precision="bf16") sets through .to()
    assert fp32.fingerprint() != bf16.fingerprint()
    assert fp32.fingerprint() == create_backbone("efficientnet_lite0").to("cpu", "fp32").fingerprint()
