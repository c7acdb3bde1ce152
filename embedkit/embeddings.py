"""EmbeddingSet: the one thing every analysis consumes.

ids (stable: relative path or line number), vectors (float32 [n, d]), label columns (the primary
one is `labels`), and meta (backbone name, fingerprint, layer, pooling, dataset root).
Saved as one Parquet file with the meta in its schema metadata.  `load_embeddings` also reads
what other tools write: Parquet with a list<float> or fixed-size-list vector column, and NumPy
.npy / .npz arrays (with an optional ids file).  Each format has its reader; what any reader
finds then passes one check (`embedding_files.validate_foreign`), so every format answers a NaN,
a repeated id or a pickle the same way.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING

from .errors import BadInputError, EmbedkitError, NotFoundError, UsageError

__all__ = ["LOAD_SUFFIXES", "SAVE_SUFFIXES", "check_output_suffix", "EmbeddingSet",
           "is_embeddings_file", "load_embeddings"]

if TYPE_CHECKING:
    from .extract import Summary


@dataclass
class EmbeddingSet:
    ids: list[str]
    vectors: np.ndarray
    label_columns: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    #: What the extraction that made this set did (from the cache, computed, skipped and why);
    #: None for a set loaded from a file or built by hand.
    summary: "Summary | None" = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.ids = [str(i) for i in self.ids]
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise UsageError(f"vectors must be [n, d] with one row per id; got "
                             f"{self.vectors.shape} for {len(self.ids)} ids")
        self.label_columns = {k: np.asarray(v, dtype=object)
                              for k, v in self.label_columns.items()}

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return (f"EmbeddingSet({len(self)} x {self.dim}, model={self.meta.get('model')!r}, "
                f"labels={list(self.label_columns)})")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def labels(self) -> np.ndarray | None:
        """The primary label column (the first one), or None for an unlabelled set."""
        return next(iter(self.label_columns.values()), None)

    def subset(self, mask_or_index) -> "EmbeddingSet":
        idx = np.arange(len(self))[mask_or_index]
        return EmbeddingSet([self.ids[i] for i in idx], self.vectors[idx],
                            {k: v[idx] for k, v in self.label_columns.items()}, dict(self.meta))

    def checksum(self) -> str:
        """sha256 of the ids and vectors: what a saved search index records to refuse a set it
        was not built from."""
        from .store import content_checksum

        return content_checksum(self.ids, self.vectors)

    def to_pandas(self):
        """A DataFrame: `id`, the label columns, and `vector` (one float32 array per row)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame({"id": self.ids, **self.label_columns,
                             "vector": list(self.vectors)})

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, parts: int | None = None) -> Path:
        """Save as .parquet (default), a folder of Parquet parts (`out/`, or `parts=N`), or
        export to .npy (ids and labels in the sidecar NAME.ids.csv) / .csv."""
        from .embedding_files import EmbeddingsWriter

        with EmbeddingsWriter(path, self.meta, list(self.label_columns), parts=parts,
                              expected_rows=len(self)) as writer:
            writer.add(self.ids, self.vectors, self.label_columns)
        return writer.path

    def to_lancedb(self, uri: str, overwrite: bool = False):
        """Write the set to a LanceDB table, `lancedb://FOLDER/TABLE` (or `FOLDER/TABLE`):
        columns `id`, the label columns and `vector` (fixed-size float32, which LanceDB searches
        as its vector column).  Returns the lancedb table.  Needs the extra embedkit[lancedb]."""
        try:
            import lancedb
        except ImportError:
            raise UsageError("exporting to LanceDB needs the extra: pip install "
                             "'embedkit[lancedb]'") from None
        import pyarrow as pa

        from .store import vector_column

        folder, _, name = uri.removeprefix("lancedb://").rstrip("/").rpartition("/")
        if not folder or not name:
            raise UsageError(f"{uri}: a LanceDB target is lancedb://FOLDER/TABLE")
        db = lancedb.connect(folder)
        columns = {"id": pa.array(self.ids, type=pa.string())}
        columns.update({k: pa.array([None if v is None else str(v) for v in values],
                                    type=pa.string())
                        for k, values in self.label_columns.items()})
        columns["vector"] = vector_column(self.vectors)
        try:
            return db.create_table(name, pa.table(columns),
                                   mode="overwrite" if overwrite else "create")
        except ValueError as exc:  # lancedb's "Table 'x' already exists"
            raise UsageError(f"{uri}: {exc}; --overwrite replaces it") from None

