"""Datasets and image decoding: formats, labels, manifests, and a corpus of bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from embedkit import samples
from embedkit.errors import BadInputError, NotFoundError
from embedkit.inputs import load_image, open_dataset


@pytest.fixture
def formats(tmp_path):
    """One tiny image per supported format and mode, each with a known colour."""
    d = tmp_path / "formats"
    d.mkdir()
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(d / "a.jpg", quality=95)
    Image.fromarray(rgb).save(d / "b.bmp")
    Image.fromarray(rgb).save(d / "c.webp", lossless=True)
    Image.fromarray(rgb).save(d / "d.tiff")
    Image.fromarray(np.full((6, 10), 40000, np.uint16)).save(d / "e16.png")  # 16-bit grey
    Image.fromarray(rgb).convert("P").save(d / "f.png")  # palette
    rgba = np.zeros((6, 10, 4), np.uint8)  # fully transparent: composites to white
    Image.fromarray(rgba, "RGBA").save(d / "g.png")
    frames = [Image.fromarray(np.full((6, 10, 3), v, np.uint8)) for v in (10, 250)]
    frames[0].save(d / "h.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((6, 10), 77, np.uint8)).save(d / "i.png")  # greyscale
    return d


def test_every_format_decodes_to_rgb(formats):
    decoded = {p.name: load_image(str(p)) for p in sorted(formats.iterdir())}
    assert all(im.mode == "RGB" and im.size == (10, 6) for im in decoded.values())
    px = {n: np.asarray(im)[3, 5].tolist() for n, im in decoded.items()}
    assert px["b.bmp"] == [200, 0, 0] and px["c.webp"] == [200, 0, 0]
    assert px["d.tiff"] == [200, 0, 0]
    assert abs(px["a.jpg"][0] - 200) < 6
    assert px["e16.png"] == [round(40000 / 65535 * 255)] * 3, "16-bit is rescaled, not clipped"
    assert px["g.png"] == [255, 255, 255], "transparent pixels composite on white"
    assert px["h.gif"][0] < 40, "animated GIF: the first frame"
    assert px["i.png"] == [77, 77, 77]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((6, 10, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(str(tmp_path / "rot.jpg")).size == (6, 10)


@pytest.mark.parametrize("name,content,message", [
    ("empty.png", b"", "empty file \\(0 bytes\\), not an image"),
    ("text.jpg", b"this is not an image at all", "not a readable image"),
    ("garbage.png", bytes(range(256)) * 4, "not a readable image"),
])
def test_bad_files_raise_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message) as err:
        load_image(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_image_is_reported(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(BadInputError, match="cut.png.*(truncated|corrupt|decode)"):
        load_image(str(path))


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path)  # 81 Mpx in a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(BadInputError, match="decompression-bomb guard"):
        load_image(str(path))


def test_folder_with_class_subfolders_gives_labels(digits_small):
    ds = open_dataset(digits_small)
    assert ds.modality == "image" and len(ds) == 20 and ds.label_names == ["label"]
    assert sorted({it.labels["label"] for it in ds.items}) == ["5", "6", "7", "8", "9"]
    assert ds.items[0].id == "5/" + ds.items[0].id.split("/")[1], "ids are relative paths"


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    ds = open_dataset(tmp_path)
    assert len(ds) == 3 and ds.label_names == [] and ds.items[0].labels == {}


def test_manifests_csv_and_jsonl_with_several_labels(tmp_path, digits_small):
    files = sorted(digits_small.rglob("*.png"))[:3]
    (tmp_path / "m.csv").write_text("path,label,parity\n" + "".join(
        f"{f},{f.parent.name},{int(f.parent.name) % 2}\n" for f in files))
    ds = open_dataset(tmp_path / "m.csv")
    assert ds.label_names == ["label", "parity"] and ds.items[0].labels["parity"] in ("0", "1")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n"
                                              for t, l in [("good film", "pos"), ("bad", "neg")]))
    ds = open_dataset(tmp_path / "t.jsonl")
    assert ds.modality == "text" and [it.labels["label"] for it in ds.items] == ["pos", "neg"]


def test_dataset_errors(tmp_path):
    with pytest.raises(BadInputError, match="no images"):
        open_dataset(tmp_path)  # empty folder
    with pytest.raises(NotFoundError, match="datasets list"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "m.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(BadInputError, match="'path' column"):  # content problem: exit 5
        open_dataset(tmp_path / "m.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(BadInputError, match="bad.jsonl:2"):
        open_dataset(tmp_path / "bad.jsonl")


def test_bundled_samples_export_real_folders(tmp_path):
    assert {"digits", "digits-source", "digits-target", "animal-shape", "lfw-subset",
            "pang-lee-polarity"} <= set(samples.names())
    src = open_dataset(samples.export("digits-source", tmp_path / "src", per_class=3))
    tgt = open_dataset(samples.export("digits-target", tmp_path / "tgt", per_class=3))
    assert {it.labels["label"] for it in src.items} == {"0", "1", "2", "3", "4"}
    assert {it.labels["label"] for it in tgt.items} == {"5", "6", "7", "8", "9"}
    test = open_dataset(samples.export("digits-source", tmp_path / "test", per_class=2, skip=3))
    assert len(test) == 10 and not {it.id for it in test.items} & {it.id for it in src.items}
    full = open_dataset(samples.export("digits-source", tmp_path / "full", per_class=5))
    assert [it.id for it in full.items if int(it.id.split("/")[1][:5]) in
            {int(t.id.split("/")[1][:5]) for t in test.items}] == [it.id for it in test.items]
    text = open_dataset(samples.export("pang-lee-polarity", tmp_path / "t", per_class=3, skip=1))
    assert sorted(it.labels["label"] for it in text.items) == ["neg"] * 3 + ["pos"] * 3
    animals = open_dataset(samples.export("animal-shape", tmp_path / "a", per_class=2))
    assert len(animals) == 20 and len({it.labels["label"] for it in animals.items}) == 10
    assert load_image(animals.items[0].path).size == (28, 28)
    lfw = open_dataset(samples.export("lfw-subset", tmp_path / "l", per_class=2))
    assert {it.labels["label"] for it in lfw.items} == {"face", "non-face"}


def test_restricted_unpickler_refuses_anything_but_numpy(tmp_path):
    import gzip
    import pickle

    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump({"os": __import__("os").system}, f)
    with pytest.raises(pickle.UnpicklingError, match="only NumPy"):
        samples.load_numpy_pickle(path)
    images, labels = samples.animal_shape_arrays()
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


def test_manifest_rows_without_data_and_non_object_lines(tmp_path):
    import embedkit

    (tmp_path / "t.jsonl").write_text('{"text": "hello world", "label": "a"}\n{"text": null}\n')
    es = embedkit.extract(tmp_path / "t.jsonl", progress=False)
    assert len(es) == 1 and "t.jsonl:2: no 'text' value" in es.summary.skipped[0][1]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(BadInputError, match="bad.jsonl:2: each line must be a JSON object"):
        open_dataset(tmp_path / "bad.jsonl")


def test_label_option_picks_the_primary_column_of_a_folder_manifest(tmp_path, digits_small):
    f = sorted(digits_small.rglob("*.png"))[0]
    (tmp_path / "manifest.csv").write_text(f"path,label,split\n{f},5,train\n")
    assert open_dataset(tmp_path, label="split").label_names == ["split", "label"]
