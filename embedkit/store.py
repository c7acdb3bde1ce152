"""The content-addressed embedding cache.

Key = (backbone fingerprint, sha256 of the item's bytes or normalised text); value = one float32
vector.  Vectors live in immutable Parquet shards (one fingerprint per shard: columns `content`,
`id`, `vector` as fixed_size_list<float32>), each written under a temporary name, fsynced, then
renamed into place.  A SQLite index (WAL) maps key -> (shard, row).

File identity: a second table maps what identifies a file, as git's index does (absolute real
path, device, inode, size, mtime_ns, ctime_ns), to its sha256, so an unchanged folder is checked
with stat, not re-hashed.  Any doubt is a miss: a changed field, or a file modified so recently
that a same-tick change could go unseen ("racily clean" in git's words), is hashed again.

Integrity: every shard's sha256 is recorded when it is published (and its content checksum is in
the shard's own metadata, so a shard written by another engine is checked before it is absorbed).
A read whose bytes do not match is a miss, so the items are recomputed and repointed; `verify`
re-hashes every shard and quarantines those that changed.  The runtime exports kept beside the
shards (`runtimes/`) follow the same rule through their records (`artifact_records`): `verify`
checks them too, and removes damaged ones with `repair`.

Crash safety: a shard becomes visible only by an atomic rename, and the index learns about it
afterwards; on open, any shard the index does not know is absorbed and any temporary file left by
a dead process is removed.  So a killed run loses at most the rows not yet published (its
buffer, and the one shard being written in the background), and the index can
always be rebuilt from the shards alone.  `EMBEDKIT_FAULT=<point>[:<n>]` kills the process at a
named point (see `fault_point`), for the crash-loop harness.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import stat as stat_module
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifact_records import RUNTIME_EXPORTS, recorded_problems
from .errors import CacheUnavailable, StoreError
from .files import atomic_write, available_cores, sha256_file

__all__ = ["DEFAULT_FLUSH_ROWS", "FAULT_POINTS", "QUARANTINE", "RACY_WINDOW_NS", "SCHEMA_VERSION",
           "SHARD_SUFFIX", "TMP_PREFIX", "column_vectors", "content_checksum", "default_root",
           "fault_point", "read_shard", "Shard", "shard_problem", "ShardWriter", "Store",
           "StoreInfo", "vector_column", "write_shard"]

SHARD_SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"
DEFAULT_FLUSH_ROWS = 4096
#: Shards whose bytes no longer match their recorded checksum are moved here by `verify`.
QUARANTINE = "damaged"
#: A file modified less than this long before it was hashed is not remembered (git's "racily
#: clean" case): a change within the same timestamp tick would keep size and times.
RACY_WINDOW_NS = 2_000_000_000
SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    fingerprint TEXT NOT NULL, content TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, content)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, dim INTEGER NOT NULL,
    rows INTEGER NOT NULL, created REAL NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_identity (
    path BLOB PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (fingerprint TEXT PRIMARY KEY, description TEXT NOT NULL);
"""
_STATEMENTS = [statement for statement in _SCHEMA.split(";") if statement.strip()]
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))
#: Fault points the crash-loop harness can arm (EMBEDKIT_FAULT=<point>[:<nth hit>]).
FAULT_POINTS = ("shard-written", "shard-renamed", "index-transaction", "file-identity",
                "compact-written", "compact-committed")
_fault_hits: dict[str, int] = defaultdict(int)


