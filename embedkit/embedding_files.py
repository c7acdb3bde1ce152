"""Embeddings written and read a chunk at a time, so a set of any size costs one chunk of memory
to write and itself once to read.

Outputs (`EmbeddingsWriter`):
- `.parquet`: one file, a row group per chunk; the meta and label names in its schema metadata.
- a folder (`out/`, or any path with `parts`): Parquet parts `part-00000.parquet`, ... in that
  same schema, plus `_embedkit.json` (meta, parts, rows).  DuckDB, pandas, Spark and Ray read the
  parts directly (`out/*.parquet`).
- `.npy`: the vectors, with the ids and label columns in a sidecar `NAME.ids.csv` beside it.
- `.csv`: one row per item: id, labels, v0..v{d-1}.
Every output is written under a temporary name and renamed when complete, so a run that fails
leaves the previous output (or none), never half of one, and no temporary file.

Inputs: whatever reads an embeddings file (these formats, and the foreign ones
`embeddings.load_embeddings` reads) hands its ids, vectors and label columns to
`validate_foreign`, the one policy every format shares, so that no analysis meets a NaN, an
infinite value, a repeated id or an empty set that a format let through.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import BadInputError, UntrustedFile, UsageError
from .files import atomic_write, first_repeat

__all__ = ["PARTS_MARKER", "PICKLE_START", "CheckedSet", "EmbeddingsWriter", "csv_layout",
           "ids_sidecar", "is_parts_folder", "output_kind", "read_csv_set", "read_parquet_set",
           "read_saved", "read_sidecar", "untrusted", "validate_foreign"]

PARTS_MARKER = "_embedkit.json"  # "_": skipped by Arrow, pandas and Spark readers
#: Rows per part of a folder output when the number of parts is not given.
PART_ROWS = 100_000


def output_kind(path, parts: int | None = None) -> str:
    """"parts" for a folder, else the file suffix; checked before any work is done."""
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    # a path ending in / (pathlib drops it, so also any path without a suffix) is a folder
    folder = text.endswith(("/", os.sep)) or Path(text).is_dir() or not suffix
    if parts is not None:
        if parts < 1:
            raise UsageError(f"--parts {parts}: give at least 1")
        if not folder:
            raise UsageError(f"{text}: --parts writes a folder of Parquet parts; give a folder "
                             "(e.g. -o out/)")
    if folder:
        if Path(text).is_file():
            raise UsageError(f"{text}: a file is in the way of the output folder")
        _check_free(Path(text))
        return "parts"
    from .embeddings import SAVE_SUFFIXES

    if suffix not in SAVE_SUFFIXES:
        raise UsageError(f"{text}: save embeddings as .parquet, .npy or .csv, or as a folder "
                         "of Parquet parts (a path ending in /)")
    return suffix


def _check_free(folder: Path):
    """A folder output replaces embedkit's own earlier output, never anything else."""
    if folder.is_dir() and not is_parts_folder(folder) and any(folder.iterdir()):
        raise UsageError(f"{folder}: this folder holds other files; embedkit writes its parts "
                         "into a new or empty folder (or one it wrote before, which it "
                         "replaces)")


