"""Trained classifiers on disk: skops files, never raw pickle.

A file is written with `skops.io.dump` and read back with `skops.io.load` only after
`skops.io.get_untrusted_types` has listed what the file would construct and every entry is on
the explicit allow-list below (the types our own heads are made of, beyond those skops already
trusts).  A file that is not a skops archive, was altered to construct anything else, or is a
skops file of some other program is refused with an `ArtifactError`, never a traceback.

Like every artifact embedkit reads back, the file carries the checksum of what was written
(README, Trust model): a last archive member holds the sha256 of every other member's name and
bytes, checked before anything is loaded, so a file edited within the allowed types (other
coefficients, another class list) is refused too rather than predicting something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from .errors import ArtifactError, NotFoundError
from .files import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "TRUSTED_TYPES", "load_artifact", "save_artifact"]

FORMAT = "embedkit.classifier"
FORMAT_VERSION = 2  # 2: sealed with CHECKSUM_MEMBER
#: The archive member that holds the sha256 of all the others (`_content_sha256`).
CHECKSUM_MEMBER = "embedkit-sha256.json"

#: Types a classifier artifact may construct beyond skops' own default trust (found with
#: `skops.io.get_untrusted_types` on heads of every classifier embedkit trains).
TRUSTED_TYPES = frozenset({
    "embedkit.classify.Resampled",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})


def save_artifact(content: dict, path: str | os.PathLike) -> Path:
    """Write `content` (a dict: format fields added here) as a skops file, atomically."""
    import skops.io as sio

    def write(tmp):
        sio.dump({"format": FORMAT, "format_version": FORMAT_VERSION, **content}, tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(CHECKSUM_MEMBER, json.dumps({"sha256": _content_sha256(archive)}))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


def _content_sha256(archive: zipfile.ZipFile) -> str:
    """sha256 of every member but the checksum's own, each as its name, length and bytes, in
    name order."""
    digest = hashlib.sha256()
    for name in sorted(n for n in archive.namelist() if n != CHECKSUM_MEMBER):
        data = archive.read(name)
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _check_sealed(path: Path):
    """Refuse an archive whose members are not those written (`save_artifact`'s checksum)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            recorded = json.loads(archive.read(CHECKSUM_MEMBER)) if CHECKSUM_MEMBER in names \
                else None
            intact = (len(set(names)) == len(names) and isinstance(recorded, dict)
                      and recorded.get("sha256") == _content_sha256(archive))
    except Exception as exc:  # noqa: BLE001 - a damaged member raises its codec's own error
        raise ArtifactError(f"{path}: damaged model file ({type(exc).__name__}); train it "
                            "again") from None
    if recorded is None:
        raise ArtifactError(f"{path}: not an embedkit classifier of this version (it holds no "
                            "checksum: made by another program or an older embedkit, or "
                            "edited); train it again")
    if not intact:
        raise ArtifactError(f"{path}: refusing to load: its content is not what embedkit "
                            "wrote (the checksum it was saved with differs); it was edited "
                            "or damaged: train it again")


def load_artifact(path: str | os.PathLike) -> dict:
    """Read an artifact written by `save_artifact`, refusing anything it does not trust."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such model file (train one with: embedkit train ...)")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # not a zip, no schema, unreadable schema
        raise ArtifactError(f"{path}: not a skops model file ({type(exc).__name__}); "
                            "embedkit only loads models saved by embedkit train") from None
    foreign = sorted(set(untrusted) - TRUSTED_TYPES)
    if foreign:
        raise ArtifactError(f"{path}: refusing to load: the file would construct types outside "
                            f"embedkit's allow-list ({', '.join(foreign)}); it was altered or "
                            "made by another program")
    _check_sealed(path)
    try:
        content = sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise ArtifactError(f"{path}: damaged model file ({type(exc).__name__}: {exc}); "
                            "train it again") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ArtifactError(f"{path}: a skops file, but not an embedkit classifier "
                            "(made by another program?)")
    if content.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: embedkit classifier format "
                            f"{content.get('format_version')}, this embedkit reads "
                            f"{FORMAT_VERSION}; train it again")
    return content
