"""EmbeddingSet: the one thing every analysis consumes.

ids (stable: relative path or line number), vectors (float32 [n, d]), label columns (the primary
one is `labels`), and meta (backbone name, fingerprint, layer, pooling, dataset root).
Saved as one Parquet file with the meta in its schema metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING

from .errors import NotFoundError, UsageError
from .files import atomic_write

__all__ = ["SAVE_SUFFIXES", "check_output_suffix", "EmbeddingSet", "is_embeddings_file",
           "load_embeddings"]

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

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save as .parquet (default), or export vectors to .npy / .csv."""
        path = check_output_suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            np.save(path, self.vectors)
            return path
        if suffix == ".csv":
            return self._save_csv(path)
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .store import vector_column

        columns = {"id": pa.array(self.ids, type=pa.string()),
                   "vector": vector_column(self.vectors)}
        for name, values in self.label_columns.items():
            columns[f"label:{name}"] = pa.array([None if v is None else str(v) for v in values],
                                                type=pa.string())
        table = pa.table(columns).replace_schema_metadata(
            {b"embedkit": json.dumps({"meta": self.meta, "labels": list(self.label_columns)},
                                     default=str).encode()})
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))

    def _save_csv(self, path: Path) -> Path:
        import csv

        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", *self.label_columns, *(f"v{i}" for i in range(self.dim))])
            for i, ident in enumerate(self.ids):
                w.writerow([ident, *(v[i] for v in self.label_columns.values()),
                            *(f"{x:.7g}" for x in self.vectors[i])])
        return path


SAVE_SUFFIXES = (".parquet", ".npy", ".csv")


def check_output_suffix(path) -> Path:
    """The path, if embeddings can be saved there (checked before any work is done)."""
    path = Path(path)
    if path.suffix.lower() not in SAVE_SUFFIXES:
        raise UsageError(f"{path}: save embeddings as .parquet, .npy or .csv")
    return path


def load_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Load an EmbeddingSet saved with `EmbeddingSet.save` / `embedkit extract -o`.

    Args:
        path: a .parquet file written by embedkit (ids, vectors, label columns and meta).

    Raises:
        NotFoundError: no such file.  UsageError: a file embedkit did not write.
    """
    import pyarrow.parquet as pq

    from .store import column_vectors

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such embeddings file")
    try:
        table = pq.read_table(path)
        raw = json.loads((table.schema.metadata or {}).get(b"embedkit", b"{}"))
        vectors = column_vectors(table.column("vector"))
        labels = {name: np.asarray(table.column(f"label:{name}").to_pylist(), dtype=object)
                  for name in raw.get("labels", [])}
    except Exception as exc:
        raise UsageError(f"{path}: not an embedkit embeddings file ({type(exc).__name__}); "
                         "create one with: embedkit extract DATASET -o FILE.parquet") from None
    return EmbeddingSet(table.column("id").to_pylist(), vectors, labels, raw.get("meta", {}))


def is_embeddings_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and str(spec).endswith(".parquet") \
        and os.path.isfile(spec)
