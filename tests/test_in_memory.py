"""In-memory inputs (PIL, NumPy, torch, pandas, Hugging Face columns, lists of strings) give the
vectors of the equivalent files / texts (and both the vectors of timm's own preprocessing), through
the cache, and anything else is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import embedkit
from embedkit.errors import UsageError
from embedkit.sklearn import EmbeddingTransformer

MODEL = "efficientnet_lite0"
TEXTS = ["the cat sat on the mat", "a dog barked at the moon", "stocks fell sharply today"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Three small real images as files: two 32x32 RGB photos (scikit-image), one 8x8 greyscale
    digit."""
    from skimage import data as skdata
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("pictures")
    arrays = [skdata.astronaut()[::16, ::16], skdata.coffee()[:384:12, :384:12],
              (load_digits().images[0] * 16).astype(np.uint8)]
    paths = []
    for i, arr in enumerate(arrays):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(arr).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def reference(files, lite0):
    """The files' vectors without embedkit's input handling (the independent reference): each
    decoded by PIL, prepared by timm's own eval transform for the architecture the weights are
    loaded into (tf_efficientnet_lite0: bicubic, crop 0.875, mean = std = 0.5), then one
    forward pass of the backbone."""
    import timm
    import timm.data

    config = timm.data.resolve_data_config(
        {}, model=timm.create_model("tf_efficientnet_lite0", pretrained=False))
    transform = timm.data.create_transform(**config)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in files])
    return np.asarray(lite0.embed(batch))


def _paths(files):
    return list(files)


def _pils(files):
    return [Image.open(p) for p in files]


def _hwc(files):  # NumPy HWC uint8 for the photos, HW for the greyscale digit
    return [np.asarray(Image.open(p)) for p in files]


def _chw_uint8(files):
    return [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
            for p in files]


def _chw_float(files):  # what torchvision's ToTensor gives
    return [t.float() / 255.0 for t in _chw_uint8(files)]


def _series(files):
    pd = pytest.importorskip("pandas")
    return pd.Series(_pils(files), index=[10, 20, 30])


def _column(files):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame({"image": _pils(files)})


@pytest.mark.parametrize("make", [_paths, _pils, _hwc, _chw_uint8, _chw_float, _series, _column],
                         ids=lambda f: f.__name__.strip("_"))
def test_in_memory_images_give_the_vectors_of_their_files(make, files, reference, tmp_path):
    values = make(files)
    if make is _hwc:
        assert values[2].ndim == 2 and values[0].shape[2] == 3
    vectors = embedkit.encode(values, cache=tmp_path, workers=0)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    np.testing.assert_allclose(vectors, reference, rtol=1e-4, atol=1e-5)


def test_a_batch_and_loader_workers_give_the_same_vectors(files, reference, tmp_path):
    batch = torch.stack(_chw_float(files[:2]))  # NCHW: two same-size photos
    assert batch.shape[0] == 2
    vectors = embedkit.encode(batch, cache=tmp_path, workers=1)  # items pickled to a worker
    np.testing.assert_allclose(vectors, reference[:2], rtol=1e-4, atol=1e-5)


def test_hugging_face_datasets_column(files, reference, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())
    vectors = embedkit.encode(ds["image"], cache=tmp_path, workers=0)
    np.testing.assert_allclose(vectors, reference, rtol=1e-4, atol=1e-5)


def test_keys_are_the_pixels_so_a_second_call_is_all_cache_hits(files, reference, tmp_path):
    first = embedkit.extract(_pils(files), cache=tmp_path, workers=0, progress=False)
    assert first.summary.computed == 3 and first.ids == ["0", "1", "2"]
    assert first.meta["dataset"] == "<in-memory>"
    again = embedkit.extract(_chw_uint8(files), MODEL, cache=tmp_path, workers=0,
                             progress=False)  # the same pixels in another container
    assert again.summary.cache_hits == 3 and again.summary.computed == 0
    np.testing.assert_array_equal(again.vectors, first.vectors)
    one_pixel_off = np.asarray(Image.open(files[0]).convert("RGB")).copy()
    one_pixel_off[0, 0, 0] ^= 1
    changed = embedkit.extract([one_pixel_off], MODEL, cache=tmp_path, workers=0,
                               progress=False)
    assert changed.summary.computed == 1