def fault_point(name: str):
    """Kill this process with SIGKILL here if `EMBEDKIT_FAULT` names this point (and, with
    `:n`, this is its n-th hit).  A dictionary look-up when unarmed."""
    armed = os.environ.get("EMBEDKIT_FAULT")
    if not armed:
        return
    point, _, nth = armed.partition(":")
    if point != name:
        return
    _fault_hits[name] += 1
    if _fault_hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def default_root() -> Path:
    """`$EMBEDKIT_HOME`, else `$XDG_CACHE_HOME/embedkit`, else `~/.cache/embedkit`."""
    if os.environ.get("EMBEDKIT_HOME"):
        return Path(os.environ["EMBEDKIT_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedkit"


#: This node, as temporary shard names carry it ("h" and 12 hex digits of its host name's hash).
_HOST = "h" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
#: Another node's temporary shard file older than this is a dead writer's (a day; writing one
#: shard takes seconds).
STALE_TEMP_S = 24 * 3600


def _temp_writer(name: str) -> tuple[str | None, int]:
    """(node, process id) of a temporary shard file's writer; node None for names from before
    nodes were recorded (`.tmp-<pid>-...`); pid -1 where unreadable."""
    parts = name[len(TMP_PREFIX):].split("-")
    host = parts[0] if len(parts) > 2 and parts[0].startswith("h") else None
    try:
        return host, int(parts[1] if host else parts[0])
    except ValueError:
        return host, -1


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


def content_checksum(contents, vectors: np.ndarray) -> str:
    """sha256 over a shard's keys and vector bytes: what its metadata promises it holds."""
    h = hashlib.sha256()
    for c in contents:
        h.update(c.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return h.hexdigest()


@dataclass
class Shard:
    """One shard file, decoded."""

    contents: list[str]
    ids: list[str]
    vectors: np.ndarray  # float32 [n, dim]
    fingerprint: str
    sources: list[str | None]  # the file path or text each row was computed from (deep verify)
    checksum: str | None  # content_checksum recorded at write time


def read_shard(path: Path, expect_sha256: str | None = None) -> Shard:
    """Decode one shard file.  With `expect_sha256`, the file's bytes must hash to it, else
    StoreError: a shard that changed after it was published is never served."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = Path(path).read_bytes()
    if expect_sha256 is not None and hashlib.sha256(data).hexdigest() != expect_sha256:
        raise StoreError(f"{path}: content differs from the checksum recorded when it was "
                         "published; run: embedkit cache verify --repair")
    # the bytes just hashed are the bytes decoded.  An Arrow buffer read on this thread: with
    # Python file objects or Arrow's reader threads, the process could abort at exit beside
    # torch ("terminate called without an active exception", about 1 run in 4 here)
    table = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False).read(use_threads=False)
    meta = json.loads(table.schema.metadata[b"embedkit"])
    sources = (table.column("source").to_pylist() if "source" in table.column_names
               else [None] * table.num_rows)
    return Shard(table.column("content").to_pylist(), table.column("id").to_pylist(),
                 column_vectors(table.column("vector")), meta["fingerprint"], sources,
                 meta.get("checksum"))


def write_shard(path: Path, fingerprint: str, contents, ids, vectors: np.ndarray,
                sources=None) -> str:
    """Write a shard atomically (temporary name, fsync, rename, fsync the folder); returns the
    sha256 of the bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    contents = list(contents)
    column = vector_column(vectors)
    table = pa.table({
        "content": pa.array(contents, type=pa.string()),
        "id": pa.array([str(i) for i in ids], type=pa.string()),
        "vector": column,
        "source": pa.array(list(sources) if sources is not None else [None] * len(contents),
                           type=pa.string()),
    })
    meta = {"fingerprint": fingerprint, "dim": column.type.list_size, "format": 2,
            "checksum": content_checksum(contents, vectors)}
    table = table.replace_schema_metadata({b"embedkit": json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    atomic_write(path, data, tmp_prefix=f"{TMP_PREFIX}{_HOST}-{os.getpid()}-",
                 before_rename=lambda: fault_point("shard-written"))
    fault_point("shard-renamed")
    return hashlib.sha256(data).hexdigest()


def shard_problem(shard: Shard) -> str | None:
    """Why a decoded shard cannot be trusted, or None."""
    if shard.checksum is not None and \
            content_checksum(shard.contents, shard.vectors) != shard.checksum:
        return "keys or vectors differ from the shard's own checksum"
    if not np.isfinite(shard.vectors).all():
        return "contains NaN or infinite values"
    return None


@dataclass
class StoreInfo:
    root: str
    bytes: int
    shards: int
    vectors: int
    models: list[dict] = field(default_factory=list)


class _Database:
    """sqlite3 connection whose failures are one-line embedkit errors naming the cache."""

    def __init__(self, path: Path):
        self.path = path
        self._db = self._call(sqlite3.connect, str(path), timeout=60, isolation_level=None,
                              check_same_thread=False)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise _sqlite_error(self.path, exc) from None

    def execute(self, *args):
        return self._call(self._db.execute, *args)

    def executemany(self, *args):
        return self._call(self._db.executemany, *args)

    def use_wal(self, patience_s: float = 60.0):
        """Switch to write-ahead logging.  The switch needs the file to itself, and SQLite
        answers "database is locked" at once rather than wait (its busy timeout does not apply),
        so processes opening a new cache together retry here."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.Error as exc:
                busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not busy:
                    raise _sqlite_error(self.path, exc) from None
                if time.monotonic() > deadline:
                    raise CacheUnavailable(
                        f"{self.path}: another process has held the cache index for "
                        f"{patience_s:.0f} s; wait for it to finish, or pick another location "
                        "with --cache or EMBEDKIT_HOME") from None
                time.sleep(0.01 + 0.04 * random.random())

    def close(self):
        self._db.close()


def _sqlite_error(path: Path, exc: sqlite3.Error) -> Exception:
    text = str(exc)
    damaged = isinstance(exc, sqlite3.DatabaseError) and any(
        s in text for s in ("not a database", "malformed", "corrupt"))
    if damaged:
        return StoreError(f"{path}: the cache index is damaged ({text}); delete {path.name} "
                          "and run: embedkit cache verify --repair (it is rebuilt from the shards)")
    return CacheUnavailable(f"{path}: cache database error ({text}); check the folder's free "
                            "space and permissions, or pick another location with --cache or "
                            "EMBEDKIT_HOME")


class Store:
    """Open (creating if needed) the cache at `root`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.shard_dir = self.root / "shards"
        try:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheUnavailable(f"cannot open the cache at {self.root}: {exc.strerror or exc}; "
                                   "pick another location with --cache or EMBEDKIT_HOME") from None
        self._db = _Database(self.root / "index.sqlite")
        self._db.use_wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        self._remove_stray_temp_files()
        self.absorb()

    def _migrate(self):
        """Bring the index to SCHEMA_VERSION.  The version is read again and the tables created
        inside one write transaction: two processes opening a new cache at once would otherwise
        both see version 0, and the second would drop the tables the first was already using."""
        if self._schema_ready():
            return
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                # index format 1 keyed files on the path as typed and kept no shard checksums:
                # drop the index (a cache) and rebuild it from the shards, checked on absorb
                for table in ("vectors", "shards", "file_hashes", "file_identity"):
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in _STATEMENTS:
                self._db.execute(statement)

    def _schema_ready(self) -> bool:
        if self._db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        names = {r[0] for r in
                 self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _TABLES <= names

    def close(self):
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _sibling(self) -> "Store":
        """The same cache through a connection of its own, for a publishing thread (one SQLite
        connection is never shared between threads)."""
        other = object.__new__(Store)
        other.root, other.shard_dir = self.root, self.shard_dir
        other._db = _Database(self.root / "index.sqlite")
        other._db.execute("PRAGMA synchronous=NORMAL")
        return other

    # -- housekeeping -----------------------------------------------------------------------
    def _remove_stray_temp_files(self):
        """Remove the temporary shard files of writers that died.  A file names its writer's
        node and process id (`.tmp-<node>-<pid>-...`): on this node a dead process id settles
        it; another node's file (a cache on shared storage) is left alone unless it is older
        than `STALE_TEMP_S`, since that process cannot be asked from here."""
        now = time.time()
        for tmp in self.shard_dir.glob(f"{TMP_PREFIX}*"):
            host, pid = _temp_writer(tmp.name)
            if host not in (None, _HOST):
                try:
                    stale = now - tmp.stat().st_mtime > STALE_TEMP_S
                except OSError:
                    continue
                if stale:
                    tmp.unlink(missing_ok=True)
            elif pid != os.getpid() and not _pid_alive(pid):
                tmp.unlink(missing_ok=True)

    def _shard_files(self) -> dict[str, Path]:
        return {p.name: p for p in self.shard_dir.glob(f"*{SHARD_SUFFIX}")
                if not p.name.startswith(TMP_PREFIX)}

    def absorb(self) -> int:
        """Index any shard on disk that the index does not know (after a crash, or written by
        another engine such as Ray), once its content matches its own checksum.  Returns the
        number of shards absorbed."""
        known = {r[0] for r in self._db.execute("SELECT name FROM shards")}
        absorbed = 0
        for name, path in sorted(self._shard_files().items()):
            if name in known:
                continue
            try:
                data = path.read_bytes()
                shard = read_shard(path)
            except Exception:
                continue  # unreadable: reported by verify, never indexed
            if shard_problem(shard) is not None:
                continue  # reported by verify, never indexed
            self._index_shard(name, shard.fingerprint, shard.contents, shard.vectors.shape[1],
                              hashlib.sha256(data).hexdigest())
            absorbed += 1
        return absorbed

    def _index_shard(self, name: str, fingerprint: str, contents: list[str], dim: int,
                     sha256: str, replace: bool = False):
        """Index a shard's rows.  `replace` (a freshly computed shard) repoints keys whose old
        shard is damaged; absorbing a shard found on disk never overrides what is indexed."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO shards VALUES (?, ?, ?, ?, ?, ?)",
                             (name, fingerprint, dim, len(contents), time.time(), sha256))
            self._db.executemany(
                f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO vectors VALUES (?, ?, ?, ?)",
                ((fingerprint, c, name, i) for i, c in enumerate(contents)))
            fault_point("index-transaction")

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- file identity (stat cache) ---------------------------------------------------------
    def file_hashes(self, paths: list[str]) -> dict[str, str | Exception]:
        """sha256 of each file, re-hashing only files whose identity (real path, device, inode,
        size, mtime_ns, ctime_ns) changed.  A file that cannot be read maps to an OSError."""
        out: dict[str, str | Exception] = {}
        real: dict[str, bytes] = {}
        for path in paths:
            try:
                real[path] = os.fsencode(os.path.realpath(path))
            except (OSError, ValueError) as exc:
                out[path] = exc if isinstance(exc, OSError) else OSError(str(exc))
        known = {}
        keys = list(dict.fromkeys(real.values()))
        for chunk in _chunks(keys, 500):
            q = (f"SELECT path, dev, ino, size, mtime_ns, ctime_ns, sha256 FROM file_identity "
                 f"WHERE path IN ({_marks(chunk)})")
            known.update({r[0]: (tuple(r[1:6]), r[6]) for r in self._db.execute(q, chunk)})
        todo = []
        for path, key in real.items():
            try:
                st = os.stat(key)
                if not stat_module.S_ISREG(st.st_mode):
                    raise IsADirectoryError(21, "not a regular file", path)
                hit = known.get(key)
                if hit and hit[0] == _identity(st):
                    out[path] = hit[1]
                else:
                    todo.append((path, key, st))
            except OSError as exc:
                out[path] = exc
        fresh = []
        # hashing reads and digests without the GIL: a few threads keep the disk busy
        workers = min(8, available_cores(), len(todo)) or 1
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for path, result, remember in pool.map(lambda job: _hash_checked(*job), todo):
                out[path] = result
                if remember:
                    fresh.append(remember)
        if fresh:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO file_identity VALUES (?, ?, ?, ?, ?, ?, ?)", fresh)
                fault_point("file-identity")
        return out

    def source_paths(self, sha256s: list[str]) -> dict[str, str]:
        """A file last seen with each content hash (for `verify --deep`)."""
        out = {}
        for chunk in _chunks(list(dict.fromkeys(sha256s)), 500):
            q = f"SELECT sha256, path FROM file_identity WHERE sha256 IN ({_marks(chunk)})"
            out.update({r[0]: os.fsdecode(r[1]) for r in self._db.execute(q, chunk)})
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

    def _checksums(self, names) -> dict[str, str]:
        out = {}
        for chunk in _chunks(list(names), 500):
            q = f"SELECT name, sha256 FROM shards WHERE name IN ({_marks(chunk)})"
            out.update(dict(self._db.execute(q, chunk).fetchall()))
        return out

    def get_many(self, fingerprint: str, contents: list[str]) -> dict[str, np.ndarray]:
        """content -> vector for the keys present in the cache.  A shard that is missing,
        unreadable or whose bytes differ from its recorded checksum is a miss: its items are
        recomputed, and the fresh shard takes their keys."""
        by_shard = defaultdict(list)
        for content, (shard, row) in self.lookup(fingerprint, contents).items():
            by_shard[shard].append((content, row))
        checksums = self._checksums(by_shard)
        out = {}
        for shard, rows in by_shard.items():
            try:
                vectors = read_shard(self.shard_dir / shard, checksums[shard]).vectors
            except Exception:
                continue
            for content, row in rows:
                if row < len(vectors):
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

    def publish(self, fingerprint: str, contents, ids, vectors, sources=None) -> str:
        """Write one shard and index it; returns the shard name."""
        name = f"{fingerprint[:16]}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
        sha = write_shard(self.shard_dir / name, fingerprint, contents, ids, vectors, sources)
        self._index_shard(name, fingerprint, list(contents), np.asarray(vectors).shape[1], sha,
                          replace=True)
        return name

    # -- maintenance ------------------------------------------------------------------------
    def info(self) -> StoreInfo:
        """Sizes and per-model counts; the header and the per-model rows count the same things
        (vectors = indexed keys, shards = indexed shard files)."""
        size = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        vectors = dict(self._db.execute(
            "SELECT fingerprint, COUNT(*) FROM vectors GROUP BY fingerprint").fetchall())
        models = []
        rows = self._db.execute(
            "SELECT s.fingerprint, COUNT(*), MAX(s.dim), m.description "
            "FROM shards s LEFT JOIN models m ON m.fingerprint = s.fingerprint "
            "GROUP BY s.fingerprint ORDER BY s.fingerprint")
        for fp, nshards, dim, desc in rows:
            d = json.loads(desc) if desc else {}
            models.append({"fingerprint": fp, "shards": nshards, "vectors": vectors.get(fp, 0),
                           "dim": dim, **{k: d.get(k) for k in ("name", "layer", "pool")}})
        nshards = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        return StoreInfo(str(self.root), size, nshards, sum(vectors.values()), models)

    def verify(self, repair: bool = False) -> list[str]:
        """Problems found (empty list = healthy): every indexed shard is re-hashed against the
        checksum recorded when it was published and decoded, and every runtime export against
        its record (`artifact_records`).  `repair` quarantines damaged shards (moved to
        shards/damaged/, their keys dropped: a rerun recomputes exactly those items), re-indexes
        the rest, and removes damaged exports (the next run exports them again)."""
        return (self._verify_shards(repair)
                + recorded_problems(self.root / RUNTIME_EXPORTS, repair=repair))

    def _verify_shards(self, repair: bool) -> list[str]:
        problems, damaged = [], []
        self.absorb()  # a valid shard published but not yet indexed (a crash, a writer) is fine
        files = self._shard_files()
        shards = {r[0]: r[1:] for r in self._db.execute(
            "SELECT name, fingerprint, dim, rows, sha256 FROM shards")}
        missing = []
        for name, (fp, dim, nrows, sha) in shards.items():
            if name not in files:
                missing.append(name)
                continue
            try:
                shard = read_shard(files[name], sha)
            except FileNotFoundError:
                missing.append(name)
                continue
            except StoreError:
                problems.append(f"{name}: content changed since it was published "
                                "(checksum mismatch)")
                damaged.append(name)
                continue
            except Exception as exc:
                problems.append(f"{name}: unreadable ({type(exc).__name__})")
                damaged.append(name)
                continue
            why = shard_problem(shard)
            if shard.fingerprint != fp or shard.vectors.shape != (nrows, dim):
                why = "shape or fingerprint differs from the index"
            if why:
                problems.append(f"{name}: {why}")
                damaged.append(name)
        # a concurrent compaction commits its index change before it deletes the old files:
        # a file is only missing if the index still names it now
        for name in self._still_indexed(missing):
            problems.append(f"{name}: indexed but missing on disk")
            damaged.append(name)
        indexed = {r[0] for r in self._db.execute("SELECT name FROM shards")}
        for name in sorted(set(files) - indexed):  # valid ones are being published right now
            try:
                why = shard_problem(read_shard(files[name]))
            except FileNotFoundError:
                continue
            except Exception as exc:
                why = f"unreadable ({type(exc).__name__})"
            if why:
                problems.append(f"{name}: on disk but not indexed: {why}")
                damaged.append(name)
        dangling = self._db.execute(
            "SELECT COUNT(*) FROM vectors v LEFT JOIN shards s ON s.name = v.shard "
            "WHERE s.name IS NULL OR v.row >= s.rows").fetchone()[0]
        if dangling:
            problems.append(f"{dangling} index entries point at no shard row")
        if repair and problems:
            self._quarantine(damaged)
            with self._transaction():
                self._db.execute(
                    "DELETE FROM vectors WHERE NOT EXISTS (SELECT 1 FROM shards s WHERE "
                    "s.name = vectors.shard AND vectors.row < s.rows)")
        return problems

    def _still_indexed(self, names) -> list[str]:
        return [r[0] for chunk in _chunks(list(names), 500) for r in self._db.execute(
            f"SELECT name FROM shards WHERE name IN ({_marks(chunk)})", chunk)]

    def _quarantine(self, names):
        """Move shards aside and forget their keys (the next run recomputes those items)."""
        bad = self.shard_dir / QUARANTINE
        for name in names:
            path = self.shard_dir / name
            if path.exists():
                bad.mkdir(exist_ok=True)
                os.replace(path, bad / name)
        with self._transaction():
            self._db.executemany("DELETE FROM vectors WHERE shard = ?", ((n,) for n in names))
            self._db.executemany("DELETE FROM shards WHERE name = ?", ((n,) for n in names))

    def sample(self, n: int, seed: int = 0) -> list[tuple[str, str, str, int]]:
        """Up to `n` random indexed keys as (fingerprint, content, shard, row)."""
        rows = self._db.execute("SELECT fingerprint, content, shard, row FROM vectors").fetchall()
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False) if rows else []
        return [rows[i] for i in sorted(pick)]

    def shard(self, name: str) -> Shard:
        """One indexed shard, checked against its recorded checksum."""
        return read_shard(self.shard_dir / name, self._checksums([name]).get(name))

    def description(self, fingerprint: str) -> dict:
        """What `writer(description=...)` recorded for a fingerprint ({} if nothing)."""
        row = self._db.execute("SELECT description FROM models WHERE fingerprint = ?",
                               (fingerprint,)).fetchone()
        return json.loads(row[0]) if row else {}

    def compact(self, target_rows: int = 65536) -> tuple[int, int]:
        """Merge the shards of each fingerprint into as few as possible (up to `target_rows`
        each).  Returns (shards before, shards after).  Safe beside concurrent writers: only
        the rows the index points at are copied, and the index is repointed in one transaction
        that first checks the merged shards are still indexed (else the merge is dropped)."""
        before = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        groups = defaultdict(list)
        for name, fp, nrows, sha in self._db.execute(
                "SELECT name, fingerprint, rows, sha256 FROM shards ORDER BY created"):
            groups[fp].append((name, nrows, sha))
        for fp, shards in groups.items():
            small = [(n, sha) for n, rows, sha in shards if rows < target_rows]
            if len(small) < 2:
                continue
            live = {}  # content -> (id, vector, source), only rows the index still points at
            for name, sha in small:
                try:
                    shard = read_shard(self.shard_dir / name, sha)
                except Exception:
                    raise StoreError(f"shard {name} is unreadable or changed; run: embedkit cache "
                                     "verify --repair, then compact again") from None
                pointed = {r[0]: r[1] for r in self._db.execute(
                    "SELECT content, row FROM vectors WHERE shard = ?", (name,))}
                for row, (c, i, v, src) in enumerate(zip(shard.contents, shard.ids,
                                                         shard.vectors, shard.sources)):
                    if pointed.get(c) == row and c not in live:
                        live[c] = (i, v, src)
            items = list(live.items())
            written = []
            for chunk in _chunks(items, target_rows):
                name = f"{fp[:16]}-{uuid.uuid4().hex}{SHARD_SUFFIX}"
                sha = write_shard(self.shard_dir / name, fp, [c for c, _ in chunk],
                                  [i for _, (i, _, _) in chunk],
                                  np.stack([v for _, (_, v, _) in chunk]),
                                  [s for _, (_, _, s) in chunk])
                written.append((name, chunk, sha))
            fault_point("compact-written")
            names = [n for n, _ in small]
            with self._transaction():
                still = self._db.execute(
                    f"SELECT COUNT(*) FROM shards WHERE name IN ({_marks(names)})",
                    names).fetchone()[0]
                if still == len(names):
                    for name, chunk, sha in written:
                        # OR REPLACE: another process opening the store may have absorbed it
                        self._db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?)",
                                         (name, fp, len(chunk[0][1][1]), len(chunk), time.time(),
                                          sha))
                        # repoint only keys still in the merged shards (a writer may have
                        # repointed one to a fresh shard meanwhile)
                        self._db.executemany(
                            f"UPDATE vectors SET shard = ?, row = ? WHERE fingerprint = ? AND "
                            f"content = ? AND shard IN ({_marks(names)})",
                            ((name, r, fp, c, *names) for r, (c, _) in enumerate(chunk)))
                    self._db.executemany("DELETE FROM shards WHERE name = ?",
                                         ((n,) for n in names))
            fault_point("compact-committed")
            drop = names if still == len(names) else [n for n, _, _ in written]
            for name in drop:
                (self.shard_dir / name).unlink(missing_ok=True)
        after = self._db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
        return before, after

    def fingerprints(self) -> list[str]:
        """The model fingerprints that have vectors here (one index query, no file walk)."""
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT fingerprint FROM shards ORDER BY fingerprint")]

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
                for table in ("vectors", "shards", "models", "file_identity"):
                    self._db.execute(f"DELETE FROM {table}")
        for name in names:
            (self.shard_dir / name).unlink(missing_ok=True)
        return len(names)


class ShardWriter:
    """Buffers vectors and publishes a shard every `flush_rows` rows and on close.

    Publishing (Parquet encoding, checksum, fsync, index) runs in a background thread while the
    next rows are computed; one shard at most is in flight, so memory stays bounded and shards
    are published in order.  A failure surfaces at the next flush or at close."""

    def __init__(self, store: Store, fingerprint: str, flush_rows: int):
        self.fingerprint, self.flush_rows = fingerprint, flush_rows
        self.store = store._sibling()  # used by the publishing thread alone
        self._contents, self._ids, self._vectors, self._sources = [], [], [], []
        self.written = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embedkit-shard")
        self._in_flight: concurrent.futures.Future | None = None

    def add(self, contents, ids, vectors: np.ndarray, sources=None):
        self._contents.extend(contents)
        self._ids.extend(ids)
        self._sources.extend(sources if sources is not None else [None] * len(contents))
        self._vectors.append(np.asarray(vectors, dtype=np.float32))
        if len(self._contents) >= self.flush_rows:
            self.flush()

    def flush(self):
        """Hand the buffered rows to the publishing thread (after the shard before them)."""
        self.sync()
        if not self._contents:
            return
        self._in_flight = self._pool.submit(
            self.store.publish, self.fingerprint, self._contents, self._ids,
            np.concatenate(self._vectors), self._sources)
        self.written += len(self._contents)
        self._contents, self._ids, self._vectors, self._sources = [], [], [], []

    def sync(self):
        """Wait until every flushed row is published (and re-raise a failed publish)."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()  # re-raises a failed publish here

    def close(self):
        try:
            self.flush()
            self.sync()
        finally:
            self._pool.shutdown(wait=True)
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hash_checked(path, key, st):
    """(path, sha256 or OSError, the file-identity row to remember or None) for one file: a file
    that changed while it was read is hashed again and not remembered, and so is one modified
    within the racy window."""
    try:
        identity = _identity(st)
        started = time.time_ns()
        digest = sha256_file(key)
        if _identity(os.stat(key)) != identity:
            return path, sha256_file(key), None
        racy = started - max(st.st_mtime_ns, st.st_ctime_ns) <= RACY_WINDOW_NS
        return path, digest, None if racy else (key, *identity, digest)
    except OSError as exc:
        return path, exc, None


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(chunk) -> str:
    return ",".join("?" * len(chunk))
