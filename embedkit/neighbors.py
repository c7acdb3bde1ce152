"""The names `embedkit.neighbors` offered before it was split by layer, kept importable.

Code in this repository imports from the modules themselves:
- `vector_search`: cosine, unit rows, exact blocked top-k, faiss IVF / HNSW indexes, recall@k;
- `vector_space`: `VectorSpace` (keys and vectors; neighbours and analogies by key or vector);
- `query_resolution`: what a word, item id, file, raw vector or analogy expression means
  against an EmbeddingSet or a backbone;
- `wordvector_evaluation`: analogy accuracy and word-pair correlations, as gensim evaluates.
"""

from __future__ import annotations

from . import query_resolution, vector_search, vector_space, wordvector_evaluation
from .query_resolution import *  # noqa: F401,F403
from .vector_search import *  # noqa: F401,F403
from .vector_space import *  # noqa: F401,F403
from .wordvector_evaluation import *  # noqa: F401,F403

__all__ = [*vector_search.__all__, *vector_space.__all__, *query_resolution.__all__,
           *wordvector_evaluation.__all__]
