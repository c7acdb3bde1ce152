"""One error hierarchy; each class carries the CLI exit code documented in the README."""

__all__ = ["ArtifactError", "BackboneMismatch", "BadInputError", "BadWeights",
           "CacheUnavailable", "EmbedkitError", "MissingExtra", "NotFoundError", "PluginError",
           "StoreError", "UntrustedFile", "UsageError", "WeightsUnavailable"]


class EmbedkitError(Exception):
    """Base class: the message is one line that says what went wrong and what to do."""

    exit_code = 1


class CacheUnavailable(EmbedkitError):
    """The cache cannot be opened or written for an operating-system reason (permissions, a
    read-only or full file system, a file-size limit, a disk I/O error): exit 1 like any other
    operating-system error."""

    exit_code = 1


class UsageError(EmbedkitError):
    """A bad option or value (unknown pooling, impossible flatten, wrong file kind)."""

    exit_code = 2


class NotFoundError(EmbedkitError):
    """Unknown model, layer, dataset name, or a path that does not exist."""

    exit_code = 3


class WeightsUnavailable(NotFoundError):
    """The weights of a backbone are not on this machine and cannot be downloaded."""

    exit_code = 4


class BadWeights(WeightsUnavailable):
    """A weights file that exists but cannot be used: truncated, not a checkpoint, or one that
    would need unpickling arbitrary objects (refused, never executed)."""


class UntrustedFile(EmbedkitError):
    """A data file that only unpickling could read (an object array, a pickle under another
    suffix): refused, never executed, with the trust model's exit 4 as for such weights."""

    exit_code = 4


class BadInputError(EmbedkitError):
    """Input that cannot be used: a manifest or text file that cannot be parsed (bad columns,
    a line that is not a JSON object, duplicate ids), a bad item under --strict, or a dataset
    with no usable item."""

    exit_code = 5


class PluginError(EmbedkitError):
    """A plugin that cannot be used: it failed to load, or returned something that is not a
    Backbone."""

    exit_code = 3


class BackboneMismatch(UsageError):
    """Features made by another backbone (or layer, pooling, weights) than a model's."""


class ArtifactError(BadInputError):
    """A file embedkit wrote and reads back (a classifier, a saved search index and its
    sidecar) that is not one, or that was changed since it was written."""


class StoreError(EmbedkitError):
    """The cache's content is damaged: it fails verification, or its index is not readable."""

    exit_code = 6


class MissingExtra(EmbedkitError):
    """An optional dependency is not installed; the message gives the pip line that fixes it."""

    exit_code = 7

    def __init__(self, what: str, extra: str, package: str):
        super().__init__(
            f"{what} needs the optional package '{package}': pip install 'embedkit[{extra}]'"
        )
