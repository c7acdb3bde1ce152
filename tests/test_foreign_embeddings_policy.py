"""One policy for every embeddings file read from disk (issue 19, part 5): whatever the format
(.parquet, .npy, .npz, .csv), its vectors come back finite float32 with unique ids, or the file is
refused in one line: exit 5 for bad content (NaN / infinite values, duplicate ids, no rows, no
dimensions, ragged or mis-shaped arrays) naming the file and the row, exit 4 for a file that only
unpickling could read (README, Trust model).  Also: cosines of very wide vectors are computed in
float64, and an output that fails halfway leaves no temporary file behind."""

from __future__ import annotations

import errno
import io
import json
import pickle
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embedkit.embedding_files as embedding_files
from embedkit.cli.main import cli
from embedkit.embeddings import EmbeddingSet, load_embeddings
from embedkit.errors import BadInputError, EmbedkitError
from embedkit.vector_space import VectorSpace
from one_line_error import assert_one_line_error

ROWS, DIM = 12, 4
IDS = [f"i{k}" for k in range(ROWS)]
LABELS = ["cat", "dog"] * (ROWS // 2)


def _vectors(bad_row: int | None = None, bad_value: float = np.nan) -> np.ndarray:
    v = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
    if bad_row is not None:
        v[bad_row, 1] = bad_value
    return v


def _write_csv(path, vectors, ids=IDS):
    """A .csv as embedkit writes it: id, a label column, v0..v{d-1}."""
    header = ["id", "label", *(f"v{j}" for j in range(vectors.shape[1]))]
    lines = [",".join(header)] + [",".join([ident, label, *map(str, row)])
                                  for ident, label, row in zip(ids, LABELS, vectors)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_npz(path, vectors, ids=IDS, **arrays):
    np.savez(path, vectors=vectors, ids=np.asarray(ids), labels=np.asarray(LABELS), **arrays)
    return path


def _write_parquet(path, vectors, ids=IDS):
    pq.write_table(pa.table({"id": list(ids), "v": [list(map(float, r)) for r in vectors]}),
                   path)
    return path


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _no_traceback(result):
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)


# -- files that only unpickling could read: exit 4 -------------------------------------------------
def _npz_with_raw_pickle_ids(path):
    """A .npz whose `ids` member is a bare pickle (not a .npy array): numpy hands its bytes back
    instead of refusing it, so before it was read as 640 "ids"."""
    buffer = io.BytesIO()
    np.save(buffer, _vectors())
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("vectors.npy", buffer.getvalue())
        z.writestr("ids.npy", pickle.dumps(IDS))
    return path


def _parquet_with_pickled_extension(path):
    """A column declared as pyarrow's pickled Python extension type, which only unpickling its
    metadata would restore."""
    field = pa.field("vector", pa.list_(pa.float32()), metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": pickle.dumps("payload")})
    table = pa.table({"id": IDS, "vector": pa.array(_vectors().tolist(), pa.list_(pa.float32()))})
    pq.write_table(table.cast(pa.schema([pa.field("id", pa.string()), field])), path)
    return path


UNTRUSTED = {
    # before: ValueError traceback (exit 1)
    "object-ids.npz": lambda p: _write_npz(p, _vectors(), ids=np.asarray(IDS, dtype=object)),
    # before: "12 vectors but 640 ids" (exit 2)
    "pickle-ids.npz": _npz_with_raw_pickle_ids,
    # before: "not a NumPy file holding plain arrays" (exit 2)
    "objects.npy": lambda p: np.save(p, np.array([[1.0, 2.0]], dtype=object), allow_pickle=True),
    # before: read as a plain list column (exit 0)
    "extension.parquet": _parquet_with_pickled_extension,
    # before: "not a readable Parquet file" (exit 2)
    "pickled.parquet": lambda p: p.write_bytes(pickle.dumps({"vectors": [[1.0, 2.0]]})),
}


@pytest.mark.parametrize("name", list(UNTRUSTED))
def test_a_file_that_would_need_unpickling_is_refused_with_exit_4(tmp_path, name):
    path = tmp_path / name
    UNTRUSTED[name](path)
    assert_one_line_error(_cli("similar", "i3", "-e", path), 4, name)


# -- bad content: exit 5, naming the file and the row ----------------------------------------------
def test_nan_and_inf_are_refused_from_every_format_naming_file_and_row(tmp_path):
    """Before: NaN was refused from Parquet only (exit 2) and inf nowhere."""
    for bad in (np.nan, np.inf, -np.inf):
        vectors = _vectors(bad_row=5, bad_value=bad)
        files = [_write_csv(tmp_path / "v.csv", vectors), _write_npz(tmp_path / "v.npz", vectors),
                 _write_parquet(tmp_path / "v.parquet", vectors)]
        np.save(tmp_path / "v.npy", vectors)
        files.append(tmp_path / "v.npy")
        for path in files:
            with pytest.raises(BadInputError) as info:
                load_embeddings(path)
            text = str(info.value)
            assert str(path) in text and "row 5" in text and "--skip-nonfinite" in text, text
    # a float64 value beyond float32's range becomes infinite when read: refused the same way
    np.save(tmp_path / "huge.npy", np.array([[1.0, 2.0], [1e300, 3.0]]))
    with pytest.raises(BadInputError, match="row 1"):
        load_embeddings(tmp_path / "huge.npy")


def test_a_query_on_an_infinite_row_is_refused_not_answered_with_nothing(tmp_path):
    path = _write_npz(tmp_path / "inf.npz", _vectors(bad_row=5, bad_value=np.inf))
    assert_one_line_error(_cli("similar", "i5", "-e", path), 5, "inf.npz", "row 5")


@pytest.mark.parametrize("maker", ["csv", "npz", "parquet", "ids-file"])
def test_duplicate_ids_are_refused_naming_the_id_and_rows(tmp_path, maker):
    ids = list(IDS)
    ids[7] = "i2"
    vectors = _vectors()
    if maker == "csv":
        path = _write_csv(tmp_path / "d.csv", vectors, ids)
    elif maker == "npz":
        path = _write_npz(tmp_path / "d.npz", vectors, ids)
    elif maker == "parquet":
        path = _write_parquet(tmp_path / "d.parquet", vectors, ids)
    else:
        np.save(tmp_path / "d.npy", vectors)
        (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
        path = tmp_path / "d.npy"
    with pytest.raises(BadInputError) as info:
        load_embeddings(path, ids=tmp_path / "ids.txt" if maker == "ids-file" else None)
    assert "'i2'" in str(info.value) and "rows 2 and 7" in str(info.value), str(info.value)


TRAIN_CASES = {  # every one of these printed a scikit-learn traceback (exit 1)
    "nan.csv": lambda p: _write_csv(p, _vectors(bad_row=3)),
    "inf.csv": lambda p: _write_csv(p, _vectors(bad_row=3, bad_value=np.inf)),
    "nan.npz": lambda p: _write_npz(p, _vectors(bad_row=3)),
    "inf.npz": lambda p: _write_npz(p, _vectors(bad_row=3, bad_value=np.inf)),
    "zero-width.npz": lambda p: _write_npz(p, np.zeros((ROWS, 0), np.float32)),
}


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_train_refuses_bad_vectors_in_one_line_with_exit_5(tmp_path, name):
    path = tmp_path / name
    TRAIN_CASES[name](path)
    line = assert_one_line_error(_cli("train", path, "-o", tmp_path / "m.skops", "--cv", "2"),
                                 5, name)
    assert "row 3" in line or "0 dimensions" in line, line
    assert not (tmp_path / "m.skops").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_rank_models_refuses_a_non_finite_candidate_instead_of_ranking_it_nan(tmp_path, bad):
    """Before: exit 0, a ranking with `nan`, and scikit-learn tracebacks printed as warnings."""
    target = tmp_path / "target"
    for label in ("a", "b"):
        (target / label).mkdir(parents=True)
        (target / label / "x.txt").write_text("some text\n")
    candidate = EmbeddingSet(IDS, _vectors(bad_row=3, bad_value=bad), {"label": LABELS})
    saved = candidate.save(tmp_path / "cand.parquet")
    result = _cli("rank-models", target, "--models", saved, "--metric", "linear-probe")
    _no_traceback(result)
    assert result.exit_code == 5, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "cand.parquet" in last and "row 3" in last, last


def test_content_refusals_exit_5_not_2(tmp_path):
    """Ragged vectors, an array that is not [n, d], no rows at all: what the file holds is
    wrong, not how embedkit was asked (README, Exit codes)."""
    pq.write_table(pa.table({"v": [[1.0, 2.0], [3.0]]}), tmp_path / "ragged.parquet")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    for name, words in [("ragged.parquet", "different lengths"), ("cube.npy", "(2, 3, 4)"),
                        ("empty.npy", "no vectors")]:
        assert_one_line_error(_cli("similar", "0", "-e", tmp_path / name), 5, name, words)


# -- dropping non-finite rows on request -----------------------------------------------------------
def test_skip_nonfinite_drops_and_counts_the_bad_rows(tmp_path):
    vectors = _vectors(bad_row=3)
    vectors[8, 0] = np.inf
    path = _write_npz(tmp_path / "v.npz", vectors)
    es = load_embeddings(path, skip_nonfinite=True)
    keep = [k for k in range(ROWS) if k not in (3, 8)]
    assert es.ids == [IDS[k] for k in keep]
    np.testing.assert_array_equal(es.vectors, vectors[keep])
    np.testing.assert_array_equal(es.labels, np.asarray(LABELS)[keep])
    assert es.meta["skipped_nonfinite"] == 2

    result = _cli("similar", "i0", "-e", path, "--skip-nonfinite", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "2" in notes[0] and "v.npz" in notes[0], notes
    answer = [n["key"] for n in json.loads(result.stdout)["neighbors"]]
    unit = vectors[keep] / np.linalg.norm(vectors[keep], axis=1, keepdims=True)
    expected = np.argsort(-(unit[1:] @ unit[0]), kind="stable")[:3] + 1
    assert answer == [IDS[keep[i]] for i in expected]


def test_skip_nonfinite_on_train_trains_on_the_finite_rows(tmp_path):
    path = _write_csv(tmp_path / "nan.csv", _vectors(bad_row=3))
    result = _cli("train", path, "-o", tmp_path / "m.skops", "--cv", "2", "--skip-nonfinite",
                  "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tasks"]["label"]["train_counts"] == {"cat": 6, "dog": 5}


# -- precision -------------------------------------------------------------------------------------
def test_a_wide_vector_has_cosine_one_with_itself(tmp_path):
    """1e6-wide all-ones float32 rows: accumulated in float32 the self-cosine came out 0.9986."""
    np.save(tmp_path / "wide.npy", np.ones((3, 1_000_000), np.float32))
    space = VectorSpace.from_embeddings(load_embeddings(tmp_path / "wide.npy"))
    hits = space.most_similar("0", topn=3, keep_query_words=True)
    assert len(hits) == 3
    for hit in hits:
        assert abs(hit.score - 1.0) < 1e-6, hits


# -- outputs that fail halfway ---------------------------------------------------------------------
def test_a_failed_npy_output_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The disk fills up halfway through the vectors of a .npy output: the error is reported
    and every temporary file of the output is removed (before, closing the vectors file failed
    again inside the clean-up, which then left `.X.npy.<pid>-<hex>.ids` behind)."""
    real_open = open
    raw = str(tmp_path / ".X.npy.")

    def full_disk(path, mode="r", *args, **kwargs):  # writes to /dev/full fail with ENOSPC
        name = str(path)
        if name.startswith(raw) and not name.endswith(".ids") and "w" in mode:
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(embedding_files, "open", full_disk, raising=False)
    writer = embedding_files.EmbeddingsWriter(tmp_path / "X.npy", {}, ["label"])
    with pytest.raises(OSError) as info:
        with writer:
            writer.add(["a"], np.ones((1, 8), np.float32), {"label": ["x"]})  # buffered
            many = [f"item-{k:05d}" for k in range(5000)]
            writer.add(many, np.ones((5000, 8), np.float32), {"label": ["x"] * 5000})
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- the property: every file loads clean, or is refused with exit 4 or 5 --------------------------
DTYPES = ["float16", "float32", "float64", "int32", "object"]


@st.composite
def foreign_files(draw):
    """(format, vectors array, ids array or None): shapes 0..3-D including zero-width, NaN / inf
    injected, ids with duplicates or of object dtype."""
    fmt = draw(st.sampled_from(["parquet", "npy", "npz", "csv"]))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    values = np.asarray(draw(st.lists(st.floats(-1e3, 1e3), min_size=int(np.prod(shape)),
                                      max_size=int(np.prod(shape)))), dtype=np.float64)
    vectors = values.reshape(shape)
    if vectors.size and draw(st.booleans()):
        flat = vectors.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf,
                                                                          -np.inf, 1e300]))
    if dtype == "int32":  # integers hold no NaN or infinity
        vectors = np.clip(np.nan_to_num(vectors), -1e3, 1e3)
    with np.errstate(over="ignore"):  # 1e300 as float16 / float32: infinite, as it should be
        vectors = vectors.astype(dtype)
    n = shape[0] if shape else 0
    ids = None
    if draw(st.booleans()):
        ids = np.asarray([f"k{draw(st.integers(0, 5))}" for _ in range(n)],
                         dtype=draw(st.sampled_from(["str", "object"])))
    return fmt, vectors, ids


def _write_foreign(folder, fmt, vectors, ids):
    path = folder / f"f.{fmt}"
    if fmt == "npy":
        np.save(path, vectors, allow_pickle=True)
        if ids is not None:
            (folder / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
            return path, folder / "ids.txt"
    elif fmt == "npz":
        np.savez(path, vectors=vectors, **({"ids": ids} if ids is not None else {}))
    elif fmt == "parquet":  # a list column (nested for 3-D), as other tools write them
        rows = np.atleast_2d(vectors).tolist()
        columns = {"v": pa.array(rows) if rows and rows[0] else
                   pa.array(rows, pa.list_(pa.float64()))}
        if ids is not None and len(ids) == len(rows):
            columns["id"] = pa.array([str(i) for i in ids])
        pq.write_table(pa.table(columns), path)
    else:  # embedkit's CSV layout; a zero-width row still has its v0 column, left empty
        table = np.atleast_2d(vectors)
        matrix = table.reshape(len(table), int(np.prod(table.shape[1:])))
        names = ids if ids is not None and len(ids) == len(matrix) else range(len(matrix))
        width = max(matrix.shape[1], 1)
        lines = [",".join(["id", *(f"v{j}" for j in range(width))])]
        lines += [",".join([str(i), *(map(str, row) if len(row) else [""])])
                  for i, row in zip(names, matrix)]
        path.write_text("\n".join(lines) + "\n")
    return path, None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=foreign_files())
def test_loading_any_foreign_file_gives_clean_vectors_or_an_exit_4_or_5(tmp_path, case):
    for old in tmp_path.iterdir():
        old.unlink()
    path, ids_file = _write_foreign(tmp_path, *case)
    try:
        es = load_embeddings(path, ids=ids_file)
        vectors, ids = es.vectors, es.ids
    except EmbedkitError as exc:
        assert exc.exit_code in (4, 5), f"exit {exc.exit_code}: {exc}"
        assert "\n" not in str(exc) and path.name in str(exc), str(exc)
        return
    assert vectors.dtype == np.float32 and vectors.ndim == 2
    assert len(vectors) >= 1 and vectors.shape[1] >= 1
    assert np.isfinite(vectors).all()
    assert len(set(ids)) == len(ids) == len(vectors)


# -- found in review: headers that lie, damaged members, pickles under .npz, read-only arrays --

def test_a_npy_header_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 9, 10 ** 4)})
    path = tmp_path / "huge.npy"
    path.write_bytes(buf.getvalue() + b"\0" * 24)  # 200 bytes claiming 40 TB
    with pytest.raises(BadInputError, match="header says .* but 24 bytes follow it"):
        load_embeddings(path)


def test_a_damaged_compressed_npz_member_is_bad_input(tmp_path):
    np.savez_compressed(tmp_path / "z.npz", vectors=np.ones((50, 8), np.float32))
    data = bytearray((tmp_path / "z.npz").read_bytes())
    at = data.find(b"vectors.npy") + 40  # inside the deflated member
    data[at:at + 20] = b"\xff" * 20
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    assert_one_line_error(_cli("similar", "0", "--embeddings", tmp_path / "bad.npz"), 5,
                          "bad.npz (vectors): a damaged NumPy array")


def test_a_pickle_named_npz_is_refused_as_untrusted(tmp_path):
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"vectors": [[1.0, 2.0]]}))
    assert_one_line_error(_cli("similar", "0", "--embeddings", tmp_path / "p.npz"), 4,
                          "a Python pickle")


def test_vectors_read_from_parquet_are_the_callers_to_change(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "v": [[1.0, 2.0], [3.0, 4.0]]}), path)
    vectors = load_embeddings(path).vectors
    vectors /= 2  # read-only before: a view of Arrow's memory
    np.testing.assert_array_equal(vectors, [[0.5, 1.0], [1.5, 2.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_query_vector_is_refused(bad):
    space = VectorSpace(["a", "b"], np.eye(2, dtype=np.float32))
    with pytest.raises(EmbedkitError, match="finite"):
        space.most_similar(positive=[np.array([1.0, bad])])
