"""The GPU decode path, run with the same code on CPU tensors (libjpeg-turbo decode instead of
nvJPEG): it matches the PIL path and loses or reorders nothing in a mixed folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedkit import device_decode as dd

#: fp32 tolerance reached on the CPU tensor path (pixels within one level of PIL's after
#: resize; measured cosine >= 0.9999996 on these photos)
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Real photos saved in every form a folder meets; sorted names fix the expected order."""
    from skimage import data

    folder = tmp_path_factory.mktemp("mixed")
    cat = Image.fromarray(data.chelsea()).resize((500, 375))
    rocket = Image.fromarray(data.rocket()).resize((500, 375))
    cat.save(folder / "a_baseline.jpg", quality=90)
    rocket.save(folder / "b_progressive.jpg", quality=90, progressive=True)
    cat.save(folder / "c_png.png")
    rocket.convert("CMYK").save(folder / "d_cmyk.jpg")
    (folder / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rocket.convert("L").save(folder / "f_grey.jpg")
    exif = cat.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    cat.save(folder / "g_rotated.jpg", exif=exif)
    raw = (folder / "a_baseline.jpg").read_bytes()
    (folder / "h_truncated.jpg").write_bytes(raw[:len(raw) // 2])
    Image.fromarray(data.astronaut()).resize((375, 500)).save(folder / "i_portrait.jpg")
    return folder


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_header_sniffing_routes_what_the_device_decoder_should_not_take(mixed):
    routed = {p.name: dd.device_decodable(dd.jpeg_header(p.read_bytes()))
              for p in sorted(mixed.iterdir())}
    assert routed == {"a_baseline.jpg": True, "b_progressive.jpg": True, "c_png.png": False,
                      "d_cmyk.jpg": False, "e_corrupt.jpg": False, "f_grey.jpg": True,
                      "g_rotated.jpg": False, "h_truncated.jpg": True, "i_portrait.jpg": True}
    header = dd.jpeg_header((mixed / "g_rotated.jpg").read_bytes())
    assert (header.width, header.height, header.orientation) == (500, 375, 6)
    assert dd.jpeg_header((mixed / "b_progressive.jpg").read_bytes()).progressive


def test_tensor_preprocessing_matches_pil(mixed, lite0):
    """Same resize rounding, crop and normalisation as ImagePreprocess on the PIL image."""
    prep = dd.TensorPreprocess(lite0.preprocessing)
    for name in ("a_baseline.jpg", "i_portrait.jpg", "f_grey.jpg"):
        rgb = Image.open(mixed / name).convert("RGB")
        pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
        got = prep([pixels])[0]
        want = lite0.preprocessing(rgb)
        assert got.shape == want.shape == (3, 224, 224)
        # one uint8 level is 1/127.5 after mean = std = 0.5 normalisation
        assert (got - want).abs().max() <= 1.01 / 127.5
        assert (got - want).abs().mean() < 0.01 / 127.5


def test_mixed_folder_keeps_order_and_loses_nothing(mixed, lite0):
    from embedkit.inputs import open_dataset

    items = open_dataset(mixed).items
    batches = list(dd.embed_stream(lite0, items, "cpu", batch_size=4, workers=2))
    seen = [i for indices, _, errors in batches for i in indices + [e for e, _ in errors]]
    assert sorted(seen) == list(range(len(items)))  # each item once: a vector or an error
    done = [i for indices, _, _ in batches for i in indices]
    assert done == sorted(done)  # dataset order
    errors = {items[i].id: msg for _, _, errs in batches for i, msg in errs}
    assert set(errors) == {"e_corrupt.jpg", "h_truncated.jpg"}
    assert "truncated" in errors["h_truncated.jpg"]

    vectors = np.concatenate([v for _, v, _ in batches if len(v)])
    reference = lite0.embed(torch.stack([lite0.preprocess(items[i]) for i in done]))
    cos = _cosines(vectors, reference)
    assert cos.min() > MIN_COSINE, dict(zip([items[i].id for i in done], cos.round(7)))
    # the PIL fallbacks (PNG, CMYK, EXIF-rotated) are the CPU path itself
    for name in ("c_png.png", "d_cmyk.jpg", "g_rotated.jpg"):
        k = done.index(next(i for i, it in enumerate(items) if it.id == name))
        np.testing.assert_array_equal(vectors[k], reference[k])


def test_decoder_rejections_are_per_image(mixed):
    """A batch the decoder refuses is retried image by image: only the bad one is None (it then
    goes the PIL way, which names the problem: see the mixed-folder test)."""
    blobs = [torch.frombuffer(bytearray((mixed / n).read_bytes()), dtype=torch.uint8)
             for n in ("a_baseline.jpg", "h_truncated.jpg", "f_grey.jpg")]
    out = dd.decode_jpegs(blobs, "cpu")
    assert [o is None for o in out] == [False, True, False]
    assert out[0].shape == (3, 375, 500) and out[2].shape == (3, 375, 500)


def test_bf16_autocast_stays_close(mixed, lite0):
    """The precision the GPU path runs in, here on the CPU: cosine > 0.99 per item."""
    from embedkit.inputs import open_dataset
    from embedkit.registry import create_backbone

    items = [it for it in open_dataset(mixed).items if it.id.endswith(("a_baseline.jpg",
                                                                        "i_portrait.jpg"))]
    bf16 = create_backbone("efficientnet_lite0").to("cpu", "bf16")
    (indices, vectors, errors), = dd.embed_stream(bf16, items, "cpu", batch_size=8, workers=1)
    reference = lite0.embed(torch.stack([lite0.preprocess(it) for it in items]))
    assert indices == [0, 1] and not errors
    assert _cosines(vectors, reference).min() > 0.99


def test_extract_through_the_tensor_path_writes_every_item(mixed, lite0, tmp_path):
    """extract(decode="device") on the CPU: the same store writes and skips as the PIL path, the
    vectors within tolerance, its own fingerprint; by default only CUDA takes the path."""
    import embedkit

    assert not dd.applies(lite0, "cpu") and dd.applies(lite0, "cuda")
    pil = embedkit.extract(mixed, lite0, cache=tmp_path, progress=False, decode="cpu")
    fast = embedkit.extract(mixed, lite0, cache=tmp_path, progress=False, decode="device")
    assert fast.ids == pil.ids and len(fast) == len(pil) == 7
    assert [i for i, _ in fast.summary.skipped] == [i for i, _ in pil.summary.skipped]
    assert fast.summary.computed == 7  # nothing reused: a different fingerprint
    assert fast.meta["fingerprint"] != pil.meta["fingerprint"]
    assert _cosines(fast.vectors, pil.vectors).min() > MIN_COSINE