def test_encode_rows_follow_the_input_order_and_normalise_on_request(files, reference,
                                                                    tmp_path):
    pils = _pils(files)
    backwards = embedkit.encode(pils[::-1], MODEL, cache=tmp_path, workers=0)
    np.testing.assert_allclose(backwards, reference[::-1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(backwards, axis=1), 1.0)
    unit = embedkit.encode(pils, cache=tmp_path, workers=0, normalize_embeddings=True)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        unit, reference / np.linalg.norm(reference, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    one = embedkit.encode(pils[1], cache=tmp_path, workers=0)  # one image: one 1-D vector
    np.testing.assert_allclose(one, reference[1], rtol=1e-4, atol=1e-5)


def test_backbone_encode_and_the_sklearn_transformer_take_images(files, reference, lite0,
                                                                  tmp_path):
    np.testing.assert_allclose(lite0.encode(_hwc(files), cache=tmp_path, workers=0), reference,
                               rtol=1e-4, atol=1e-5)
    pipe = EmbeddingTransformer(MODEL, cache=tmp_path)
    np.testing.assert_allclose(pipe.fit(_pils(files)).transform(_chw_float(files)), reference,
                               rtol=1e-4, atol=1e-5)


def test_texts_in_memory_equal_a_text_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    from_file = embedkit.extract(path, cache=tmp_path / "c", progress=False)
    assert from_file.meta["model"] == "glove-6b-50d"
    spaced = [f"  {TEXTS[0]}  ", TEXTS[1], TEXTS[2]]  # the normalised text is the key
    vectors = embedkit.encode(spaced, cache=tmp_path / "c")
    np.testing.assert_array_equal(vectors, from_file.vectors)
    assert embedkit.encode(TEXTS[2], cache=tmp_path / "c").shape == (50,)
    pd = pytest.importorskip("pandas")
    es = embedkit.extract(pd.Series(TEXTS), cache=tmp_path / "c", progress=False)
    assert es.summary.cache_hits == 3
    np.testing.assert_array_equal(es.vectors, from_file.vectors)


@pytest.mark.parametrize("values, message", [
    ([1, 2], "got a int"),
    ([{"text": "a"}], "got a dict"),
    ([b"bytes"], "got a bytes"),
    (["a text", Image.new("RGB", (4, 4))], "mixes images and str"),
    ([Image.new("RGB", (4, 4)), "a text"], "mixes images and str"),
    ([np.zeros((8, 8, 3), np.float32)], r"shape \(8, 8, 3\) \(float32\) is not an image"),
    ([np.zeros((3, 8, 8), np.uint8)], r"shape \(3, 8, 8\) .*HWC"),
    ([torch.full((3, 8, 8), 2.0)], r"values in \[0, 1\]"),
    ([torch.zeros((5, 8, 8), dtype=torch.uint8)], "CHW"),
    (np.zeros((2, 3, 4)), r"shape \(2, 3, 4\)"),
    (Image.new("RGB", (4, 4)), "wrap it in a list"),
    ([], "empty"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_other_inputs_are_refused_in_one_line_naming_the_type(values, message, tmp_path):
    with pytest.raises(UsageError, match=message) as err:
        embedkit.extract(values, cache=tmp_path, workers=0, progress=False)
    assert "\n" not in str(err.value)


def test_a_file_path_beside_texts_is_refused_not_embedded_as_its_name(tmp_path, monkeypatch):
    """Before: `embedkit cosine digit.png queen` embedded 'digit.png' as a text."""
    Image.new("RGB", (8, 8)).save(tmp_path / "digit.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError,
                       match=r"mixes image files \(digit.png\) and texts \('queen'\)"):
        embedkit.extract(["digit.png", "queen"], cache=tmp_path / "c", progress=False)
    (tmp_path / "README.md").write_text("a file that is also a text")
    es = embedkit.extract(["README.md", "queen"], cache=tmp_path / "c", progress=False)
    assert es.meta["modality"] == "text" and len(es) == 2  # a text that names a file stays text


def test_a_pil_image_never_becomes_text(tmp_path):
    images = [Image.new("RGB", (8, 8), (200, 10, 10))]
    with pytest.raises(UsageError,
                       match="glove-6b-50d embeds texts but the given list holds images"):
        embedkit.extract(images, "glove-6b-50d", cache=tmp_path, progress=False)
    es = embedkit.extract(images, cache=tmp_path, workers=0, progress=False)  # default: images
    assert es.meta["modality"] == "image" and es.vectors.shape == (1, 1280)