SAVE_SUFFIXES = (".parquet", ".npy", ".csv")  # and a folder of Parquet parts


def check_output_suffix(path, parts: int | None = None) -> Path:
    """The path, if embeddings can be saved there (checked before any work is done): a
    .parquet / .npy / .csv file, or a folder of Parquet parts."""
    from .embedding_files import output_kind

    output_kind(path, parts)
    return Path(path)


LOAD_SUFFIXES = (".parquet", ".npy", ".npz")


def load_embeddings(path: str | os.PathLike, vector_column: str | None = None,
                    id_column: str | None = None, label_column: str | list[str] | None = None,
                    ids: str | os.PathLike | None = None,
                    skip_nonfinite: bool = False) -> EmbeddingSet:
    """Load an EmbeddingSet saved by embedkit, or embeddings written by another tool.

    Whatever the format, what its reader found goes through one check
    (`embedding_files.validate_foreign`): the vectors come back finite float32 [n, d] with
    n, d >= 1 and unique ids, or the file is refused.

    Args:
        path: a .parquet file (embedkit's own, or any table with one list<float> or
            fixed-size-list vector column), a .npy 2-D float array, a .npz holding
            `vectors` (or `embeddings`) and optionally `ids` and `labels`, a .csv as embedkit
            writes it, or a folder of Parquet parts that embedkit wrote.
        vector_column: the vector column (Parquet) or array (.npz); found automatically when
            the file has exactly one list-typed column (one of the two names for .npz).
        id_column: the id column of a foreign Parquet file (default `id` if there is one,
            else row numbers).
        label_column: scalar column(s) of a foreign Parquet file to keep as label columns
            (none unless named; the first is the primary label).
        ids: a text file with one id per line, for vectors that carry no ids (.npy / .npz);
            by default the sidecar NAME.ids.csv (ids and labels) that embedkit writes beside
            NAME.npy, when there is one.
        skip_nonfinite: drop the vectors holding NaN or infinite values instead of refusing
            the file; how many were dropped is `meta["skipped_nonfinite"]`.  The set is then
            read at once (its size is known only after the check).

    Raises:
        NotFoundError: no such file (or ids file).  UsageError: a file that holds no
        embeddings this can read (another kind of file, or options that do not fit it).
        BadInputError: embeddings whose content cannot be used (NaN or infinite values, a
        repeated id, no rows, no dimensions, ragged or mis-shaped vectors), naming the file
        and the row.  UntrustedFile: a file that only unpickling could read (exit 4).  Each in
        one line.
    """
    found = _read_any(Path(path), vector_column, id_column, _names(label_column), ids)
    if isinstance(found, SavedSet):  # checked when it is read
        return found.read(skip_nonfinite=True) if skip_nonfinite else found
    return _checked(*found, Path(path), {"source": str(path)}, skip_nonfinite)


def _checked(ids, vectors, labels, path: Path, meta: dict, skip_nonfinite: bool
             ) -> EmbeddingSet:
    """The EmbeddingSet of what a reader found, once it passed `validate_foreign`."""
    from .embedding_files import validate_foreign

    checked = validate_foreign(ids, vectors, labels, path, skip_nonfinite)
    if checked.skipped:
        meta = {**meta, "skipped_nonfinite": checked.skipped}
    return EmbeddingSet(checked.ids, checked.vectors, checked.labels, meta)


