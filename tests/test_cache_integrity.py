"""Never a wrong vector: file identity (real path, device, inode, size, mtime_ns, ctime_ns),
shard checksums, quarantine and recomputation, and `verify --deep`."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import embedkit
import embedkit.store as store_module
from embedkit.cli.main import cli
from embedkit.store import Store, read_shard, write_shard

FP = "f" * 32


def _png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((*size, 3), np.uint8)
    arr[..., 0] = value
    Image.fromarray(arr).save(path)
    return path


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def remembered(monkeypatch):
    """Files written a moment ago are remembered (the racy-clean window is for real runs)."""
    monkeypatch.setattr(store_module, "RACY_WINDOW_NS", -10**12)


def test_same_relative_name_in_two_folders_is_two_files(tmp_path, monkeypatch, lite0):
    """The bug: a stat cache keyed on the path as typed served the first folder's vector to
    the second, whose file had the same name, size and mtime."""
    for folder, value in (("one", 10), ("two", 240)):
        _png(tmp_path / folder / "data" / "x.png", value)
    stamp = os.stat(tmp_path / "one" / "data" / "x.png").st_mtime_ns
    os.utime(tmp_path / "two" / "data" / "x.png", ns=(stamp, stamp))
    assert os.path.getsize(tmp_path / "one/data/x.png") == os.path.getsize(tmp_path / "two/data/x.png")
    cache = tmp_path / "cache"
    got = {}
    for folder in ("one", "two"):
        monkeypatch.chdir(tmp_path / folder)
        got[folder] = embedkit.extract("data", lite0, cache=cache, progress=False, workers=0)
    assert got["two"].summary.computed == 1, "the second folder's file is a different file"
    assert not np.allclose(got["one"].vectors, got["two"].vectors)
    fresh = embedkit.extract(tmp_path / "two" / "data", lite0, cache=tmp_path / "fresh",
                             progress=False, workers=0)
    np.testing.assert_array_equal(got["two"].vectors, fresh.vectors)


def test_file_replaced_in_place_with_its_mtime_restored(store, tmp_path, remembered):
    path = tmp_path / "a.bin"
    path.write_bytes(b"first")
    st = os.stat(path)
    assert store.file_hashes([str(path)])[str(path)] == hashlib.sha256(b"first").hexdigest()
    with open(path, "r+b") as f:  # same inode, same size
        f.write(b"other")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_ino == st.st_ino
    assert store.file_hashes([str(path)])[str(path)] == hashlib.sha256(b"other").hexdigest()
    replacement = tmp_path / "b.bin"  # a new file renamed over the old one (a new inode)
    replacement.write_bytes(b"third")
    os.replace(replacement, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.file_hashes([str(path)])[str(path)] == hashlib.sha256(b"third").hexdigest()


def test_moved_folder_and_copies_hash_their_own_bytes(store, tmp_path, remembered):
    a = _png(tmp_path / "src" / "a.png", 1)
    before = store.file_hashes([str(a)])[str(a)]
    shutil.move(tmp_path / "src", tmp_path / "moved")
    moved = str(tmp_path / "moved" / "a.png")
    assert store.file_hashes([moved])[moved] == before == _sha(moved)
    copy = tmp_path / "copy.png"
    shutil.copy2(moved, copy)  # same bytes and mtime, another inode: same content, same key
    assert store.file_hashes([str(copy)])[str(copy)] == before
    _png(tmp_path / "src" / "a.png", 2)  # a new file where the old one was
    again = str(tmp_path / "src" / "a.png")
    assert store.file_hashes([again])[again] == _sha(again) != before


@pytest.mark.parametrize("window_ns,remembered_rows", [(10**18, 0), (-10**12, 1)])
def test_racily_clean_files_are_not_remembered(store, tmp_path, monkeypatch, window_ns,
                                               remembered_rows):
    """A file modified within the racy window of its hashing is hashed again next time; one
    modified before it is remembered.  The window is set so wide (or below zero) that how long
    the machine took between the write and the hash cannot decide the outcome."""
    monkeypatch.setattr(store_module, "RACY_WINDOW_NS", window_ns)
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"just written")
    assert store.file_hashes([str(path)])[str(path)] == hashlib.sha256(b"just written").hexdigest()
    rows = store._db.execute("SELECT COUNT(*) FROM file_identity").fetchone()[0]
    assert rows == remembered_rows


def _rewrite_shard_with_wrong_vectors(path):
    """A valid Parquet shard, same keys and schema, other vectors (and, as a careful forger
    would, a matching content checksum in its own metadata)."""
    shard = read_shard(path)
    wrong = shard.vectors[::-1].copy() + 1.0
    write_shard(path, shard.fingerprint, shard.contents, shard.ids, wrong, shard.sources)


def test_a_valid_shard_with_wrong_vectors_is_never_served(tmp_path, digits_small, pixel_hash):
    lite0 = pixel_hash  # cache mechanics: any deterministic backbone will do
    cache = tmp_path / "cache"
    first = embedkit.extract(digits_small, lite0, cache=cache, progress=False, workers=0)
    with Store(cache) as s:
        (name,) = [p.name for p in s.shard_dir.glob("*.parquet")]
        _rewrite_shard_with_wrong_vectors(s.shard_dir / name)
        assert s.get_many(first.meta["fingerprint"], ["x"]) == {}
    again = embedkit.extract(digits_small, lite0, cache=cache, progress=False, workers=0)
    assert again.summary.cache_hits == 0 and again.summary.computed == len(first)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    with Store(cache) as s:
        problems = s.verify()
        assert any(name in p and "checksum" in p for p in problems)
        s.verify(repair=True)
        assert s.verify() == [] and (s.shard_dir / "damaged" / name).exists()
    third = embedkit.extract(digits_small, lite0, cache=cache, progress=False, workers=0)
    assert third.summary.cache_hits == len(first), "the recomputed shard took over the keys"


def test_verify_repair_then_rerun_recomputes_exactly_the_damaged_items(tmp_path, digits_small,
                                                                       pixel_hash, monkeypatch):
    lite0 = pixel_hash
    monkeypatch.setenv("EMBEDKIT_FLUSH_ROWS", "8")
    cache = tmp_path / "cache"
    first = embedkit.extract(digits_small, lite0, cache=cache, progress=False, workers=0,
                             batch_size=4)
    with Store(cache) as s:
        shards = sorted(s.shard_dir.glob("*.parquet"))
        assert len(shards) == 3  # 8 + 8 + 4 rows
        victim = shards[0]
        damaged_rows = len(read_shard(victim).contents)
        _rewrite_shard_with_wrong_vectors(victim)
        assert s.verify(repair=True)
    rerun = embedkit.extract(digits_small, lite0, cache=cache, progress=False, workers=0)
    assert rerun.summary.computed == damaged_rows
    assert rerun.summary.cache_hits == len(first) - damaged_rows
    np.testing.assert_array_equal(rerun.vectors, first.vectors)


def test_a_shard_found_on_disk_with_a_bad_checksum_is_not_absorbed(tmp_path):
    root = tmp_path / "s"
    with Store(root) as s:
        path = s.shard_dir / f"{FP[:16]}-foreign.parquet"
    write_shard(path, FP, ["a"], ["a"], np.ones((1, 4), np.float32))
    table = pq.read_table(path)  # vectors changed behind the shard's own checksum
    meta = table.schema.metadata
    import pyarrow as pa

    from embedkit.store import vector_column

    table = table.set_column(2, "vector", vector_column(np.zeros((1, 4), np.float32)))
    pq.write_table(table.replace_schema_metadata(meta), path)
    with Store(root) as s:
        assert s.get_many(FP, ["a"]) == {}
        assert any("differ from the shard's own checksum" in p for p in s.verify())
    assert pa is not None


def test_verify_deep_recomputes_and_catches_a_wrong_vector(tmp_path, digits_small):
    cache, data = tmp_path / "cache", tmp_path / "data"
    for f in sorted(digits_small.rglob("*.png"))[:4]:
        shutil.copy(f, _png(data / f.parent.name / f.name, 0))
    es = embedkit.extract(data, "efficientnet_lite0", cache=cache, progress=False, workers=0)
    from embedkit.deep_verify import verify_deep

    with Store(cache) as s:
        report = verify_deep(s, 4, device="cpu")
        assert (report.checked, report.agreed, report.mismatches) == (4, 4, [])
        # a wrong vector that passes every checksum (as a buggy backbone would have written)
        fp = es.meta["fingerprint"]
        _, key, shard, row = s.sample(1)[0]
        source = s.shard(shard).sources[row]
        s.publish(fp, [key], ["forged"], np.ones((1, es.dim), np.float32), [source])
    result = CliRunner().invoke(cli, ["cache", "verify", "--deep", "40", "--cache", str(cache),
                                      "--device", "cpu"])
    assert result.exit_code == 6, result.output
    assert "mismatch: forged" in result.output and "1 cached vector(s) differ" in result.output
    assert "deep: 3 of 4 recomputed items agree" in result.output
