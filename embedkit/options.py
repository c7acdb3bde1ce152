"""Allowed values, declared once.

In the spirit of scikit-learn's `_param_validation`: each option's allowed values live in one
declaration, the error message is generated from it, and the CLI builds its `click.Choice`s from
the same declaration, so the command line and the Python API cannot disagree.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass

from .errors import UsageError

__all__ = ["Options", "at_least", "POOLINGS", "INTERPOLATIONS", "TEXT_POOLINGS", "PRECISIONS",
           "RUNTIMES", "DECODES", "ENGINES", "MODALITIES", "SCALERS", "RESAMPLING", "AUGMENT_MODES",
           "PROJECTIONS", "INDEXES", "ANALOGY_METHODS", "CLASSIFIER_NAMES", "OPTIMIZERS"]


@dataclass(frozen=True)
class Options:
    """A closed set of string values for one option."""

    what: str  # how messages name the option: "pooling", "precision", ...
    values: tuple[str, ...]

    def check(self, value, where: str = "") -> str:
        """`value` if allowed, else UsageError: "unknown <what> 'x': choose a, b or c"."""
        if value in self.values:
            return value
        close = difflib.get_close_matches(str(value), self.values, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}unknown {self.what} '{value}': choose {self.listed()}{hint}")

    def listed(self) -> str:
        head, last = self.values[:-1], self.values[-1]
        return f"{', '.join(head)} or {last}" if head else last

    def __iter__(self):
        return iter(self.values)


def at_least(what: str, value, low: int):
    """`value` if it is an integer >= low, else UsageError naming the option."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise UsageError(f"{what} must be a whole number of at least {low}, not {value!r}")
    return value


#: Pooling of image block layers (conv maps [c, h, w], transformer tokens).
POOLINGS = Options("pooling", ("avg", "max", "gem", "flatten"))
#: Resampling filters of the short-side resize (PIL's, and torch's on the device).
INTERPOLATIONS = Options("interpolation", ("bilinear", "bicubic", "nearest"))
#: Pooling of a text's word vectors.
TEXT_POOLINGS = Options("text pooling", ("mean", "sif"))
PRECISIONS = Options("precision", ("auto", "fp32", "bf16", "fp16"))
RUNTIMES = Options("runtime", ("torch", "onnx", "openvino"))
DECODES = Options("decode", ("auto", "cpu", "device"))
#: Where extraction runs: this process, or Ray Data (embedkit.distributed).
ENGINES = Options("engine", ("local", "ray"))
MODALITIES = Options("modality", ("image", "text"))
SCALERS = Options("scaling", ("standard", "l2"))
RESAMPLING = Options("resampling", ("over", "under"))
AUGMENT_MODES = Options("augmentation mode", ("rows", "average"))
PROJECTIONS = Options("projection", ("pca", "tsne", "umap"))
INDEXES = Options("index", ("exact", "ivf", "hnsw"))
#: Optimisers of `embedkit finetune`.
OPTIMIZERS = Options("optimizer", ("adamw", "sgd"))
#: The light classifiers of embedkit.classify (declared here so the CLI lists them without
#: importing scikit-learn; classify.CLASSIFIERS holds their grids, one per name).
CLASSIFIER_NAMES = Options("classifier", ("svm-linear", "svm-rbf", "logreg", "knn", "ridge",
                                          "random-forest", "mlp"))
ANALOGY_METHODS = Options("analogy method", ("add", "mul"))
