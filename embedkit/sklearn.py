"""scikit-learn building blocks: `EmbeddingTransformer` turns images or texts into vectors.

    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC
    from embedkit.sklearn import EmbeddingTransformer

    pipe = make_pipeline(EmbeddingTransformer(model="efficientnet_lite0"), SVC())
    search = GridSearchCV(pipe, {"embeddingtransformer__layer": ["pre_logits", "blocks.5"],
                                 "svc__C": [0.1, 1, 10]}, cv=3).fit(paths, labels)

Input is a 1-D sequence (list, tuple, 1-D array, pandas Series or one-column DataFrame, Hugging
Face `datasets` column) of image file paths, of texts, or of in-memory images (PIL, NumPy HWC
uint8, torch CHW; see `embedkit.inputs.from_list`); output is float32 [n, dim], one row per
input in input order.  Vectors go through embedkit's cache, so the refits of a grid search read
them back instead of recomputing them.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .errors import UsageError

__all__ = ["as_dataset", "EmbeddingTransformer"]


def as_dataset(X):
    """A 1-D sequence of paths, texts or in-memory images as a Dataset (`inputs.from_list`);
    anything else is refused naming what was given."""
    from .inputs import from_list

    try:
        return from_list(X)
    except UsageError as exc:
        raise UsageError(f"EmbeddingTransformer: {exc}") from None


class EmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Frozen backbone embeddings as a scikit-learn transformer.

    Parameters mirror `embedkit.extract`: model (None = the default model of the input's
    modality), layer, pool, normalize, weights, cache (folder or None for the default), batch_size,
    device.  `fit` only resolves the backbone (cheap: no weights are read) and records its
    fingerprint; weights load lazily on the first `transform`.  Pickles without any torch module
    (the backbone is rebuilt on first use, and must give the same fingerprint).
    """

    def __init__(self, model=None, layer=None, pool=None, normalize=False, weights=None,
                 cache=None, batch_size=32, device="auto"):
        self.model = model
        self.layer = layer
        self.pool = pool
        self.normalize = normalize
        self.weights = weights
        self.cache = cache
        self.batch_size = batch_size
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    def _build(self, modality: str):
        from .registry import chosen_model, create_backbone

        return create_backbone(chosen_model(self.model, modality), layer=self.layer,
                               pool=self.pool, normalize=self.normalize or None,
                               weights=self.weights)

    def fit(self, X, y=None):
        modality = as_dataset(X).modality
        backbone = self._build(modality)
        self._backbone = backbone
        self.modality_ = backbone.modality
        self.model_name_ = backbone.name
        self.fingerprint_ = backbone.fingerprint()
        self.dim_ = int(backbone.dim)
        return self

    @property
    def backbone_(self):
        """The fitted backbone, rebuilt (and checked) after unpickling."""
        check_is_fitted(self, "fingerprint_")
        backbone = self.__dict__.get("_backbone")
        if backbone is None:
            backbone = self._build(self.modality_)
            if backbone.fingerprint() != self.fingerprint_:
                from .errors import BackboneMismatch

                raise BackboneMismatch(
                    f"{self.model_name_} rebuilt here has fingerprint "
                    f"{backbone.fingerprint()[:12]}, not {self.fingerprint_[:12]} as when fitted "
                    "(other weights or embedkit version); fit it again")
            self._backbone = backbone
        return backbone

    def transform(self, X):
        from .extract import extract

        check_is_fitted(self, "fingerprint_")
        es = extract(as_dataset(X), self.backbone_, cache=self.cache, batch_size=self.batch_size,
                     device=self.device, progress=False, strict=True)
        return es.vectors

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "dim_")
        return np.asarray([f"embedding{i}" for i in range(self.dim_)], dtype=object)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_backbone", None)  # no torch module in the pickle; rebuilt on first use
        return state
