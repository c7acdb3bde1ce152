"""Streaming extraction: bounded memory, outputs written a chunk at a time (Parquet parts, one
Parquet file, .npy with its ids sidecar, .csv), export of a cached selection, lazily read sets,
and the README's DuckDB / pandas snippets run as written."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import embedkit
from embedkit.cli.main import cli
from embedkit.embeddings import SavedSet, load_embeddings
from embedkit.errors import BadInputError
from embedkit.inputs import TextLines, open_dataset
import hung
from one_line_error import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """300 text lines with two label-free ids: GloVe is cheap, so chunks of 64 give 5 chunks."""
    path = tmp_path_factory.mktemp("lines") / "lines.txt"
    words = "king queen man woman river bank money city north south".split()
    rng = np.random.default_rng(0)
    path.write_text("\n".join(" ".join(rng.choice(words, 6)) + f" {i}" for i in range(300))
                    + "\n")
    return path


def test_chunked_extraction_equals_one_chunk(tmp_path, lines):
    whole = embedkit.extract(lines, "glove-6b-50d", cache=tmp_path / "a", progress=False,
                             chunk_size=10_000)
    chunked = embedkit.extract(lines, "glove-6b-50d", cache=tmp_path / "b", progress=False,
                               chunk_size=64)
    assert chunked.ids == whole.ids == [str(i) for i in range(1, 301)]
    np.testing.assert_array_equal(chunked.vectors, whole.vectors)
    assert chunked.summary.computed == 300 and chunked.summary.cache_hits == 0


def test_parts_folder_npy_sidecar_and_csv_hold_the_same_set(tmp_path, digits_small, lite0):
    reference = embedkit.extract(digits_small, lite0, cache=tmp_path / "c", progress=False)
    result = CliRunner().invoke(cli, ["extract", str(digits_small), "-o", str(tmp_path / "out/"),
                                      "--parts", "3", "--chunk-size", "7", "--cache",
                                      str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "20 from cache" in result.output, "the folder output is written from the cache"
    header = json.loads((tmp_path / "out" / "_embedkit.json").read_text())
    assert header["parts"] == [f"part-0000{i}.parquet" for i in range(3)] and header["rows"] == 20
    parts = load_embeddings(tmp_path / "out")
    assert parts.ids == reference.ids and parts.meta["model"] == "efficientnet_lite0"
    np.testing.assert_array_equal(parts.vectors, reference.vectors)
    assert list(parts.labels) == list(reference.labels)

    reference.save(tmp_path / "x.npy")
    sidecar = (tmp_path / "x.ids.csv").read_text().splitlines()
    assert sidecar[0] == "id,label" and sidecar[1] == f"{reference.ids[0]},{reference.labels[0]}"
    back = load_embeddings(tmp_path / "x.npy")
    assert back.ids == reference.ids and list(back.labels) == list(reference.labels)
    np.testing.assert_array_equal(back.vectors, reference.vectors)

    csv_set = embedkit.extract(digits_small, lite0, cache=tmp_path / "c", progress=False,
                               output=tmp_path / "x.csv")
    assert csv_set.ids == reference.ids
    np.testing.assert_allclose(csv_set.vectors, reference.vectors, rtol=1e-6)
    # a .csv embedkit wrote reads back wherever a saved set goes (before: taken for a manifest)
    back = load_embeddings(tmp_path / "x.csv")
    assert back.ids == reference.ids and list(back.labels) == list(reference.labels)
    np.testing.assert_array_equal(back.vectors, reference.vectors)  # .9g: float32 exactly
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "x.csv"), "--cv", "2",
                                      "-o", str(tmp_path / "m.skops"), "-q"])
    assert result.exit_code == 0, result.output
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "x.csv").read_bytes())
    assert load_embeddings(tmp_path / "bom.csv").ids == reference.ids  # saved again by Excel
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label,v0,v1\na,cat,1,2\nb,dog,3\n")
    with pytest.raises(embedkit.errors.BadInputError, match="bad.csv: line 3 has 3 cells"):
        load_embeddings(bad)


def test_an_npy_rewrite_stopped_between_its_files_never_pairs_old_ids(tmp_path, monkeypatch):
    from embedkit import embedding_files
    from embedkit.embeddings import EmbeddingSet

    out = tmp_path / "x.npy"
    EmbeddingSet(["a", "b"], np.ones((2, 3), np.float32), {"label": ["cat", "dog"]}).save(out)
    real, calls = embedding_files.atomic_write, []

    def stop_before_the_second_file(path, data, **kw):  # the vectors and the sidecar
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, data, **kw)

    monkeypatch.setattr(embedding_files, "atomic_write", stop_before_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingSet(["c", "d"], np.zeros((2, 3), np.float32), {"label": ["x", "y"]}).save(out)
    back = load_embeddings(out)
    new_vectors = not back.vectors.any()
    assert back.ids != (["a", "b"] if new_vectors else ["c", "d"]), "ids of the other run"
    assert new_vectors and back.ids == ["0", "1"] and back.labels is None


def test_a_saved_set_reads_nothing_until_it_is_used(tmp_path, lines):
    es = embedkit.extract(lines, "glove-6b-50d", cache=tmp_path / "c", progress=False,
                          output=tmp_path / "out/", chunk_size=50)
    assert isinstance(es, SavedSet) and es._data is None
    assert (len(es), es.dim) == (300, 50) and es._data is None, "counting reads no vectors"
    assert es.vectors.shape == (300, 50) and es._data is not None
    one_file = embedkit.extract(lines, "glove-6b-50d", cache=tmp_path / "c", progress=False,
                                output=tmp_path / "one.parquet", chunk_size=50)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "one.parquet").num_row_groups == 6, "a row group a chunk"
    np.testing.assert_array_equal(one_file.vectors, es.vectors)


def test_export_writes_the_cached_selection_and_computes_nothing(tmp_path, lines):
    cache = tmp_path / "c"
    first = embedkit.extract(lines, "glove-6b-50d", cache=cache, progress=False)
    grown = tmp_path / "grown.txt"
    grown.write_text(lines.read_text() + "a line never extracted\n")
    result = CliRunner().invoke(cli, ["export", str(grown), "-m", "glove-6b-50d", "-o",
                                      str(tmp_path / "e.parquet"), "--cache", str(cache),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["computed"], summary["cache_hits"]) == (0, 300)
    assert summary["skipped"] == [{"id": "301", "reason": "301: not in the cache under "
                                   "glove-6b-50d; compute it with embedkit extract"}]
    exported = load_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(exported.vectors, first.vectors)


def test_a_failed_run_leaves_no_output_and_keeps_the_cache(tmp_path, digits_small):
    data = tmp_path / "d"
    data.mkdir()
    for p in sorted(Path(digits_small).rglob("*.png"))[:6]:
        (data / p.name).write_bytes(p.read_bytes())
    (data / "zz-broken.png").write_bytes(b"not an image")
    with pytest.raises(BadInputError):
        embedkit.extract(data, "efficientnet_lite0", cache=tmp_path / "c", progress=False,
                         strict=True, chunk_size=3, output=tmp_path / "out/")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temp folder"
    again = embedkit.extract(data, "efficientnet_lite0", cache=tmp_path / "c", progress=False)
    assert again.summary.cache_hits == 6, "the chunks computed before the failure were kept"


@pytest.mark.parametrize("content", [
    b"alpha\r\nbeta\rgamma\n\n  \ndelta",
    b"\xef\xbb\xbfone\ntw\xffo\r\n\r\nthree\r",
    b"x" * 50 + b"\r" + b"\n" + b"y" * 70 + b"\n" + b"z" * 3,
    "page\fbreak\nline\u2028separator\x85next\n".encode(),  # inside lines, as editors show
])
def test_text_lines_stream_as_an_editor_numbers_them(tmp_path, monkeypatch, content):
    monkeypatch.setattr(TextLines, "BLOCK", 7)  # lines, \r\n pairs and the BOM cross blocks
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    ds = open_dataset(path)
    text = content.decode("utf-8-sig", errors="replace")
    ends = re.split(r"\r\n|\r|\n", text)
    expected = [(str(n), line) for n, line in enumerate(ends, 1) if line.strip()]
    assert [(it.id, it.text) for it in ds.items] == expected
    assert len(ds) == len(expected) and ds.items[-1].text == expected[-1][1]
    assert bool(ds.notes) == (b"\xff" in content)


def test_jsonl_keeps_separators_that_json_allows_inside_strings(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "one\u2028still one"}\n{"text": "two"}\n',
                                      encoding="utf-8")
    ds = open_dataset(tmp_path / "t.jsonl")
    assert [(it.id, it.text) for it in ds.items] == [("1", "one\u2028still one"), ("2", "two")]


def _peak_mb(code: str, tmp_path) -> float:
    out = hung.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


MEASURE = """
import resource, sys, embedkit
sys.path.insert(0, {root!r})
from benchmarks.memory import make_texts
path = make_texts(__import__('pathlib').Path('lines-{n}.txt'), {n})
es = embedkit.extract(path, 'glove-6b-50d', cache='cache-{n}', output='out-{n}/',
                      progress=False, chunk_size=2048)
