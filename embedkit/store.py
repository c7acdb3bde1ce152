"""The content-addressed embedding cache.

Key = (backbone fingerprint, sha256 of the item's bytes or normalised text); value = one float32
vector.  Vectors live in immutable Parquet shards (one fingerprint per shard: columns `content`,
`id`, `vector` as fixed_size_list<float32>), each written under a temporary name, fsynced, then
renamed into place.  A SQLite index (WAL) maps key -> (shard, row); a second table maps
(path, size, mtime) -> sha256 so an unchanged folder is checked with stat, not re-hashed.

Crash safety: a shard becomes visible only by an atomic rename, and the index learns about it
afterwards; on open, any shard the index does not know is absorbed and any temporary file left by
a dead process is removed.  So a killed run loses at most its unflushed buffer, and the index can
always be rebuilt from the shards alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StoreError

SHARD_SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"
DEFAULT_FLUSH_ROWS = 4096
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    fingerprint TEXT NOT NULL, content TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, content)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, dim INTEGER NOT NULL,
    rows INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (fingerprint TEXT PRIMARY KEY, description TEXT NOT NULL);
"""


def default_root() -> Path:
    """`$EMBEDKIT_HOME`, else `$XDG_CACHE_HOME/embedkit`, else `~/.cache/embedkit`."""
    if os.environ.get("EMBEDKIT_HOME"):
        return Path(os.environ["EMBEDKIT_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedkit"


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def vector_column(vectors: np.ndarray):
    """float32 [n, d] -> an Arrow fixed_size_list<float32>[d] column (shards and saved sets)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def column_vectors(column) -> np.ndarray:
    """The inverse of `vector_column`: float32 [n, d] from a fixed_size_list column."""
    column = column.combine_chunks()
    flat = column.values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, column.type.list_size).astype(np.float32, copy=False)


def read_shard(path: Path):
    """(contents, ids, vectors [n, dim] float32, fingerprint) of one shard file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"embedkit"])
    return (table.column("content").to_pylist(), table.column("id").to_pylist(),
            column_vectors(table.column("vector")), meta["fingerprint"])


