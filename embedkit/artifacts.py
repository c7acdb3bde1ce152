"""Trained classifiers on disk: skops files, never raw pickle.

A file is written with `skops.io.dump` and read back with `skops.io.load` only after
`skops.io.get_untrusted_types` has listed what the file would construct and every entry is on
the explicit allow-list below (the types our own heads are made of, beyond those skops already
trusts).  A file that is not a skops archive, was altered to construct anything else, or is a
skops file of some other program is refused with an `ArtifactError`, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ArtifactError, NotFoundError
from .files import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "TRUSTED_TYPES", "load_artifact", "save_artifact"]

FORMAT = "embedkit.classifier"
FORMAT_VERSION = 1

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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: sio.dump(
        {"format": FORMAT, "format_version": FORMAT_VERSION, **content}, tmp))


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
