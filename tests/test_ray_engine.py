"""`--engine ray`: the same keys and vectors as the local extractor, a killed job that resumes
from the shards its finished batches wrote, and the install hint without Ray.

One local Ray (2 CPUs, no dashboard) serves the whole module: starting Ray takes seconds on a
small machine.  The killed job runs in a process group of its own, SIGKILLed with its Ray."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import embedkit
from embedkit.errors import MissingExtra, UsageError
from embedkit.distributed import plan_workers
from embedkit.store import TMP_PREFIX, Store, read_shard
from hung import wait_until
from one_line_error import assert_one_line_error

TEXTS = ["the cat sat on the mat", "qzxqzx vrrkt", "kings and queens", "a dog ran home",
         "the stock market fell", "rain in spain"] * 2


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits 5-9, 3 images per class: 15 real images."""
    from embedkit import samples

    return samples.export("digits-target", tmp_path_factory.mktemp("ray") / "digits",
                          per_class=3)


@pytest.fixture(scope="module")
def plain(digits, tmp_path_factory):
    """The single-process extractor's results: the reference."""
    cache = tmp_path_factory.mktemp("plain-cache")
    texts = tmp_path_factory.mktemp("texts") / "lines.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    return {"images": embedkit.extract(digits, "efficientnet_lite0", cache=cache, progress=False,
                                       workers=0),
            "texts": embedkit.extract(texts, "glove-6b-50d", cache=cache, progress=False),
            "lines": texts}


def _same(a, b):
    assert a.ids == b.ids
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=1e-5, atol=1e-6)
    assert a.summary.skipped == b.summary.skipped


def test_ray_streams_chunks_into_a_folder_of_parts(ray_session, plain, tmp_path):
    """Several chunks through one Ray session, written as they finish: the same set."""
    parts = embedkit.extract(plain["lines"], "glove-6b-50d", cache=tmp_path, engine="ray",
                             progress=False, chunk_size=5, output=tmp_path / "out/", parts=2)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == \
        ["part-00000.parquet", "part-00001.parquet"]
    # the lines repeat: a later chunk finds an earlier chunk's lines in the cache
    assert (parts.summary.computed, parts.summary.cache_hits) == (5, 5)
    assert parts.summary.device == "ray"
    assert parts.ids == plain["texts"].ids
    np.testing.assert_allclose(parts.vectors, plain["texts"].vectors, rtol=1e-5, atol=1e-6)
    assert [i for i, _ in parts.summary.skipped] == ["2", "8"]  # the all-OOV line, twice


def test_ray_matches_the_local_extractor(ray_session, plain, digits, tmp_path):
    images = embedkit.extract(digits, "efficientnet_lite0", cache=tmp_path, engine="ray",
                              batch_size=8, progress=False)
    texts = embedkit.extract(plain["lines"], "glove-6b-50d", cache=tmp_path, engine="ray",
                             progress=False)
    _same(images, plain["images"])
    _same(texts, plain["texts"])  # the all-OOV line skipped with the same reason
    assert texts.summary.skipped and "out of vocabulary" in texts.summary.skipped[0][1]
    # the OOV notes, counted in the model actors, come back to the driver's summary
    assert texts.summary.notes == plain["texts"].summary.notes
    assert texts.summary.notes[0] == "OOV: 9.1% of 22 tokens; 1 text fully out of vocabulary " \
        "(skipped)"
    assert images.summary.computed == len(images) and images.summary.device == "ray"
    # the actors' shards are in the index: a second run is served from the cache alone
    again = embedkit.extract(digits, "efficientnet_lite0", cache=tmp_path, engine="ray",
                             progress=False)
    assert (again.summary.cache_hits, again.summary.computed) == (len(images), 0)
    _same(again, plain["images"])


def test_strict_stops_at_the_first_bad_item(ray_session, plain, tmp_path):
    with pytest.raises(embedkit.errors.BadInputError, match="out of vocabulary.*--strict"):
        embedkit.extract(plain["lines"], "glove-6b-50d", cache=tmp_path, engine="ray",
                         strict=True, progress=False)


