"""Records of the files embedkit writes into its cache and reads back later (runtime exports).

Such a file is run or loaded, not just read, so the rule is the store's rule for shards: the
sha256 of its bytes is recorded when it is written, and checked before every use.  The record
is a small JSON file beside it (`<file>.record.json`: the file's name, its sha256, and what it
was made from), written atomically after the file, so a reader needs nothing but the folder.  A
file whose record is missing, unreadable, names another file or another origin, or whose bytes
hash to something else is not the file that was written: the caller makes it again.

Against what: files damaged on disk, truncated by a full disk, copied over from another model,
or edited by hand.  Not against someone who rewrites the record as well (README, Trust model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from . import schema
from .files import atomic_write, sha256_file

__all__ = ["RECORD_SUFFIX", "RUNTIME_EXPORTS", "record_problem", "recorded_problems",
           "remove_recorded", "write_recorded"]

RECORD_SUFFIX = ".record.json"
#: Why a file with no record is not used: one made before records were kept, or whose record
#: was lost; it is made again when next needed, so `recorded_problems` does not count it.
NO_RECORD = "no record of its checksum beside it"
#: What a record holds (embedkit.schema): the file's name, its sha256, what it was made from.
RECORD_FIELDS = {"file": schema.text(), "sha256": schema.SHA256, "made_from": schema.OBJECT}
#: The cache's folder of runtime exports (`<cache>/runtimes`), each file recorded beside it.
RUNTIME_EXPORTS = "runtimes"


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def write_recorded(path: Path, write: Callable[[Path], None], made_from: dict) -> Path:
    """Write a file with `write` (given a temporary path; renamed into place atomically), then
    its record: the sha256 of the bytes written and `made_from` (JSON values)."""
    written = {}

    def write_and_hash(tmp: Path):
        write(tmp)
        written["sha256"] = sha256_file(tmp)

    atomic_write(path, write_and_hash)
    atomic_write(_record_path(path), json.dumps(
        {"file": path.name, "sha256": written["sha256"], "made_from": made_from},
        sort_keys=True, indent=1))
    return path


def record_problem(path: Path, made_from: dict | None = None) -> str | None:
    """Why the file at `path` must not be used (None: its bytes are the ones recorded when it
    was written, and, when `made_from` is given, it was made from that).  Reads the whole file
    once; a file that cannot be read is a problem too, never an exception."""
    try:
        record = json.loads(_record_path(path).read_text())
    except FileNotFoundError:
        return NO_RECORD
    except (OSError, ValueError) as exc:
        return f"its record is unreadable ({type(exc).__name__})"
    if schema.misfit(record, RECORD_FIELDS) or record["file"] != path.name:
        return "its record describes another file"
    if made_from is not None and record["made_from"] != made_from:
        return "its record says it was made from another model"
    try:
        if sha256_file(path) != record["sha256"]:
            return "its bytes differ from the checksum recorded when it was written"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return None


def recorded_problems(folder: Path, repair: bool = False) -> list[str]:
    """A line per file in `folder` that fails its record (`record_problem`); `repair` removes
    those files and their records, so that they are made again when next needed.  Hidden
    files (temporary files of writers) and the records themselves are not checked, and a file
    with no record is no problem (it is never used as it is: made again when needed), though
    `repair` removes it too."""
    problems = []
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    for path in files:
        if path.name.startswith(".") or path.name.endswith(RECORD_SUFFIX) or not path.is_file():
            continue
        why = record_problem(path)
        if why is not None and why != NO_RECORD:
            problems.append(f"{folder.name}/{path.name}: {why}")
        if why is not None and repair:
            remove_recorded(path)
    return problems


def remove_recorded(path: Path):
    """Remove a file and its record (a missing one is fine)."""
    path.unlink(missing_ok=True)
    _record_path(path).unlink(missing_ok=True)