def write_shard(path: Path, fingerprint: str, contents, ids, vectors: np.ndarray):
    """Write a shard atomically: temporary name, fsync, rename, fsync the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = vector_column(vectors)
    table = pa.table({
        "content": pa.array(list(contents), type=pa.string()),
        "id": pa.array([str(i) for i in ids], type=pa.string()),
        "vector": column,
    })
    meta = {"fingerprint": fingerprint, "dim": column.type.list_size, "format": 1}
    table = table.replace_schema_metadata({b"embedkit": json.dumps(meta).encode()})
    tmp = path.parent / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class StoreInfo:
    root: str
    bytes: int
    shards: int
    vectors: int
    models: list[dict] = field(default_factory=list)


class Store:
    """Open (creating if needed) the cache at `root`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.shard_dir = self.root / "shards"
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "index.sqlite", timeout=60,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"cannot open the cache at {self.root}: {exc}; pick another "
                             "location with --cache or EMBEDKIT_HOME") from None
        self._remove_stray_temp_files()
        self.absorb()

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- housekeeping -----------------------------------------------------------------------
    def _remove_stray_temp_files(self):
        for tmp in self.shard_dir.glob(f"{TMP_PREFIX}*"):
            try:
                pid = int(tmp.name[len(TMP_PREFIX):].split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid != os.getpid() and not _pid_alive(pid):
                tmp.unlink(missing_ok=True)

    def _shard_files(self) -> dict[str, Path]:
        return {p.name: p for p in self.shard_dir.glob(f"*{SHARD_SUFFIX}")
                if not p.name.startswith(TMP_PREFIX)}

    def absorb(self) -> int:
        """Index any shard on disk that the index does not know (after a crash, or written by
        another engine such as Ray).  Returns the number of shards absorbed."""
        known = {r[0] for r in self._db.execute("SELECT name FROM shards")}
        new = [p for name, p in sorted(self._shard_files().items()) if name not in known]
        for path in new:
            try:
                contents, _, vectors, fp = read_shard(path)
            except Exception:
                continue  # unreadable: reported by verify, never indexed
            self._index_shard(path.name, fp, contents, vectors.shape[1])
        return len(new)

    def _index_shard(self, name: str, fingerprint: str, contents: list[str], dim: int,
                     replace: bool = False):
        """Index a shard's rows.  `replace` (a freshly computed shard) repoints keys whose old
        shard is damaged; absorbing a shard found on disk never overrides what is indexed."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO shards VALUES (?, ?, ?, ?, ?)",
                             (name, fingerprint, dim, len(contents), time.time()))
            self._db.executemany(
                f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO vectors VALUES (?, ?, ?, ?)",
                ((fingerprint, c, name, i) for i, c in enumerate(contents)))

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- file hashes (stat cache) -----------------------------------------------------------
    def file_hashes(self, paths: list[str]) -> dict[str, str | Exception]:
        """sha256 of each file, re-hashing only files whose (size, mtime) changed.
        A file that cannot be read maps to the OSError instead."""
        out: dict[str, str | Exception] = {}
        known = {}
        for chunk in _chunks(paths, 500):
            q = f"SELECT path, size, mtime_ns, sha256 FROM file_hashes WHERE path IN ({_marks(chunk)})"
            known.update({r[0]: r[1:] for r in self._db.execute(q, chunk)})
        fresh = []
        for path in paths:
            try:
                st = os.stat(path)
                hit = known.get(path)
                if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                    out[path] = hit[2]
                    continue
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                out[path] = h.hexdigest()
                fresh.append((path, st.st_size, st.st_mtime_ns, out[path]))
            except OSError as exc:
                out[path] = exc
        if fresh:
            with self._transaction():
                self._db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                                     fresh)
        return out

    # -- reading ----------------------------------------------------------------------------
    def lookup(self, fingerprint: str, contents: list[str]) -> dict[str, tuple[str, int]]:
        """content -> (shard, row) for the keys present."""
        found = {}
        for chunk in _chunks(list(dict.fromkeys(contents)), 500):
            q = (f"SELECT content, shard, row FROM vectors WHERE fingerprint = ? "
                 f"AND content IN ({_marks(chunk)})")
            found.update({r[0]: (r[1], r[2]) for r in self._db.execute(q, [fingerprint, *chunk])})
        return found

    def get_many(self, fingerprint: str, contents: list[str]) -> dict[str, np.ndarray]:
        """content -> vector for the keys present in the cache."""
        by_shard = defaultdict(list)
        for content, (shard, row) in self.lookup(fingerprint, contents).items():
            by_shard[shard].append((content, row))
        out = {}
        for shard, rows in by_shard.items():
            try:
                _, _, vectors, _ = read_shard(self.shard_dir / shard)
            except Exception:
                continue  # a vanished or damaged shard is a miss: the item is recomputed
            for content, row in rows:
                out[content] = vectors[row]
        return out

    # -- writing ----------------------------------------------------------------------------
    def writer(self, fingerprint: str, description: dict | None = None,
               flush_rows: int | None = None) -> "ShardWriter":
        if description is not None:
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)",
                                 (fingerprint, json.dumps(description, sort_keys=True)))
        rows = flush_rows or int(os.environ.get("EMBEDKIT_FLUSH_ROWS", DEFAULT_FLUSH_ROWS))
        return ShardWriter(self, fingerprint, rows)

    def publish(self, fingerprint: str, contents, ids, vectors) -> str:
        """Write one shard and index it; returns the shard name."""
        name = f"{fingerprint[:16]}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
        write_shard(self.shard_dir / name, fingerprint, contents, ids, vectors)
        self._index_shard(name, fingerprint, list(contents), np.asarray(vectors).shape[1],
                          replace=True)
        return name

    # -- maintenance ------------------------------------------------------------------------
    def info(self) -> StoreInfo:
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        models = []
        rows = self._db.execute(
            "SELECT s.fingerprint, COUNT(*), SUM(s.rows), MAX(s.dim), m.description "
            "FROM shards s LEFT JOIN models m ON m.fingerprint = s.fingerprint "
            "GROUP BY s.fingerprint ORDER BY s.fingerprint")
        for fp, nshards, nrows, dim, desc in rows:
            d = json.loads(desc) if desc else {}
            models.append({"fingerprint": fp, "shards": nshards, "vectors": nrows, "dim": dim,
                           **{k: d.get(k) for k in ("name", "layer", "pool")}})
        nvec = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        nshards = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        return StoreInfo(str(self.root), size, nshards, nvec, models)

    def verify(self, repair: bool = False) -> list[str]:
        """Problems found (empty list = healthy).  `repair` moves unreadable shards aside and
        rebuilds the index from the shards that remain."""
        problems = []
        files = self._shard_files()
        shards = {r[0]: r[1:] for r in self._db.execute(
            "SELECT name, fingerprint, dim, rows FROM shards")}
        for name, (fp, dim, nrows) in shards.items():
            if name not in files:
                problems.append(f"{name}: indexed but missing on disk")
                continue
            try:
                contents, _, vectors, file_fp = read_shard(files[name])
            except Exception as exc:
                problems.append(f"{name}: unreadable ({type(exc).__name__})")
                continue
            if file_fp != fp or vectors.shape != (nrows, dim):
                problems.append(f"{name}: shape or fingerprint differs from the index")
            if not np.isfinite(vectors).all():
                problems.append(f"{name}: contains NaN or infinite values")
        for name in set(files) - set(shards):
            problems.append(f"{name}: on disk but not indexed (unreadable?)")
        dangling = self._db.execute(
            "SELECT COUNT(*) FROM vectors v LEFT JOIN shards s ON s.name = v.shard "
            "WHERE s.name IS NULL OR v.row >= s.rows").fetchone()[0]
        if dangling:
            problems.append(f"{dangling} index entries point at no shard row")
        if repair and problems:
            self.rebuild_index()
        return problems

    def rebuild_index(self):
        """Drop the vector index and rebuild it from the shard files alone."""
        bad = self.shard_dir / "damaged"
        for name, path in self._shard_files().items():
            try:
                read_shard(path)
            except Exception:
                bad.mkdir(exist_ok=True)
                os.replace(path, bad / name)
        with self._transaction():
            self._db.execute("DELETE FROM vectors")
            self._db.execute("DELETE FROM shards")
        self.absorb()

    def compact(self, target_rows: int = 65536) -> tuple[int, int]:
        """Merge the shards of each fingerprint into as few as possible (up to `target_rows`
        each).  Returns (shards before, shards after)."""
        before = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        groups = defaultdict(list)
        for name, fp, nrows in self._db.execute(
                "SELECT name, fingerprint, rows FROM shards ORDER BY created"):
            groups[fp].append((name, nrows))
        for fp, shards in groups.items():
            small = [n for n, rows in shards if rows < target_rows]
            if len(small) < 2:
                continue
            live = {}  # content -> (id, vector), only rows the index still points at
            for name in small:
                try:
                    contents, ids, vectors, _ = read_shard(self.shard_dir / name)
                except Exception:
                    raise StoreError(f"shard {name} is unreadable; run: embedkit cache verify "
                                     "--repair, then compact again") from None
                pointed = {r[0]: r[1] for r in self._db.execute(
                    "SELECT content, row FROM vectors WHERE shard = ?", (name,))}
                for c, i, v in zip(contents, ids, vectors):
                    if c in pointed and c not in live:
                        live[c] = (i, v)
            items = list(live.items())
            written = []
            for chunk in _chunks(items, target_rows):
                name = f"{fp[:16]}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
                write_shard(self.shard_dir / name, fp, [c for c, _ in chunk],
                            [i for _, (i, _) in chunk], np.stack([v for _, (_, v) in chunk]))
                written.append((name, chunk))
            with self._transaction():
                for name, chunk in written:
                    self._db.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?)",
                                     (name, fp, len(chunk[0][1][1]), len(chunk), time.time()))
                    self._db.executemany(
                        "UPDATE vectors SET shard = ?, row = ? WHERE fingerprint = ? AND content = ?",
                        ((name, r, fp, c) for r, (c, _) in enumerate(chunk)))
                self._db.executemany("DELETE FROM shards WHERE name = ?", ((n,) for n in small))
            for name in small:
                (self.shard_dir / name).unlink(missing_ok=True)
        after = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        return before, after

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete every vector (or those of one fingerprint). Returns the shards removed."""
        q = "SELECT name FROM shards" + (" WHERE fingerprint = ?" if fingerprint else "")
        names = [r[0] for r in self._db.execute(q, (fingerprint,) if fingerprint else ())]
        with self._transaction():
            if fingerprint:
                self._db.execute("DELETE FROM vectors WHERE fingerprint = ?", (fingerprint,))
                self._db.execute("DELETE FROM shards WHERE fingerprint = ?", (fingerprint,))
                self._db.execute("DELETE FROM models WHERE fingerprint = ?", (fingerprint,))
            else:
                for table in ("vectors", "shards", "models", "file_hashes"):
                    self._db.execute(f"DELETE FROM {table}")
        for name in names:
            (self.shard_dir / name).unlink(missing_ok=True)
        return len(names)


class ShardWriter:
    """Buffers vectors and publishes a shard every `flush_rows` rows and on close."""

    def __init__(self, store: Store, fingerprint: str, flush_rows: int):
        self.store, self.fingerprint, self.flush_rows = store, fingerprint, flush_rows
        self._contents, self._ids, self._vectors = [], [], []
        self.written = 0

    def add(self, contents, ids, vectors: np.ndarray):
        self._contents.extend(contents)
        self._ids.extend(ids)
        self._vectors.append(np.asarray(vectors, dtype=np.float32))
        if len(self._contents) >= self.flush_rows:
            self.flush()

    def flush(self):
        if not self._contents:
            return
        self.store.publish(self.fingerprint, self._contents, self._ids,
                           np.concatenate(self._vectors))
        self.written += len(self._contents)
        self._contents, self._ids, self._vectors = [], [], []

    def close(self):
        self.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(chunk) -> str:
    return ",".join("?" * len(chunk))
