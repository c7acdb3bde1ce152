"""The content-addressed store: round trips, crash leftovers, rebuild, compaction, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from embedkit.store import TMP_PREFIX, Store, read_shard
from hung import communicate

FP = "f" * 32


def _vectors(n, dim=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_round_trip_and_flush_every_n_rows(store):
    vecs = _vectors(10)
    with store.writer(FP, {"name": "m"}, flush_rows=4) as w:
        for i in range(10):
            w.add([f"c{i}"], [f"id{i}"], vecs[i:i + 1])
    assert len(list(store.shard_dir.glob("*.parquet"))) == 3  # 4 + 4 + 2 rows
    got = store.get_many(FP, [f"c{i}" for i in range(10)] + ["absent"])
    assert set(got) == {f"c{i}" for i in range(10)}
    np.testing.assert_array_equal(np.stack([got[f"c{i}"] for i in range(10)]), vecs)
    assert store.get_many("other-fingerprint", ["c0"]) == {}, "keys include the fingerprint"


def test_shards_are_plain_parquet(store):
    import pyarrow.parquet as pq

    store.publish(FP, ["a", "b"], ["x", "y"], _vectors(2, 5))
    (path,) = store.shard_dir.glob("*.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["content", "id", "vector", "source"]
    import pyarrow as pa

    vtype = table.schema.field("vector").type
    assert pa.types.is_fixed_size_list(vtype) and vtype.list_size == 5
    assert vtype.value_type == pa.float32()


def test_stat_cache_rehashes_only_changed_files(store, tmp_path, monkeypatch):
    import hashlib

    import embedkit.files as files_module
    import embedkit.store as store_module

    monkeypatch.setattr(store_module, "RACY_WINDOW_NS", -10**12)  # files written just now count

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"f{i}.bin")
        paths[-1].write_bytes(b"content %d" % i)
    first = store.file_hashes([str(p) for p in paths])
    assert first[str(paths[1])] == hashlib.sha256(b"content 1").hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr(files_module, "open",  # where the store's file hashing reads
                        lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k),
                        raising=False)
    assert store.file_hashes([str(p) for p in paths]) == first
    assert opened == [], "an unchanged folder is checked with stat, not re-read"
    paths[2].write_bytes(b"changed, longer")
    assert store.file_hashes([str(p) for p in paths])[str(paths[2])] == \
        hashlib.sha256(b"changed, longer").hexdigest()
    assert opened == [os.fsencode(paths[2])]


def test_stat_cache_notices_changes(store, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    store.file_hashes([str(path)])
    path.write_bytes(b"two!")
    os.utime(path, ns=(1, 1))
    import hashlib

    assert store.file_hashes([str(path)])[str(path)] == hashlib.sha256(b"two!").hexdigest()
    missing = store.file_hashes([str(tmp_path / "gone.bin")])
    assert isinstance(missing[str(tmp_path / "gone.bin")], OSError)


def test_crash_leftovers_are_cleaned_and_unindexed_shards_absorbed(tmp_path):
    root = tmp_path / "s"
    with Store(root) as s:
        s.publish(FP, ["a"], ["a"], _vectors(1))
    dead_tmp = root / "shards" / f"{TMP_PREFIX}999999999-abc.parquet"
    dead_tmp.write_bytes(b"half a shard")
    # A shard renamed into place whose index insert never happened (crash in between):
    from embedkit.store import write_shard

    write_shard(root / "shards" / f"{FP[:16]}-orphan.parquet", FP, ["b"], ["b"], _vectors(1, seed=3))
    with Store(root) as s:
        assert not dead_tmp.exists()
        assert set(s.get_many(FP, ["a", "b"])) == {"a", "b"}
        assert s.verify() == []


def test_temporary_files_of_other_nodes_are_left_to_age(tmp_path):
    """On shared storage a writer on another node cannot be asked whether it lives: its
    temporary shard is removed only once it is a day old; on this node a dead pid decides."""
    import time

    from embedkit.store import _HOST, STALE_TEMP_S

    root = tmp_path / "s"
    Store(root).close()
    shards = root / "shards"
    ours_dead = shards / f"{TMP_PREFIX}{_HOST}-999999999-aa.parquet"
    ours_alive = shards / f"{TMP_PREFIX}{_HOST}-{os.getppid()}-bb.parquet"
    theirs = shards / f"{TMP_PREFIX}h0123456789ab-999999999-cc.parquet"
    theirs_old = shards / f"{TMP_PREFIX}h0123456789ab-999999999-dd.parquet"
    for p in (ours_dead, ours_alive, theirs, theirs_old):
        p.write_bytes(b"part of a shard")
    day_ago = time.time() - STALE_TEMP_S - 60
    os.utime(theirs_old, (day_ago, day_ago))
    Store(root).close()
    assert sorted(p.name for p in shards.iterdir()) == sorted([ours_alive.name, theirs.name])


def test_index_rebuilds_from_shards_alone(tmp_path):
    root = tmp_path / "s"
    with Store(root) as s:
        s.publish(FP, ["a", "b"], ["a", "b"], _vectors(2))
        s.publish(FP, ["c"], ["c"], _vectors(1, seed=1))
        before = s.get_many(FP, ["a", "b", "c"])
    os.remove(root / "index.sqlite")
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        if (root / extra).exists():
            os.remove(root / extra)
    with Store(root) as s:
        after = s.get_many(FP, ["a", "b", "c"])
        assert s.verify() == []
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_verify_finds_damage_and_repair_recovers(tmp_path):
    root = tmp_path / "s"
    with Store(root) as s:
        good = s.publish(FP, ["a"], ["a"], _vectors(1))
        bad = s.publish(FP, ["b"], ["b"], _vectors(1, seed=2))
        (s.shard_dir / bad).write_bytes(b"corrupted")
        problems = s.verify()
        assert any(bad in p and "checksum mismatch" in p for p in problems)
        s.verify(repair=True)
        assert s.verify() == []
        assert set(s.get_many(FP, ["a", "b"])) == {"a"}, "the damaged row is a miss, recomputed"
        assert (s.shard_dir / good).exists() and (s.shard_dir / "damaged" / bad).exists()


def test_compact_merges_without_changing_any_vector(store):
    vecs = _vectors(9)
    for i in range(9):
        store.publish(FP, [f"c{i}"], [f"id{i}"], vecs[i:i + 1])
    from embedkit.store import write_shard

    # a duplicate row found on disk (e.g. left by a crashed compaction): absorbed, not indexed
    write_shard(store.shard_dir / f"{FP[:16]}-dup.parquet", FP, ["c0"], ["dup"],
                _vectors(1, seed=9))
    store.absorb()
    assert store.compact() == (10, 1)
    got = store.get_many(FP, [f"c{i}" for i in range(9)])
    np.testing.assert_array_equal(np.stack([got[f"c{i}"] for i in range(9)]), vecs)
    assert store.verify() == []
    (only,) = store.shard_dir.glob("*.parquet")
    assert len(read_shard(only).contents) == 9


def test_clear_one_fingerprint_or_all(store):
    store.publish(FP, ["a"], ["a"], _vectors(1))
    store.publish("g" * 32, ["a"], ["a"], _vectors(1))
    assert store.clear(FP) == 1
    assert store.get_many(FP, ["a"]) == {} and store.get_many("g" * 32, ["a"])
    store.clear()
    assert store.info().vectors == 0 and not list(store.shard_dir.glob("*.parquet"))


WRITER = """
import sys, numpy as np
from embedkit.store import Store
root, tag = sys.argv[1], sys.argv[2]
s = Store(root)
with s.writer("f" * 32, flush_rows=5) as w:
    for i in range(40):
        w.add([f"{tag}{i}"], [str(i)], np.full((1, 4), i, np.float32))
