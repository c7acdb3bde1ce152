"""File-system helpers every part shares: atomic writes, a folder walk that survives hostile
trees, and printable names for paths that are not valid UTF-8.

Why one module: an atomic write (temporary name in the same folder, fsync, rename, fsync the
folder) is easy to get subtly wrong, and a walk must neither recurse (a folder nested 1,000 deep
would raise RecursionError) nor loop (a symbolic link to a parent), nor hide what it could not
read: each problem is reported with the path it concerns.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["atomic_write", "available_cores", "display_name", "first_repeat", "printable",
           "RefusedPickle", "restricted_load", "sha256_file", "walk_files", "WalkEntry",
           "NUMPY_TYPES"]


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Path], None], *,
                 tmp_prefix: str | None = None, before_rename: Callable[[], None] | None = None
                 ) -> Path:
    """Write `data` (bytes, text, or a function that writes a given temporary path) to `path`
    so that readers see either the old file or the whole new one, never a part.

    The temporary file lives beside the target (same file system, so the rename is atomic) and
    is removed if writing fails.  `before_rename` runs between the fsync and the rename (the
    crash-loop harness arms a fault point there).
    """
    path = Path(path)
    prefix = tmp_prefix if tmp_prefix is not None else f".{path.name}.{os.getpid()}-"
    tmp = path.parent / f"{prefix}{uuid.uuid4().hex}{path.suffix or '.tmp'}"
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        try:
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def first_repeat(values) -> tuple[object, int, int] | None:
    """(value, its first position, the position it comes again at) for the first value that
    repeats in `values`, or None when every value is unique."""
    seen: dict = {}
    for position, value in enumerate(values):
        first = seen.setdefault(value, position)
        if first != position:
            return value, first, position
    return None


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes as they are now (read in blocks; never memoised: what an
    integrity check compares)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def display_name(name: str) -> str:
    """A path or name as printable text: bytes that are not UTF-8 (kept by Python as
    surrogate escapes) are shown as \\xNN, so they can be printed, logged and stored."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


#: What a terminal acts on instead of showing: C0 controls but tab and newline (ESC among
#: them, so every ANSI / OSC sequence), DEL, C1 controls, and the bidirectional overrides and
#: isolates that reorder how a line reads ("Trojan Source", Boucher & Anderson 2021).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to show on a terminal: every control character is shown as \\xNN (or
    \\uNNNN), so a name cannot move the cursor, recolour, retitle or rewrite what is shown."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                        else f"\\u{ord(m[0]):04x}", text)


@dataclass(frozen=True)
class WalkEntry:
    """A file found by `walk_files`, or a problem met on the way (`error` set)."""

    path: str  # as found (through the walked root)
    rel: str  # relative to the root, '/'-separated, printable (display_name)
    error: str | None = None
    folder: bool = False  # the problem concerns a folder (unlistable, or a link loop)


def walk_files(root: str | os.PathLike, follow_links: bool = True) -> Iterator[WalkEntry]:
    """Every regular file under `root`, in order of relative path, without recursion, yielded
    as found: the walk holds the folders on its current branch, never the whole tree, so a
    folder of a million files is walked in the memory of its largest folder.

    The order is that of sorting every relative path, because each folder's entries are visited
    sorted with a folder named as `name/` (all of its files share that prefix).  Hidden entries
    (a leading dot) are skipped.  Symbolic links to files are followed; links to folders are
    followed once (a folder already on the current branch is a loop and reported); dangling
    links, links that loop and folders that cannot be listed come back as entries with an
    `error`, so the caller can list them as skipped instead of letting them vanish.
    """
    root = os.fspath(root)
    top = os.stat(root)
    # each stack entry: the sorted entries of a folder still to visit, and its context
    stack = [_listed(root, (), frozenset({(top.st_dev, top.st_ino)}), follow_links)]
    while stack:
        found = next(stack[-1], None)
        if found is None:
            stack.pop()
        elif isinstance(found, WalkEntry):
            yield found
        else:  # a folder to descend into, in its place in the order
            stack.append(_listed(*found, follow_links))


def _listed(folder: str, parts: tuple, ancestors: frozenset, follow_links: bool):
    """The entries of one folder in walk order: WalkEntry for files and problems, and
    (path, parts, ancestors) for the folders to descend into."""
    try:
        with os.scandir(folder) as it:
            names = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        rel = "/".join(parts) or "."
        yield WalkEntry(folder, display_name(rel),
                        f"cannot list folder ({exc.strerror or exc})", folder=True)
        return
    visits = []
    for entry in names:
        rel_parts = (*parts, entry.name)
        rel = display_name("/".join(rel_parts))
        try:
            st = os.stat(entry.path) if follow_links else entry.stat(follow_symlinks=False)
        except OSError as exc:
            if entry.is_symlink():
                why = ("symbolic link loop" if exc.errno == errno.ELOOP else
                       "dangling symbolic link" if exc.errno == errno.ENOENT else
                       f"unreadable link ({exc.strerror})")
                visits.append((rel, WalkEntry(entry.path, rel, why)))
            else:
                visits.append((rel, WalkEntry(entry.path, rel,
                                              f"cannot stat ({exc.strerror or exc})")))
            continue
        if stat.S_ISDIR(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                visits.append((rel, WalkEntry(entry.path, rel, "symbolic link loop (points "
                                              "at a folder above it)", folder=True)))
            else:
                visits.append((rel + "/", (entry.path, rel_parts, ancestors | {ident})))
        elif stat.S_ISREG(st.st_mode):
            visits.append((rel, WalkEntry(entry.path, rel)))
        else:  # reading a FIFO would block forever; sockets and devices are not data
            visits.append((rel, WalkEntry(entry.path, rel, "not a regular file (FIFO, socket "
                                                           "or device)")))
    del names
    visits.sort(key=lambda v: v[0])
    for _, visit in visits:
        yield visit


def available_cores() -> int:
    """CPUs this process may run on (cgroup / taskset aware, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: What a pickle of NumPy arrays needs (old and new module paths of numpy's core).
NUMPY_TYPES = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that names a type outside the allow-list: refused before anything runs (the
    trust model's exit 4), as opposed to a pickle that is merely corrupt (bad input, exit 5)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset, what: str, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed, self.what = allowed, what

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            if module.startswith("numpy.core."):
                module = module.replace("numpy.core.", "numpy._core.")
            return super().find_class(module, name)
        raise RefusedPickle(f"refusing to unpickle {module}.{name}: {self.what}")


def restricted_load(file, allowed: frozenset = NUMPY_TYPES, what: str = "only NumPy arrays are "
                    "allowed", **kwargs):
    """Unpickle from a binary file object admitting only the (module, name) pairs in `allowed`
    (NumPy arrays by default): a pickle that names anything else, code included, is refused
    with `RefusedPickle` (an `pickle.UnpicklingError`) before anything runs."""
    return _RestrictedUnpickler(file, allowed, what, **kwargs).load()
