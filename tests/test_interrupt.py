"""Ctrl-C during `embedkit extract` (README, "Exit codes": 130, "interrupted (everything flushed
so far stays in the cache)").

A real SIGINT is sent to a real `embedkit extract` process once the cache shows that the run has
published a shard, wherever the run then is: the outcome is checked, not where the interrupt
landed.  The run is slowed by a delay per item in its backbone (tests/installed_backbone.py), so
that it is still computing when the signal comes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embedkit.embeddings import load_embeddings
from embedkit.store import TMP_PREFIX, Store
from installed_backbone import MODEL, install_pixel_hash, pythonpath_with

ITEMS = 40
FLUSH_ROWS = 4


@pytest.fixture
def images(tmp_path, crash_loop) -> Path:
    return crash_loop.make_images(tmp_path / "images", ITEMS)


def extract(images: Path, cache: Path, site: Path, *more: str, delay_s: float = 0.0):
    """`embedkit extract IMAGES --model pixel-hash` as a child process (not yet waited for)."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with(site), "PIXEL_HASH_DELAY_S": str(delay_s),
           "EMBEDKIT_FLUSH_ROWS": str(FLUSH_ROWS)}
    return subprocess.Popen(
        [sys.executable, "-m", "embedkit.cli.main", "extract", str(images), "--model", MODEL,
         "--cache", str(cache), "--batch-size", "2", *more],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_a_published_shard(cache: Path, run: subprocess.Popen, timeout_s: float = 120):
    shards = cache / "shards"
    deadline = time.monotonic() + timeout_s
    while not any(not p.name.startswith(TMP_PREFIX) for p in shards.glob("*.parquet")):
        assert run.poll() is None, f"the run ended before it was interrupted:\n{run.stderr.read()}"
        assert time.monotonic() < deadline, "no shard was published"
        time.sleep(0.05)


def test_sigint_exits_130_keeps_what_was_flushed_and_a_rerun_computes_the_rest(
        images, tmp_path, crash_loop):
    cache, site = tmp_path / "cache", install_pixel_hash(tmp_path / "site")
    run = extract(images, cache, site, "-q", delay_s=0.1)
    wait_for_a_published_shard(cache, run)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)

    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == \
        "interrupted: everything flushed so far stays in the cache"
    with Store(cache) as store:
        assert store.verify() == []
        kept = store.info().vectors
    assert FLUSH_ROWS <= kept < ITEMS

    rerun = extract(images, cache, site, "-q", "--json", "-o", str(tmp_path / "all.parquet"))
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    summary = json.loads(stdout)
    assert (summary["cache_hits"], summary["computed"]) == (kept, ITEMS - kept)
    result = load_embeddings(tmp_path / "all.parquet")
    backbone = crash_loop.PixelHashBackbone()
    expected = backbone.embed([backbone.preprocess(item) for item in _items(images, result.ids)])
    np.testing.assert_array_equal(result.vectors, expected)


def _items(images: Path, ids: list[str]):
    from embedkit.inputs import open_dataset

    by_id = {item.id: item for item in open_dataset(images).items}
    return [by_id[i] for i in ids]