"""


def test_concurrent_writers_never_corrupt(tmp_path):
    root = tmp_path / "s"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), tag])
             for tag in ("a", "b", "c")]
    for p in procs:
        communicate(p)
    assert [p.returncode for p in procs] == [0, 0, 0]
    with Store(root) as s:
        assert s.verify() == []
        keys = [f"{t}{i}" for t in "abc" for i in range(40)]
        got = s.get_many(FP, keys)
        assert len(got) == 120 and got["b17"].tolist() == [17.0] * 4


def test_a_damaged_shard_is_healed_by_recomputing(store):
    name = store.publish(FP, ["a", "b"], ["a", "b"], _vectors(2))
    (store.shard_dir / name).write_bytes(b"garbage")
    assert store.get_many(FP, ["a", "b"]) == {}, "a damaged shard reads as a miss"
    from embedkit.errors import StoreError

    store.publish(FP, ["x"], ["x"], _vectors(1))
    with pytest.raises(StoreError, match="verify --repair"):
        store.compact()
    fresh = _vectors(2, seed=5)
    store.publish(FP, ["a", "b"], ["a", "b"], fresh)  # the rerun's recomputed vectors
    got = store.get_many(FP, ["a", "b"])
    np.testing.assert_array_equal(np.stack([got["a"], got["b"]]), fresh)


OPENER = """
import os, sys, time
from embedkit.store import Store
workdir, me, processes, trials = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for trial in range(trials):
    open(os.path.join(workdir, f"ready-{trial}-{me}"), "w").close()
    while sum(n.startswith(f"ready-{trial}-") for n in os.listdir(workdir)) < processes:
        time.sleep(0.001)
    try:
        with Store(os.path.join(workdir, f"cache-{trial}")) as s:
            s.info()
    except Exception as exc:
        print(f"trial {trial}: {exc}")
"""


def test_processes_opening_a_new_cache_together(tmp_path):
    # Before: switching a new index to WAL answered "database is locked" at once, and a second
    # process could drop the tables a first had just created ("no such table: shards", which
    # failed CI once).  With the WAL retry alone this test still failed 5 runs in 5.
    processes, trials = 8, 40
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(tmp_path), str(i),
                               str(processes), str(trials)], stdout=subprocess.PIPE, text=True)
             for i in range(processes)]
    errors = [line for p in procs for line in communicate(p)[0].splitlines()]
    assert errors == [] and [p.returncode for p in procs] == [0] * processes


def test_an_index_of_the_first_format_is_rebuilt_from_the_shards(tmp_path):
    import sqlite3

    with Store(tmp_path / "s") as s:
        s.publish(FP, ["a", "b"], ["a", "b"], _vectors(2))
    db = sqlite3.connect(tmp_path / "s" / "index.sqlite")
    db.execute("PRAGMA user_version = 1")
    db.execute("CREATE TABLE file_hashes (path TEXT)")
    db.execute("INSERT INTO vectors VALUES (?, 'stale', 'gone.parquet', 0)", (FP,))
    db.commit()
    db.close()
    with Store(tmp_path / "s") as s:
        names = {r[0] for r in s._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "file_hashes" not in names
        rows = s._db.execute("SELECT content FROM vectors ORDER BY content").fetchall()
        assert rows == [("a",), ("b",)], "the index is the shards' alone, the stale row gone"
        assert s.get_many(FP, ["a", "b"])["b"].tolist() == _vectors(2)[1].tolist()
