"""Short versions of benchmarks/crash_loop.py: SIGKILLs at random moments and at every named
fault point, and concurrent writers beside compaction and verification.  The long versions run
from the benchmark script."""

from __future__ import annotations


def test_twenty_kills_lose_nothing_and_never_serve_a_wrong_vector(tmp_path, crash_loop):
    from embedkit.store import FAULT_POINTS

    stats = crash_loop.crash_loop(kills=20, items=4, seed=1, workdir=str(tmp_path))
    # How many random kills land before their run ends is the machine's speed, not a property
    # of the store: what every kill leaves behind is checked, not how many there were.
    assert set(stats["fault_kills"]) == set(FAULT_POINTS), "every fault point was hit"
    assert stats["opened_and_verified"] == stats["cycles"] and stats["verify_problems"] == []
    assert stats["worker_errors"] == [] and stats["final_verify_problems"] == []
    assert stats["items"] == (3 * 20 + 2) * 4 and stats["lost"] == 0 and stats["wrong"] == 0


def test_four_writers_beside_compaction_and_verify(tmp_path, crash_loop):
    stats = crash_loop.concurrency(writers=4, items=30, workdir=str(tmp_path))
    assert stats["errors"] == [] and stats["verify_problems"] == []
    assert stats["index_rows"] == 30 and stats["duplicate_keys"] == 0
    assert stats["lost"] == 0 and stats["wrong"] == 0


def test_a_fault_point_kills_exactly_there(tmp_path, monkeypatch):
    """The harness's own switch: armed, the process dies between the shard's fsync and its
    rename, leaving only a temporary file that the next open removes."""
    import subprocess
    import sys

    code = ("import numpy as np; from embedkit.store import Store; "
            f"Store({str(tmp_path / 's')!r}).publish('f' * 32, ['a'], ['a'], np.ones((1, 4)))")
    proc = subprocess.run([sys.executable, "-c", code], env={
        **__import__("os").environ, "EMBEDKIT_FAULT": "shard-written"})
    assert proc.returncode == -9
    shards = tmp_path / "s" / "shards"
    assert [p.name.startswith(".tmp-") for p in shards.iterdir()] == [True]
    from embedkit.store import Store

    with Store(tmp_path / "s") as s:
        assert list(shards.iterdir()) == [] and s.verify() == []
        assert s.get_many("f" * 32, ["a"]) == {}


def test_an_unknown_fault_point_never_fires(monkeypatch, store):
    import numpy as np

    monkeypatch.setenv("EMBEDKIT_FAULT", "no-such-point")
    store.publish("f" * 32, ["a"], ["a"], np.ones((1, 4), np.float32))
    assert set(store.get_many("f" * 32, ["a"])) == {"a"}