assert len(es) == {n}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_peak_memory_does_not_grow_with_the_number_of_lines(tmp_path):
    """150,000 lines against 10,000: before streaming the larger run held every item and vector
    (about 1.3 KB a line, ~180 MB more); streaming keeps the difference to allocator noise.
    The full 2k-1M table is benchmarks/memory.py."""
    small = _peak_mb(MEASURE.format(root=str(ROOT), n=10_000), tmp_path)
    large = _peak_mb(MEASURE.format(root=str(ROOT), n=150_000), tmp_path)
    assert large - small < 40, f"peak RSS {small:.0f} MB at 10k lines, {large:.0f} MB at 150k"


def _readme_block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if b.startswith(marker))


def test_readme_pandas_and_duckdb_snippets_read_the_parts(tmp_path, monkeypatch, capsys,
                                                          digits_small, lite0):
    es = embedkit.extract(digits_small, lite0, cache=tmp_path / "c", progress=False)
    es.save(tmp_path / "out/", parts=2)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(_readme_block("# pandas (tested)"), scope)
    assert scope["X"].shape == (20, es.dim) and scope["X"].dtype == np.float32
    assert list(scope["df"]["id"]) == es.ids
    exec(_readme_block("# DuckDB (tested)"), {})
    shown = capsys.readouterr().out
    assert all(re.search(rf"\b{digit}\b\s*│\s*4\b", shown) for digit in "56789"), shown


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, lines):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "photo.jpg").write_bytes(b"mine")
    for out, words in [(f"{busy}/", "holds other files"), (str(busy), "holds other files"),
                       (str(tmp_path / "x.txt"), "save embeddings as")]:
        result = CliRunner().invoke(cli, ["extract", str(lines), "-m", "glove-6b-50d", "-o", out,
                                          "--cache", str(tmp_path / "c")])
        assert_one_line_error(result, 2, words)
    assert not (tmp_path / "c").exists(), "refused before the cache was touched"
    assert [p.name for p in busy.iterdir()] == ["photo.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder"
    # a place that cannot take a file: named as given (before: "File exists", or the name of
    # a temporary file), and refused before anything is computed
    (tmp_path / "a.png").write_bytes(b"an image")
    for out, words in [(tmp_path / "a.png" / "x.parquet", "a file is in the way of its folder"),
                       (Path("/proc/x.npy"), "No such file or directory")]:
        result = CliRunner().invoke(cli, ["extract", str(lines), "-m", "glove-6b-50d", "-o",
                                          str(out), "--cache", str(tmp_path / "c2")])
        assert_one_line_error(result, 2, f"{out}: cannot write the output there ({words})")
        assert "computed" not in result.output


def test_a_damaged_parts_folder_and_a_plain_ids_file_read_as_before(tmp_path, lines):
    from embedkit.errors import UsageError

    es = embedkit.extract(lines, "glove-6b-50d", cache=tmp_path / "c", progress=False,
                          output=tmp_path / "out/")
    (tmp_path / "out" / "_embedkit.json").write_text('{"parts": ')
    with pytest.raises(UsageError, match="_embedkit.json: damaged"):
        load_embeddings(tmp_path / "out")
    np.save(tmp_path / "v.npy", es.vectors[:3])
    (tmp_path / "names.csv").write_text("a,1\nb,2\nc,3\n")  # one id per line, commas and all
    assert load_embeddings(tmp_path / "v.npy", ids=tmp_path / "names.csv").ids == \
        ["a,1", "b,2", "c,3"]


def test_the_folder_walk_streams_in_the_order_of_sorted_relative_paths(tmp_path):
    """Each folder is visited with its entries sorted and a folder named `name/`, which is the
    order of sorting every relative path: the walk never needs the whole tree to sort it."""
    from embedkit.files import walk_files

    names = ["a/x.png", "a-b.png", "a.png", "a/b/c.png", "a/b-c.png", "a0.png", "b/a.png",
             "A/z.png", "a b/q.png", "ab/y.png", "a/ä.png"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    walked = [e.rel for e in walk_files(tmp_path)]
    assert walked == sorted(names)
    ds = open_dataset(tmp_path)
    assert [it.id for it in ds.items] == sorted(names) and len(ds) == len(names)
    assert not isinstance(ds.items, list), "image folders are walked, not held"
