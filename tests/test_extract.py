"""Extraction through the cache: results, reruns, bad items, --strict, and a real SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import embedkit
from embedkit.errors import BadInputError, UsageError
from embedkit.store import Store


@pytest.fixture(scope="module")
def digits_embedded(digits_small, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    first = embedkit.extract(digits_small, "efficientnet_lite0", cache=cache, batch_size=8,
                             workers=0, progress=False)
    return cache, first


def test_extract_gives_one_vector_per_item_with_labels(digits_embedded, digits_small):
    _, es = digits_embedded
    assert es.vectors.shape == (20, 1280) and es.vectors.dtype == np.float32
    assert es.ids[0].startswith("5/") and list(es.labels[:4]) == ["5"] * 4
    assert es.meta["model"] == "efficientnet_lite0" and es.meta["layer"] == "pre_logits"
    assert es.summary.computed == 20 and es.summary.cache_hits == 0


def test_vectors_equal_a_direct_forward_pass(digits_embedded, digits_small, lite0):
    _, es = digits_embedded
    from embedkit.inputs import Item

    item = Item(es.ids[3], path=str(digits_small / es.ids[3]))
    direct = lite0.embed(lite0.collate([lite0.preprocess(item)]))[0]
    np.testing.assert_allclose(es.vectors[3], direct, rtol=1e-4, atol=1e-5)


def test_second_extraction_computes_nothing(digits_embedded, digits_small):
    cache, first = digits_embedded
    again = embedkit.extract(digits_small, "efficientnet_lite0", cache=cache, progress=False)
    assert again.summary.computed == 0 and again.summary.cache_hits == 20
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.ids == first.ids


def test_copies_and_renames_hit_the_cache_by_content(digits_embedded, digits_small, tmp_path):
    cache, first = digits_embedded
    copy = tmp_path / "copy"
    shutil.copytree(digits_small, copy)
    os.rename(copy / "5", copy / "five")
    es = embedkit.extract(copy, "efficientnet_lite0", cache=cache, progress=False)
    assert es.summary.computed == 0 and set(es.labels) == {"five", "6", "7", "8", "9"}


def test_bad_items_are_skipped_and_listed_then_strict_fails(digits_embedded, digits_small,
                                                           tmp_path):
    cache, _ = digits_embedded
    mixed = tmp_path / "mixed"
    shutil.copytree(digits_small, mixed)
    (mixed / "5" / "zero.png").write_bytes(b"")
    (mixed / "6" / "notes.jpg").write_text("not an image")
    es = embedkit.extract(mixed, "efficientnet_lite0", cache=cache, progress=False, workers=0)
    assert len(es) == 20 and es.summary.cache_hits == 20
    reasons = dict(es.summary.skipped)
    assert set(reasons) == {"5/zero.png", "6/notes.jpg"}
    assert "not a readable image" in reasons["6/notes.jpg"]
    with pytest.raises(BadInputError, match="--strict"):
        embedkit.extract(mixed, "efficientnet_lite0", cache=cache, progress=False, strict=True,
                         workers=0)


def test_strict_keeps_what_was_computed_before_the_bad_item(tmp_path, digits_small):
    folder = tmp_path / "d"
    shutil.copytree(digits_small / "9", folder / "9")
    (folder / "9" / "zzz-broken.png").write_bytes(b"\x89PNG broken")
    cache = tmp_path / "cache"
    with pytest.raises(BadInputError, match="zzz-broken.png"):
        embedkit.extract(folder, "efficientnet_lite0", cache=cache, strict=True, batch_size=2,
                         workers=0, progress=False)
    with Store(cache) as s:
        assert s.info().vectors == 4 and s.verify() == []


def test_wrong_modality_and_bad_options(digits_small):
    with pytest.raises(UsageError, match="texts|images"):
        embedkit.extract(["a sentence"], "efficientnet_lite0", progress=False)
    with pytest.raises(UsageError, match="batch-size"):
        embedkit.extract(digits_small, batch_size=0, progress=False)
    with pytest.raises(UsageError, match="needs a GPU"):
        embedkit.extract(digits_small, device="cpu", precision="bf16", progress=False)


def test_export_formats(digits_embedded, tmp_path):
    _, es = digits_embedded
    es.save(tmp_path / "e.parquet")
    back = embedkit.load_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(back.vectors, es.vectors)
    assert back.ids == es.ids and list(back.labels) == list(es.labels) and back.meta == es.meta
    es.save(tmp_path / "e.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), es.vectors)
    es.save(tmp_path / "e.csv")
    import csv

    rows = list(csv.reader(open(tmp_path / "e.csv")))
    assert rows[0][:3] == ["id", "label", "v0"] and len(rows) == 21
    assert float(rows[1][2]) == pytest.approx(float(es.vectors[0, 0]), rel=1e-6)


def test_sigkill_mid_run_loses_only_the_unflushed_buffer(tmp_path):
    """A real subprocess is SIGKILLed mid-run, at a named point (its second shard renamed into
    place, not yet indexed) rather than at a moment a race decides; the store opens, verifies,
    and a rerun computes exactly the missing items, each equal to an uninterrupted run's."""
    from embedkit import samples

    data = samples.export("digits-source", tmp_path / "d", per_class=5)  # 25 images
    cache = tmp_path / "cache"
    env = {**os.environ, "EMBEDKIT_FLUSH_ROWS": "4", "EMBEDKIT_FAULT": "shard-renamed:2"}
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli.main", "extract", str(data),
                           "--cache", str(cache), "--batch-size", "1", "--workers", "0", "-q"],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store(cache) as s:
        assert s.verify() == []
        stored = s.info().vectors
    assert 8 <= stored < 25, "both renamed shards are kept (the second absorbed on open)"
    rerun = embedkit.extract(data, "efficientnet_lite0", cache=cache, progress=False, workers=0)
    assert rerun.summary.cache_hits == stored
    assert rerun.summary.computed == 25 - stored and len(rerun) == 25
    uninterrupted = embedkit.extract(data, "efficientnet_lite0", cache=tmp_path / "fresh",
                                     progress=False, workers=0)
    assert rerun.ids == uninterrupted.ids
    np.testing.assert_allclose(rerun.vectors, uninterrupted.vectors, rtol=1e-5, atol=1e-6)


def test_bad_device_and_workers_are_usage_errors(digits_small):
    with pytest.raises(UsageError, match="not a device"):
        embedkit.extract(digits_small, device="foo", progress=False)
    with pytest.raises(UsageError, match="workers"):
        embedkit.extract(digits_small, workers=-1, progress=False)