def _read_any(path: Path, vector_column, id_column, label_columns: list[str], ids):
    """What the format's reader finds: embedkit's own Parquet as a SavedSet (read and checked
    on first use), anything else as (ids or None, vectors, label columns) still to check."""
    from .embedding_files import PARTS_MARKER, is_parts_folder

    if is_parts_folder(path):
        if vector_column or id_column or label_columns or ids:
            raise UsageError(f"{path}: a folder of embedkit parts carries its own columns; "
                             "vector / id / label columns are for other tools' files")
        try:
            header = json.loads((path / PARTS_MARKER).read_text())
            missing_keys = {"parts", "rows", "dim"} - set(header)
            if missing_keys:
                raise KeyError(", ".join(sorted(missing_keys)))
            files = [path / name for name in header["parts"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path / PARTS_MARKER}: damaged ({type(exc).__name__}: {exc}); "
                             "write the folder again (embedkit extract ... -o FOLDER/)") from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UsageError(f"{path}: parts missing ({', '.join(missing[:3])}); write the "
                             "folder again (embedkit extract ... -o FOLDER/)")
        return SavedSet(header, files, path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such embeddings file or folder of parts")
    suffix = path.suffix.lower()
    if suffix == ".csv":  # embedkit's own: id, labels, v0..v{d-1}
        from .embedding_files import read_csv_set

        if vector_column or id_column or label_columns or ids:
            raise UsageError(f"{path}: a .csv of embeddings carries its own columns; vector / "
                             "id / label columns are for other tools' files")
        return read_csv_set(path)
    if suffix not in LOAD_SUFFIXES:
        raise UsageError(f"{path}: embeddings are read from {', '.join(LOAD_SUFFIXES)} files "
                         "(and .csv as embedkit writes it)")
    if suffix == ".parquet":
        if ids is not None:
            raise UsageError(f"{path}: an ids file goes with .npy / .npz vectors; name the id "
                             "column of a Parquet file with id_column / --id-column")
        return _read_parquet(path, vector_column, id_column, label_columns)
    if id_column is not None or label_columns:
        raise UsageError(f"{path}: id / label columns belong to Parquet files; give NumPy "
                         "vectors their ids with an ids file (ids= / --ids)")
    return _read_numpy(path, vector_column, ids)


def _names(columns) -> list[str]:
    return [columns] if isinstance(columns, str) else list(columns or [])


def _read_parquet(path: Path, vector_column, id_column, label_columns):
    import pyarrow.parquet as pq

    from .embedding_files import PICKLE_START, untrusted

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        with open(path, "rb") as f:
            if f.read(1) == PICKLE_START:
                raise untrusted(path, "a Python pickle, not a Parquet file") from None
        raise UsageError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    pickled = [f.name for f in schema if (f.metadata or {}).get(b"ARROW:extension:name")
               == b"arrow.py_extension_type"]
    if pickled:
        raise untrusted(path, f"column '{pickled[0]}' is of a pickled Python extension type")
    if b"embedkit" in (schema.metadata or {}) and not (vector_column or id_column
                                                        or label_columns):
        return _load_own(path)
    table = pq.read_table(path)
    vectors = _vector_column(path, table, vector_column)
    ident = None
    if id_column is not None or "id" in table.column_names:
        ident = _scalar_column(path, table, id_column or "id", "id")
        if None in ident:
            raise BadInputError(f"{path}: the id column '{id_column or 'id'}' has empty values "
                                f"(the first at row {ident.index(None)}, counting from 0)")
    labels = {name: _scalar_column(path, table, name, "label") for name in label_columns}
    return ident, vectors, labels


def _load_own(path: Path) -> "SavedSet":
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
        header = json.loads(f.schema_arrow.metadata[b"embedkit"])
        header.update(rows=f.metadata.num_rows,
                      dim=f.schema_arrow.field("vector").type.list_size)
    except Exception as exc:
        raise UsageError(f"{path}: a damaged embedkit embeddings file ({type(exc).__name__}); "
                         "recreate it with: embedkit extract DATASET -o FILE.parquet") from None
    return SavedSet(header, [path], path)


class SavedSet(EmbeddingSet):
    """An EmbeddingSet backed by what embedkit wrote: its size, dimension and meta come from
    the header at once; ids, vectors and label columns are read on first use (Parquet row group
    by row group into one array, `embedding_files.read_parquet_set`; .npy with its sidecar), so a
    command that only counts or streams never loads the set, and one that uses it loads it
    once."""

    def __init__(self, header: dict, files: list[Path], where: Path):
        self._header, self._files, self._data = header, [Path(f) for f in files], None
        self._where = Path(where)  # the file or folder of parts, as messages name it
        self.meta = dict(header.get("meta", {}))
        self.summary = None

    def read(self, skip_nonfinite: bool = False) -> EmbeddingSet:
        """The set read from its files and checked as every file read is
        (`embedding_files.validate_foreign`), as a plain EmbeddingSet."""
        from .embedding_files import read_saved

        try:
            ids, vectors, labels = read_saved(self._files, self._header.get("labels", []))
        except EmbedkitError:
            raise
        except Exception as exc:
            raise UsageError(f"{self._where}: a damaged embedkit embeddings file "
                             f"({type(exc).__name__}); recreate it with: embedkit extract "
                             "DATASET -o FILE.parquet") from None
        return _checked(ids, vectors, labels, self._where, self.meta, skip_nonfinite)

    def _load(self):
        if self._data is None:
            self._data = self.read()
        return self._data

    ids = property(lambda self: self._load().ids)
    vectors = property(lambda self: self._load().vectors)
    label_columns = property(lambda self: self._load().label_columns)

    def __len__(self):
        return int(self._header["rows"])

    @property
    def dim(self) -> int:
        return int(self._header["dim"] or 0)

    def __repr__(self):
        return (f"EmbeddingSet({len(self)} x {self.dim}, model={self.meta.get('model')!r}, "
                f"labels={self._header.get('labels', [])}, files={len(self._files)})")


def _vector_column(path: Path, table, name: str | None) -> np.ndarray:
    """float32 [n, d] from the named list column, or the table's only list-typed column."""
    import pyarrow as pa

    def is_list(t):
        return pa.types.is_list(t) or pa.types.is_large_list(t) or \
            pa.types.is_fixed_size_list(t)

    listed = [f.name for f in table.schema if is_list(f.type)]
    if name is None:
        if len(listed) != 1:
            found = f"{len(listed)} list columns ({', '.join(listed)})" if listed else \
                f"no list column (columns: {', '.join(table.column_names) or 'none'})"
            raise UsageError(f"{path}: {found}; name the vector column with --vector-column "
                             "(vector_column=)")
        name = listed[0]
    if name not in table.column_names:
        raise UsageError(f"{path}: no column '{name}' (columns: "
                         f"{', '.join(table.column_names)})")
    column = table.column(name).combine_chunks()
    value_type = getattr(column.type, "value_type", None)
    if not is_list(column.type) or not (pa.types.is_floating(value_type)
                                        or pa.types.is_integer(value_type)):
        raise BadInputError(f"{path}: column '{name}' is {column.type}, not a list of numbers")
    if column.null_count:
        first = int(np.argmax(np.asarray(column.is_null())))
        raise BadInputError(f"{path}: column '{name}' has {column.null_count} empty rows (the "
                            f"first is row {first}, counting from 0)")
    lengths = np.asarray(column.value_lengths())
    if len(lengths) and lengths.min() != lengths.max():
        first = int(np.argmax(lengths != lengths[0]))
        raise BadInputError(f"{path}: column '{name}' holds vectors of different lengths "
                            f"({lengths.min()} to {lengths.max()}): row {first} has "
                            f"{lengths[first]} values, row 0 has {lengths[0]} (counting from 0)")
    # a null inside a vector reads as NaN, which the check every file goes through refuses
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), int(lengths[0]) if len(lengths) else 0)