def ids_sidecar(path) -> Path:
    """Where the ids and labels of a .npy output go: `NAME.ids.csv` beside `NAME.npy`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.ids.csv")


def is_parts_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / PARTS_MARKER).is_file()


#: Where an output place is refused by the operating system (exit 1, README "Exit codes")
#: rather than named wrongly (a missing or impossible place: a bad -o, exit 2).
_REFUSED_BY_THE_SYSTEM = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


class EmbeddingsWriter:
    """Streams (ids, vectors, label columns) chunks into one of the outputs above.

    Use as a context manager: the output appears, complete, when the block ends without an
    exception; on an exception everything written so far is removed.
    """

    def __init__(self, path, meta: dict, label_names: list[str], parts: int | None = None,
                 expected_rows: int | None = None):
        self.kind = output_kind(path, parts)
        self.path = Path(path)
        self.meta, self.label_names = meta, list(label_names)
        self._schema_meta = json.dumps({"meta": meta, "labels": self.label_names},
                                       default=str).encode()
        self.rows, self.dim = 0, None
        self._part_rows = PART_ROWS if parts is None else \
            max(1, -(-(expected_rows or 0) // parts))
        self._tmp = self.path.parent / f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex}"
        self._out = None  # the open file / Parquet writer
        self._parts: list[str] = []
        self._in_part = 0
        try:  # a place that cannot take the output is refused before any work, naming it
            if self.kind == "parts":
                self._tmp.mkdir(parents=True)
            else:
                self._tmp.parent.mkdir(parents=True, exist_ok=True)
                self._tmp.touch()
                self._tmp.unlink()
        except OSError as exc:
            if isinstance(exc, PermissionError) or exc.errno in _REFUSED_BY_THE_SYSTEM:
                raise type(exc)(exc.errno, f"{exc.strerror}: cannot write the output there; "
                                "pick another -o", str(path)) from None  # exit 1, as the OS's
            why = "a file is in the way of its folder" if isinstance(
                exc, (FileExistsError, NotADirectoryError)) else exc.strerror or str(exc)
            raise UsageError(f"{path}: cannot write the output there ({why}); pick another "
                             "-o") from None

    # -- writing -------------------------------------------------------------------------
    def add(self, ids, vectors: np.ndarray, labels: dict[str, list] | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(ids):
            return
        if self.dim is None:
            self.dim = vectors.shape[1]
        labels = {name: list((labels or {}).get(name, [None] * len(ids)))
                  for name in self.label_names}
        if self.kind == "parts":
            start = 0
            while start < len(ids):
                if not self._parts or self._in_part >= self._part_rows:
                    self._next_part()
                stop = start + min(len(ids) - start, self._part_rows - self._in_part)
                self._write_parquet(self._tmp / self._parts[-1], self._table(
                    ids[start:stop], vectors[start:stop],
                    {k: v[start:stop] for k, v in labels.items()}))
                self._in_part += stop - start
                start = stop
        elif self.kind == ".parquet":
            self._write_parquet(self._tmp, self._table(ids, vectors, labels))
        elif self.kind == ".npy":
            if self._out is None:
                self._out = (open(self._tmp, "wb"), open(f"{self._tmp}.ids", "w", newline=""))
                csv.writer(self._out[1]).writerow(["id", *self.label_names])
            self._out[0].write(vectors.tobytes())
            csv.writer(self._out[1]).writerows(
                zip(ids, *(_cells(labels[k]) for k in self.label_names)))
        else:  # .csv
            if self._out is None:
                self._out = open(self._tmp, "w", newline="")
                csv.writer(self._out).writerow(
                    ["id", *self.label_names, *(f"v{i}" for i in range(self.dim))])
            w = csv.writer(self._out)
            for i, ident in enumerate(ids):
                w.writerow([ident, *(labels[k][i] for k in self.label_names),
                            *(f"{x:.9g}" for x in vectors[i])])  # float32 exactly
        self.rows += len(ids)

    def _table(self, ids, vectors, labels):
        import pyarrow as pa

        from .store import vector_column

        columns = {"id": pa.array([str(i) for i in ids], type=pa.string()),
                   "vector": vector_column(vectors)}
        for name in self.label_names:
            columns[f"label:{name}"] = pa.array(_cells(labels[name]), type=pa.string())
        return pa.table(columns).replace_schema_metadata({b"embedkit": self._schema_meta})

    def _write_parquet(self, path: Path, table):
        """Append `table` as a row group to the Parquet file open at `path` (opened here)."""
        if self._out is None:
            import pyarrow.parquet as pq

            self._out = pq.ParquetWriter(path, table.schema)
        self._out.write_table(table)

    def _next_part(self):
        self._close_files()
        self._parts.append(f"part-{len(self._parts):05d}.parquet")
        self._in_part = 0

    def _header(self) -> dict:
        """What a reader needs before reading any vector (`embeddings.SavedSet`)."""
        return {"meta": self.meta, "labels": self.label_names, "rows": self.rows,
                "dim": self.dim}

    # -- finishing -----------------------------------------------------------------------
    def _close_files(self):
        """Close every open output file, each even when another fails (a full disk fails the
        flush of the last buffered bytes), then raise the first failure."""
        out, self._out = self._out, None
        failure = None
        for f in (out if isinstance(out, tuple) else (out,)):
            try:
                if f is not None:
                    f.close()
            except OSError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def saved(self):
        """The committed output as a SavedSet (nothing read until it is used)."""
        from .embeddings import SavedSet

        files = [self.path / name for name in self._parts] if self.kind == "parts" else \
            [self.path]
        return SavedSet(self._header(), files, self.path)

    def commit(self) -> Path:
        self._close_files()
        if self.kind != "parts" and self.rows == 0:
            raise UsageError(f"{self.path}: nothing to save (no vectors)")
        if self.kind == "parts":
            (self._tmp / PARTS_MARKER).write_text(json.dumps(
                {**self._header(), "parts": self._parts}, default=str, indent=1))
            _check_free(self.path)  # still free, or embedkit's own earlier output
            if self.path.is_dir():
                shutil.rmtree(self.path)
            os.replace(self._tmp, self.path)
        elif self.kind == ".npy":
            self._finish_npy()
        else:
            os.replace(self._tmp, self.path)
        return self.path

    def _finish_npy(self):
        """The .npy header goes in front of the raw rows once their number is known."""
        raw = Path(self._tmp)

        def write(tmp):
            with open(tmp, "wb") as out, open(raw, "rb") as f:
                np.lib.format.write_array_header_1_0(out, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                    "fortran_order": False, "shape": (self.rows, self.dim or 0)})
                shutil.copyfileobj(f, out, 1 << 20)

        # the old sidecar goes first and the new one comes last, so that no moment pairs the
        # new vectors with an earlier run's ids (a run stopped between the two leaves the new
        # vectors with numbered ids, never wrong ones)
        sidecar = ids_sidecar(self.path)
        atomic_write(self.path, write, before_rename=lambda: sidecar.unlink(missing_ok=True))
        atomic_write(sidecar, Path(f"{raw}.ids").read_bytes())
        for p in (raw, Path(f"{raw}.ids")):
            p.unlink(missing_ok=True)

    def abort(self):
        """Remove everything written so far.  Closing may fail again for the reason that made
        the run fail (that first error is the one reported): the files go all the same."""
        try:
            self._close_files()
        except OSError:
            pass
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        for p in (self._tmp, Path(f"{self._tmp}.ids")):
            p.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _cells(values) -> list:
    return [None if v is None else str(v) for v in values]


# -- reading --------------------------------------------------------------------------------
def read_parquet_set(files: list[Path], label_names: list[str]):
    """(ids, float32 [n, d] vectors, label columns) of embedkit Parquet files read row group by
    row group into one preallocated array: the set is held once, never as an Arrow table and a
    NumPy copy at the same time.  Files are opened one at a time, memory-mapped while read."""
    import pyarrow.parquet as pq

    from .store import column_vectors

    n = sum(pq.read_metadata(f).num_rows for f in files)
    dim = pq.read_schema(files[0]).field("vector").type.list_size if files else 0
    vectors = np.empty((n, dim), dtype=np.float32)
    ids: list[str] = []
    labels: dict[str, list] = {name: [] for name in label_names}
    at = 0
    for path in files:
        with pq.ParquetFile(path, memory_map=True) as f:
            for g in range(f.num_row_groups):
                group = f.read_row_group(g)
                rows = group.num_rows
                vectors[at:at + rows] = column_vectors(group.column("vector"))
                ids += group.column("id").to_pylist()
                for name in label_names:
                    labels[name] += group.column(f"label:{name}").to_pylist()
                at += rows
    return ids, vectors, labels


def read_saved(files: list[Path], label_names: list[str]):
    """(ids, vectors, label columns) of any output above."""
    if not files:  # a folder of no parts: an empty set, which the reader's check refuses
        return [], np.empty((0, 0), np.float32), {name: [] for name in label_names}
    suffix = files[0].suffix.lower()
    if suffix == ".parquet":
        return read_parquet_set(files, label_names)
    if suffix == ".npy":  # with its sidecar, checked as load_embeddings checks any .npy
        from .embeddings import load_embeddings

        es = load_embeddings(files[0])
        return es.ids, es.vectors, es.label_columns
    return read_csv_set(files[0])


def csv_layout(path) -> list[str] | None:
    """The label columns of a .csv embedkit wrote (`id`, labels, `v0`..`v{d-1}`), or None for
    any other CSV (a manifest, say)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet adds a BOM
            return _label_columns(next(csv.reader(f), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _label_columns(header: list[str]) -> list[str] | None:
    """The labels between `id` and the vectors' run `v0`..`v{d-1}` of a header, else None."""
    if not header or header[0] != "id" or "v0" not in header:
        return None
    first = len(header) - 1 - header[::-1].index("v0")  # the vectors' run (a label may be 'v0')
    if header[first:] != [f"v{j}" for j in range(len(header) - first)]:
        return None
    return header[1:first]


def read_csv_set(path) -> tuple[list[str], np.ndarray, dict[str, list]]:
    """(ids, vectors, label columns) of a .csv embedkit wrote; empty label cells are None."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header, *rows = list(csv.reader(f)) or [[]]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{path}: not readable as CSV text ({exc})") from None
    label_names = _label_columns(header)
    if label_names is None:
        raise UsageError(f"{path}: not embeddings as embedkit writes them (columns id, labels, "
                         "v0, v1, ...)")
    k = len(label_names)
    short = next((n for n, r in enumerate(rows, 2) if len(r) != len(header)), None)
    if short is not None:
        raise BadInputError(f"{path}: line {short} has {len(rows[short - 2])} cells, the header "
                            f"{len(header)}; write the file again (embedkit extract ... -o "
                            "FILE.csv)")
    try:
        vectors = np.asarray([r[1 + k:] for r in rows], dtype=np.float32).reshape(
            len(rows), len(header) - 1 - k)
    except ValueError:
        line, cell = _first_non_number(rows, 1 + k)
        raise BadInputError(f"{path}: line {line}: the vector cell '{cell}' is not a number") \
            from None
    labels = {name: [r[1 + j] or None for r in rows] for j, name in enumerate(label_names)}
    return [r[0] for r in rows], vectors, labels


def _first_non_number(rows: list[list[str]], start: int) -> tuple[int, str]:
    """(file line, cell) of the first cell from column `start` on that is not a number."""
    for line, row in enumerate(rows, 2):
        for cell in row[start:]:
            try:
                np.float32(cell)  # the conversion np.asarray(..., dtype=np.float32) does
            except ValueError:
                return line, cell
    return 0, ""  # not reached: the cell numpy could not read is among them


def read_sidecar(path: Path) -> tuple[list[str], dict[str, list]]:
    """The ids and label columns of a `NAME.ids.csv` sidecar (empty cells are None)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{path}: not an ids file as embedkit writes it ({exc})") from None
    if not rows or not rows[0] or rows[0][0] != "id":
        raise BadInputError(f"{path}: an ids file of .npy vectors starts with an 'id' header")
    header, body = rows[0], rows[1:]
    labels = {name: [r[j] if j < len(r) and r[j] != "" else None for r in body]
              for j, name in enumerate(header[1:], 1)}
    return [r[0] if r else "" for r in body], labels


# -- one policy for every file read ----------------------------------------------------------
class CheckedSet(NamedTuple):
    """What `validate_foreign` hands back: the rows that passed, and how many were dropped."""

    ids: list[str]
    vectors: np.ndarray  # float32 [n, d], C-contiguous, every value finite
    labels: dict[str, np.ndarray]
    skipped: int


def validate_foreign(ids, vectors, labels: dict, path, skip_nonfinite: bool = False
                     ) -> CheckedSet:
    """The one check that every embeddings file read from disk goes through after its
    format's reader, so that .parquet, .npy, .npz and .csv share one policy and no analysis
    (a scikit-learn fit, a cosine) meets what it cannot use.

    Refused with BadInputError (exit 5, README Exit codes), naming the file and the row (rows
    count from 0, as NumPy and Parquet index them): vectors that are not a 2-D array of
    numbers, no rows, no dimensions, ids or label columns of another length, a repeated id,
    and a row holding NaN or an infinite value once converted to float32 (so a float64 beyond
    float32's range counts), unless `skip_nonfinite`, which drops such rows and counts them.

    Args:
        ids: one per vector, or None for row numbers.
        vectors: the array the reader found (any numeric dtype).
        labels: label columns, one value per vector.
        path: the file, as the messages name it.
        skip_nonfinite: drop rows with NaN / infinite values instead of refusing the file.
    """
    vectors = _number_matrix(vectors, path)
    n = len(vectors)
    ids = [str(i) for i in range(n)] if ids is None else \
        [str(i) for i in _one_per_vector(ids, n, "ids", path)]
    labels = {name: np.asarray(_one_per_vector(values, n, f"values of label '{name}'", path),
                               dtype=object) for name, values in labels.items()}
    rows = np.arange(n)
    # a NaN or an infinity carries into its row's sum, which float64 keeps from overflowing;
    # one pass, without a boolean copy of the whole matrix
    finite = np.isfinite(vectors.sum(axis=1, dtype=np.float64))
    skipped = int(n - finite.sum())
    if skipped:
        first = int(np.argmin(finite))
        if not skip_nonfinite:
            raise BadInputError(
                f"{path}: row {first} (id '{ids[first]}'; rows count from 0) holds a NaN or "
                f"infinite value ({skipped} such row{'s' if skipped > 1 else ''} in all); fix "
                "the file, or drop such rows with --skip-nonfinite (skip_nonfinite=True)")
        if skipped == n:
            raise BadInputError(f"{path}: every one of its {n} vectors holds NaN or infinite "
                                "values; nothing is left to use")
        vectors, rows = vectors[finite], rows[finite]
        ids = [ids[r] for r in rows]
        labels = {name: values[finite] for name, values in labels.items()}
    _check_unique(ids, rows, path)
    return CheckedSet(ids, vectors, labels, skipped)


def _number_matrix(vectors, path) -> np.ndarray:
    """float32 [n, d], n and d at least 1, from a 2-D array of real numbers."""
    vectors = np.asarray(vectors)
    kind = vectors.dtype
    if vectors.ndim != 2 or not (np.issubdtype(kind, np.integer)
                                 or np.issubdtype(kind, np.floating)):
        raise BadInputError(f"{path}: vectors must be a 2-D array of numbers [n, d]; found "
                            f"{kind} of shape {vectors.shape}")
    if not vectors.shape[0]:
        raise BadInputError(f"{path}: holds no vectors (0 rows)")
    if not vectors.shape[1]:
        raise BadInputError(f"{path}: its vectors have 0 dimensions (shape {vectors.shape})")
    with np.errstate(over="ignore"):  # beyond float32's range: infinite, refused as such
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # a view of a reader's memory (Arrow's) is read-only: the caller gets an array of its own
    return vectors if vectors.flags.writeable else vectors.copy()


def _one_per_vector(values, n: int, what: str, path):
    """`values` if it is a flat column of n values."""
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise BadInputError(f"{path}: {what} must be one value per vector; found an array of "
                            f"shape {values.shape}")
    if len(values) != n:
        raise BadInputError(f"{path}: {n} vectors but {len(values)} {what}")
    return values


def _check_unique(ids: list[str], rows: np.ndarray, path):
    """Refuse a repeated id, naming it and both rows (in the file's numbering)."""
    repeat = first_repeat(ids)
    if repeat is not None:
        ident, first, again = repeat
        raise BadInputError(f"{path}: id '{ident}' is used twice (rows {rows[first]} and "
                            f"{rows[again]}, counting from 0); ids must be unique")


#: How every pickle of protocol 2 or later starts (the PROTO opcode).
PICKLE_START = b"\x80"


def untrusted(path, what: str) -> UntrustedFile:
    """The refusal (exit 4, README Trust model) of a file that only unpickling could read:
    embedkit never unpickles a file from elsewhere, because a pickle can run any code."""
    return UntrustedFile(f"{path}: {what}, which only unpickling could read; refused, since a "
                      "pickle can run code: save plain arrays of numbers and strings instead")