def test_a_killed_ray_job_resumes_from_its_finished_batches(ray_session, plain, digits,
                                                            tmp_path):
    """The CLI job is killed (SIGKILL, with its local Ray) once a shard of it is on disk;
    the next run absorbs every row the finished batches wrote and computes only the rest.
    Where the kill lands (after one shard, several, or the end) is the machine's business:
    the outcome is checked, not the moment."""
    cache, log = tmp_path / "cache", tmp_path / "job.log"
    with open(log, "wb") as stderr:  # a file, not a pipe: a full pipe would stall the job
        job = subprocess.Popen(
            [sys.executable, "-c", "from embedkit.cli.main import main; main()", "extract",
             str(digits), "--engine", "ray", "--batch-size", "1", "--cache", str(cache)],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        wait_until(lambda: job.poll() is not None or _published(cache / "shards"),
                   "a shard of the job, or its end")
    finally:
        with contextlib.suppress(ProcessLookupError):  # a job that finished took its Ray along
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode in (0, -signal.SIGKILL), log.read_text()[-2000:]
    finished = _published_keys(cache / "shards")
    assert finished, "the job had written a shard when it was killed"
    resumed = embedkit.extract(digits, "efficientnet_lite0", cache=cache, engine="ray",
                               batch_size=8, progress=False)
    s = resumed.summary
    assert (s.cache_hits, s.computed) == (len(finished), 15 - len(finished))
    _same(resumed, plain["images"])
    assert not Store(cache).verify()


def _published(shards) -> list:
    return [p for p in shards.glob("*.parquet") if not p.name.startswith(TMP_PREFIX)]


def _published_keys(shards) -> set[str]:
    """The content keys of every row the killed job's finished batches published."""
    return {key for path in _published(shards) for key in read_shard(path).contents}


def test_without_ray_the_engine_says_how_to_install_it(plain, monkeypatch):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as without the extra
    with pytest.raises(MissingExtra) as info:
        embedkit.extract(plain["lines"], engine="ray", cache=plain["lines"].parent / "c")
    assert info.value.exit_code == 7
    result = CliRunner().invoke(cli, ["extract", str(plain["lines"]), "--engine", "ray",
                                      "--cache", str(plain["lines"].parent / "c")])
    assert_one_line_error(result, 7, "pip install 'embedkit[ray]'")


def test_workers_come_from_what_the_cluster_has():
    laptop, node = {"CPU": 2.0}, {"CPU": 32.0, "GPU": 4.0}
    assert (plan_workers(laptop).workers, plan_workers(laptop).gpus) == (1, 0)
    assert plan_workers(laptop).threads == 2
    assert (plan_workers(node).workers, plan_workers(node).gpus) == (4, 1)
    half = plan_workers(node, num_gpus_per_worker=0.5)
    assert (half.workers, half.device) == (8, "cuda")
    with pytest.raises(UsageError, match="has 0 GPUs"):
        plan_workers(laptop, num_gpus_per_worker=1)
    with pytest.raises(UsageError, match="needs 6 GPUs; the Ray cluster has 4"):
        plan_workers(node, num_workers=3, num_gpus_per_worker=2)
    with pytest.raises(UsageError, match="--num-workers"):
        plan_workers(node, num_workers=0)


def test_ray_options_need_the_ray_engine(plain):
    with pytest.raises(UsageError, match="--engine ray"):
        embedkit.extract(plain["lines"], address="auto", cache=plain["lines"].parent / "c")


def test_the_model_stage_takes_empty_and_partly_bad_batches(tmp_path):
    """The model actor's batch function, called as Ray Data calls it: an empty batch gives an
    empty table (Ray may hand one over), and a batch's report state rides on its first row."""
    import pickle

    import pyarrow as pa

    from embedkit.distributed import _Embedder
    from embedkit.inputs import Item
    from embedkit.registry import create_backbone

    backbone = create_backbone("glove-6b-50d")
    stage = _Embedder(backbone.creation, "text", backbone.fingerprint(), "fp32", "cpu", 1,
                      tmp_path, 32)
    columns = {"key": pa.string(), "id": pa.string(), "name": pa.string(),
               "source": pa.string(), "sample": pa.binary(), "error": pa.string()}
    empty = stage(pa.table({k: pa.array([], t) for k, t in columns.items()}))
    assert empty.num_rows == 0 and "report" in empty.column_names
    texts = ["the cat sat", "qzxqzx", None]
    samples = [pickle.dumps(backbone.preprocess(Item(str(i), text=t))) if t else None
               for i, t in enumerate(texts)]
    out = stage(pa.table({"key": ["k0", "k1", "k2"], "id": ["0", "1", "2"],
                          "name": ["line 1", "line 2", "line 3"], "source": texts,
                          "sample": samples, "error": [None, None, "line 3: unreadable"]}))
    errors = out.column("error").to_pylist()
    assert errors[0] is None and "out of vocabulary" in errors[1]
    assert errors[2] == "line 3: unreadable"
    reports = out.column("report").to_pylist()
    assert reports[1:] == [None, None]
    backbone.merge_report(pickle.loads(reports[0]))
    assert backbone.report()[0] == "OOV: 25.0% of 4 tokens; 1 text fully out of vocabulary " \
        "(skipped)"
    assert len(list(tmp_path.glob("*.parquet"))) == 1  # the good row's shard
