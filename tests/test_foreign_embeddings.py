"""Embeddings other tools wrote: Parquet with list<float> / fixed-size-list vector columns,
NumPy .npy / .npz with an ids file, read by `load_embeddings` and the commands taking
--embeddings; `EmbeddingSet.to_pandas`.  The vectors are scikit-learn's digits (real 64-pixel
images), so every comparison is against the array the file was written from."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from embedkit.cli.main import cli
from embedkit.embeddings import EmbeddingSet, load_embeddings
from embedkit.errors import BadInputError, NotFoundError, UntrustedFile, UsageError


@pytest.fixture(scope="module")
def digits():
    """60 digit images as float32 vectors, their ids and their classes."""
    d = load_digits()
    vectors = d.data[:60].astype(np.float32)
    return [f"img{i:03d}" for i in range(60)], vectors, d.target[:60]


def _list_column(vectors, fixed: bool):
    if fixed:
        return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    return pa.array([list(map(float, row)) for row in vectors], type=pa.list_(pa.float64()))


@pytest.mark.parametrize("fixed", [False, True], ids=["list<double>", "fixed_size_list"])
def test_foreign_parquet_vectors_ids_and_labels(tmp_path, digits, fixed):
    ids, vectors, target = digits
    path = tmp_path / "feats.parquet"
    table = pa.table({"id": ids, "digit": target.tolist(), "note": ["x"] * len(ids),
                      "embedding": _list_column(vectors, fixed)})
    pq.write_table(table, path, row_group_size=16)  # several row groups -> chunked columns

    emb = load_embeddings(path)  # the only list column, the `id` column, no labels
    assert emb.ids == ids
    np.testing.assert_array_equal(emb.vectors, vectors)
    assert emb.label_columns == {}, "scalar columns become labels only when asked"

    labelled = load_embeddings(path, label_column=["digit", "note"])
    assert list(labelled.label_columns) == ["digit", "note"]
    np.testing.assert_array_equal(labelled.labels.astype(int), target)


def test_named_columns_and_row_numbers_as_ids(tmp_path, digits):
    ids, vectors, _ = digits
    path = tmp_path / "two.parquet"
    pq.write_table(pa.table({"key": ids, "a": _list_column(vectors, True),
                             "b": _list_column(vectors[:, :8], False)}), path)
    with pytest.raises(UsageError, match=r"2 list columns \(a, b\).*--vector-column"):
        load_embeddings(path)
    emb = load_embeddings(path, vector_column="b", id_column="key")
    assert emb.ids == ids and emb.dim == 8
    np.testing.assert_array_equal(emb.vectors, vectors[:, :8])
    numbered = load_embeddings(path, vector_column="a")  # no `id` column: row numbers
    assert numbered.ids == [str(i) for i in range(len(ids))]


def test_pandas_round_trip_through_another_writer(tmp_path, digits):
    """to_pandas -> pandas' own to_parquet (list<float> written by pandas/pyarrow, no embedkit
    metadata) -> load_embeddings gives the same set back."""
    ids, vectors, target = digits
    emb = EmbeddingSet(ids, vectors, {"digit": target.astype(str)})
    df = emb.to_pandas()
    assert list(df.columns) == ["id", "digit", "vector"]
    np.testing.assert_array_equal(np.stack(df["vector"]), vectors)
    df.to_parquet(tmp_path / "df.parquet", index=False)
    back = load_embeddings(tmp_path / "df.parquet", label_column="digit")
    assert back.ids == emb.ids
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    np.testing.assert_array_equal(back.labels, emb.labels)


def test_embedkit_own_file_still_round_trips(tmp_path, digits):
    ids, vectors, target = digits
    emb = EmbeddingSet(ids, vectors, {"digit": target.astype(str)}, {"model": "m"})
    back = load_embeddings(emb.save(tmp_path / "own.parquet"))
    assert back.ids == ids and back.meta == {"model": "m"}
    np.testing.assert_array_equal(back.vectors, vectors)
    np.testing.assert_array_equal(back.labels, emb.labels)


def test_npy_and_npz_with_an_ids_file(tmp_path, digits):
    ids, vectors, target = digits
    np.save(tmp_path / "v.npy", vectors.astype(np.float64))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    emb = load_embeddings(tmp_path / "v.npy", ids=tmp_path / "ids.txt")
    assert emb.ids == ids
    np.testing.assert_array_equal(emb.vectors, vectors)
    assert load_embeddings(tmp_path / "v.npy").ids[-1] == str(len(ids) - 1)

    np.savez(tmp_path / "a.npz", embeddings=vectors, ids=np.array(ids), labels=target)
    npz = load_embeddings(tmp_path / "a.npz")
    assert npz.ids == ids
    np.testing.assert_array_equal(npz.vectors, vectors)
    np.testing.assert_array_equal(npz.labels.astype(int), target)
    renamed = load_embeddings(tmp_path / "a.npz", ids=tmp_path / "ids.txt")
    assert renamed.ids == ids


def _one_line(exc_info, *words):
    text = str(exc_info.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_wrong_shapes_and_contents_are_refused_in_one_line(tmp_path, digits):
    ids, vectors, _ = digits
    np.save(tmp_path / "flat.npy", vectors[0])
    np.save(tmp_path / "cube.npy", vectors.reshape(6, 10, 64))
    np.save(tmp_path / "words.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "other.npz", x=vectors)
    (tmp_path / "short.txt").write_text("a\nb\n")
    pq.write_table(pa.table({"v": [[1.0, 2.0], [3.0]]}), tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"v": [[1.0, 2.0], None]}), tmp_path / "holes.parquet")
    pq.write_table(pa.table({"v": [[1.0, 2.0], [3.0, 4.0]]}), tmp_path / "fine.parquet")
    np.save(tmp_path / "v.npy", vectors)
    pq.write_table(pa.table({"v": [1.0, 2.0]}), tmp_path / "scalars.parquet")
    pq.write_table(pa.table({"v": [["a"], ["b"]]}), tmp_path / "strings.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")

    # what the file holds is wrong: exit 5; a pickle: exit 4; the wrong kind of file or
    # option: exit 2 (README, Exit codes and Trust model)
    cases = [
        (lambda: load_embeddings(tmp_path / "flat.npy"), BadInputError,
         ("flat.npy", "2-D", "(64,)")),
        (lambda: load_embeddings(tmp_path / "cube.npy"), BadInputError,
         ("cube.npy", "(6, 10, 64)")),
        (lambda: load_embeddings(tmp_path / "words.npy"), BadInputError, ("words.npy", "numbers")),
        (lambda: load_embeddings(tmp_path / "objects.npy"), UntrustedFile,
         ("objects.npy", "plain arrays")),
        (lambda: load_embeddings(tmp_path / "other.npz"), UsageError,
         ("other.npz", "holds arrays x")),
        (lambda: load_embeddings(tmp_path / "cube.npy", ids=tmp_path / "short.txt"),
         BadInputError, ()),
        (lambda: load_embeddings(tmp_path / "ragged.parquet"), BadInputError,
         ("different lengths (1 to 2)",)),
        (lambda: load_embeddings(tmp_path / "holes.parquet"), BadInputError, ("1 empty rows",)),
        (lambda: load_embeddings(tmp_path / "v.npy", id_column="name"), UsageError,
         ("Parquet files",)),
        (lambda: load_embeddings(tmp_path / "scalars.parquet"), UsageError,
         ("no list column", "v")),
        (lambda: load_embeddings(tmp_path / "strings.parquet"), BadInputError,
         ("not a list of numbers",)),
        (lambda: load_embeddings(tmp_path / "fine.parquet", id_column="name"), UsageError,
         ("no id column 'name'",)),
        (lambda: load_embeddings(tmp_path / "junk.parquet"), UsageError,
         ("junk.parquet", "Parquet")),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as info:
            call()
        _one_line(info, *words)
    with pytest.raises(BadInputError) as info:
        load_embeddings(tmp_path / "v.npy", ids=tmp_path / "short.txt")
    _one_line(info, "v.npy", "60 vectors but 2 ids")
    with pytest.raises(NotFoundError):
        load_embeddings(tmp_path / "v.npy", ids=tmp_path / "missing.txt")


def test_similar_reads_foreign_columns_from_the_command_line(tmp_path, digits):
    ids, vectors, _ = digits
    path = tmp_path / "feats.parquet"
    pq.write_table(pa.table({"name": ids, "emb": _list_column(vectors, False),
                             "other": _list_column(vectors, True)}), path)
    got = CliRunner().invoke(cli, ["similar", "img000", "-e", str(path), "--vector-column", "emb",
                                   "--id-column", "name", "-k", "3", "--json"])
    assert got.exit_code == 0, got.output
    import json

    answer = [n["key"] for n in json.loads(got.output)["neighbors"]]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit[1:] @ unit[0]), kind="stable")[:3] + 1  # float64 reference
    assert answer == [ids[i] for i in expected]

    refused = CliRunner().invoke(cli, ["similar", "img000", "-e", str(path)])
    assert refused.exit_code == 2
    assert refused.output.strip().count("\n") == 0 and "--vector-column" in refused.output


def test_export_to_lancedb_and_query_it_back(tmp_path, digits):
    lancedb = pytest.importorskip("lancedb")
    ids, vectors, target = digits
    feats = EmbeddingSet(ids, vectors, {"digit": target.astype(str)}).save(tmp_path / "d.parquet")
    uri = f"lancedb://{tmp_path / 'db'}/digits"
    got = CliRunner().invoke(cli, ["export", str(feats), "--to", uri])
    assert got.exit_code == 0, got.output
    again = CliRunner().invoke(cli, ["export", str(feats), "--to", uri])
    assert again.exit_code == 2 and "--overwrite" in again.output

    table = lancedb.connect(str(tmp_path / "db")).open_table("digits")
    rows = table.to_arrow().to_pydict()
    assert rows["id"] == ids and rows["digit"] == target.astype(str).tolist()
    np.testing.assert_array_equal(np.array(rows["vector"], dtype=np.float32), vectors)
    hits = table.search(vectors[7]).metric("cosine").limit(3).to_list()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ unit[7]), kind="stable")[:3]  # float64 reference
    assert [h["id"] for h in hits] == [ids[i] for i in expected]