def _scalar_column(path: Path, table, name: str, role: str) -> list:
    import pyarrow as pa

    if name not in table.column_names:
        raise UsageError(f"{path}: no {role} column '{name}' (columns: "
                         f"{', '.join(table.column_names)})")
    column = table.column(name)
    if pa.types.is_nested(column.type):
        raise BadInputError(f"{path}: the {role} column '{name}' is {column.type}, not scalar")
    return column.to_pylist()


def _read_numpy(path: Path, name: str | None, ids_file):
    """(ids or None, vectors, labels) of a .npy (with its ids file or sidecar) or a .npz."""
    if path.suffix.lower() == ".npz":
        vectors, ident, labels = _read_npz(path, name)
    else:
        with open(path, "rb") as f:
            vectors, ident, labels = _plain_array(f, path, os.fstat(f.fileno()).st_size), \
                None, {}
    from .embedding_files import ids_sidecar, read_sidecar

    if ids_file is None and ids_sidecar(path).is_file():  # written beside it by embedkit
        ids_file = ids_sidecar(path)
    if ids_file is not None and str(ids_file).lower().endswith(".ids.csv"):
        if not Path(ids_file).is_file():
            raise NotFoundError(f"{ids_file}: no such ids file")
        ident, sidecar_labels = read_sidecar(Path(ids_file))
        labels.update(sidecar_labels)
    elif ids_file is not None:
        ident = _read_ids(Path(ids_file))
    return ident, vectors, labels


