"""Augmented views: deterministic, cached like any embedding, kept out of validation folds, and
test-time averaging that prediction reproduces from raw images."""

import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from embedkit.augment import AugmentedBackbone, AugmentSpec, average_views, extract_views
from embedkit.classify import fold_splits, train, training_features
from embedkit.errors import UsageError
from embedkit.extract import extract


def test_recipes_parse_and_print_back():
    spec = AugmentSpec.parse("hflip,crop=0.8,jitter=0.2,rotate=10")
    assert spec == AugmentSpec(hflip=True, crop=0.8, jitter=0.2, rotate=10.0)
    assert AugmentSpec.parse(str(spec)) == spec
    assert AugmentSpec.parse(None) == AugmentSpec(hflip=True, crop=0.85, jitter=0.2)
    for bad, message in (("blur=3", "unknown augmentation 'blur'"), ("crop=big", "needs a number"),
                         ("crop=0.01", "crop=0.01"), ("hflip=no", "changes nothing")):
        with pytest.raises(UsageError, match=message):
            AugmentSpec.parse(bad)


@pytest.fixture(scope="module")
def image_path(digits_small):
    return str(sorted(digits_small.rglob("*.png"))[0])


def test_views_are_deterministic_per_content_seed_and_view(lite0, image_path, tmp_path):
    view = AugmentedBackbone(lite0, "crop=0.6,jitter=0.3", view=1, seed=0)
    a = np.asarray(view.augmented_image(image_path))
    assert np.array_equal(a, np.asarray(view.augmented_image(image_path)))
    copy = tmp_path / "renamed.png"
    shutil.copy(image_path, copy)  # the same pixels under another name: the same view
    assert np.array_equal(a, np.asarray(view.augmented_image(str(copy))))
    others = [AugmentedBackbone(lite0, "crop=0.6,jitter=0.3", view=2, seed=0),
              AugmentedBackbone(lite0, "crop=0.6,jitter=0.3", view=1, seed=1)]
    for other in others:
        assert not np.array_equal(a, np.asarray(other.augmented_image(image_path)))
    fingerprints = {lite0.fingerprint(), view.fingerprint(), *(o.fingerprint() for o in others),
                    AugmentedBackbone(lite0, "crop=0.5,jitter=0.3", 1, 0).fingerprint()}
    assert len(fingerprints) == 5


def test_a_flip_only_recipe_mirrors_or_keeps_the_image(lite0, image_path):
    original = Image.open(image_path).convert("RGB")
    outcomes = set()
    for view in range(1, 9):
        out = AugmentedBackbone(lite0, "hflip", view=view).augmented_image(image_path)
        if np.array_equal(np.asarray(out), np.asarray(ImageOps.mirror(original))):
            outcomes.add("mirrored")
        else:
            assert np.array_equal(np.asarray(out), np.asarray(original))
            outcomes.add("kept")
    assert outcomes == {"mirrored", "kept"}  # eight draws at p = 1/2 see both


def test_views_are_embedded_by_the_wrapped_backbone_and_cached(lite0, digits_small):
    import torch

    view = AugmentedBackbone(lite0, "crop=0.7,rotate=15", view=1, seed=0)
    first = extract(digits_small, view, progress=False)
    assert first.summary.computed == 20 and first.meta["fingerprint"] == view.fingerprint()
    again = extract(digits_small, AugmentedBackbone(lite0, "crop=0.7,rotate=15", 1, 0),
                    progress=False)
    assert again.summary.cache_hits == 20 and again.summary.computed == 0
    np.testing.assert_array_equal(again.vectors, first.vectors)
    path = str(digits_small / first.ids[0])
    by_hand = lite0.embed(torch.stack([lite0.preprocessing(view.augmented_image(path))]))
    np.testing.assert_allclose(first.vectors[0], by_hand[0], rtol=1e-4, atol=1e-5)
    base = extract(digits_small, lite0, progress=False)
    assert not np.allclose(base.vectors, first.vectors)
    assert first.meta["layer"] == "pre_logits" and first.dim == base.dim


def test_text_backbones_cannot_be_augmented():
    class Text:
        modality, name = "text", "words"

    with pytest.raises(UsageError, match="applies to images"):
        AugmentedBackbone(Text())


def test_views_of_a_validation_item_never_train():
    y = np.array(list("aaaabbbbcccc"))
    n = len(y)
    for train_rows, valid in fold_splits(y, 4, seed=0, views=2):
        assert valid.max() < n  # validation holds originals only
        owners = set(train_rows % n)
        assert not owners & set(valid)  # no view of a validation item in training
        assert len(train_rows) == 3 * (n - len(valid))  # every training item with its 2 views


def test_average_views_is_the_float64_mean(lite0, digits_small):
    base = extract(digits_small, lite0, progress=False)
    views = extract_views(digits_small, lite0, 1, "crop=0.7,rotate=15", seed=0, progress=False)
    mean = average_views(base, views, "crop=0.7,rotate=15", seed=0)
    expected = (base.vectors.astype(np.float64) + views[0].vectors) / 2
    np.testing.assert_allclose(mean.vectors, expected, rtol=1e-6)
    assert mean.meta["fingerprint"] not in (base.meta["fingerprint"], views[0].meta["fingerprint"])
    assert mean.meta["augment"]["base_fingerprint"] == base.meta["fingerprint"]


def test_training_with_augmented_rows_and_with_test_time_averaging(digits_small, tmp_path):
    from embedkit.classify import TrainedClassifier

    recipe = "crop=0.7,rotate=15"
    base, rows = training_features(digits_small, "efficientnet_lite0", augment=1, recipe=recipe,
                                   progress=False)
    assert len(rows) == 1 and rows[0].ids == base.ids
    model = train(base, "svm-linear", cv=2, extra_rows=rows)
    assert model.info["tasks"]["label"]["train_rows"] == 40
    assert model.info["augment_rows"]["recipe"] == "crop=0.7,rotate=15"
    assert model.features["fingerprint"] == base.meta["fingerprint"]  # predicts on plain features

    averaged, none = training_features(digits_small, "efficientnet_lite0", augment=1,
                                       recipe=recipe, augment_mode="average", progress=False)
    assert none == []
    tta = TrainedClassifier.load(train(averaged, "svm-linear", cv=2).save(tmp_path / "t.skops"))
    again = tta.embed(digits_small, progress=False)  # raw images -> the same averaged features
    np.testing.assert_array_equal(again.vectors, averaged.vectors)
    from embedkit.errors import BackboneMismatch

    with pytest.raises(BackboneMismatch, match="averaged over 1 augmented views"):
        tta.predict(base)
    with pytest.raises(UsageError, match="needs the images"):
        training_features(base, augment=2)