def _read_npz(path: Path, name: str | None):
    """(vectors, ids or None, labels) of a .npz: its `vectors` or `embeddings` array (or the
    one named), and its `ids` and `labels` arrays when it has them."""
    from .embedding_files import PICKLE_START, untrusted

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as f:
            if f.read(1) == PICKLE_START:
                raise untrusted(path, "a Python pickle, not a .npz archive") from None
        raise BadInputError(f"{path}: not a .npz archive ({exc})") from None
    with archive:
        members = {member.removesuffix(".npy"): member for member in archive.namelist()}
        candidates = [name] if name else [k for k in ("vectors", "embeddings") if k in members]
        if len(candidates) != 1 or candidates[0] not in members:
            raise UsageError(f"{path}: holds arrays {', '.join(members) or 'none'}; expected "
                             "one of vectors / embeddings (or name it with vector_column=)")

        def array(key):
            with archive.open(members[key]) as f:
                return _plain_array(f, f"{path} ({key})",
                                    archive.getinfo(members[key]).file_size)

        vectors = array(candidates[0])
        ident = array("ids") if "ids" in members else None
        labels = {"labels": array("labels")} if "labels" in members else {}
    return vectors, ident, labels


def _plain_array(f, where, size: int) -> np.ndarray:
    """The .npy array in the open binary file `f` of `size` bytes, read as
    `np.load(allow_pickle=False)` would.  A pickle, or an array of Python objects, is refused
    (exit 4) from its first bytes, before anything of it is read: numpy would hand a pickled
    .npz member back as raw bytes, and an object array fails deep inside numpy.  A header
    whose shape the bytes after it do not fill is refused before anything is allocated (a
    200-byte file may claim terabytes)."""
    from .embedding_files import PICKLE_START, untrusted

    fmt = np.lib.format
    try:
        start = f.read(len(fmt.MAGIC_PREFIX))
        if start.startswith(PICKLE_START):
            raise untrusted(where, "a Python pickle, not a NumPy array")
        if start != fmt.MAGIC_PREFIX:
            raise BadInputError(f"{where}: not a NumPy array (no .npy header)")
        f.seek(0)
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = header(f)
        if dtype.hasobject:
            raise untrusted(where, "an array of Python objects (dtype object)")
        need, held = math.prod(shape) * dtype.itemsize, size - f.tell()
        if need != held:
            raise BadInputError(f"{where}: a damaged NumPy array (its header says {shape} "
                                f"{dtype}, {need} bytes, but {held} bytes follow it)")
        f.seek(0)
        return fmt.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BadInputError(f"{where}: a damaged NumPy array ({exc})") from None


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise NotFoundError(f"{path}: no such ids file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: an ids file is UTF-8 text, one id per line ({exc})") \
            from None


def is_embeddings_file(spec) -> bool:
    """A saved set: a .parquet / .npy / .npz file, a .csv as embedkit writes it (not a
    manifest), or a folder of parts written by embedkit."""
    from .embedding_files import csv_layout, is_parts_folder

    if not isinstance(spec, (str, os.PathLike)):
        return False
    if str(spec).lower().endswith(".csv"):
        return os.path.isfile(spec) and csv_layout(spec) is not None
    return (str(spec).lower().endswith(LOAD_SUFFIXES) and os.path.isfile(spec)) or \
        is_parts_folder(spec)
