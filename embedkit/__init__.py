"""embedkit: frozen embeddings from pretrained backbones, cached, compared and classified."""

__version__ = "0.1.0"
__all__ = ["EmbedkitError", "EmbeddingSet", "Store", "create_backbone", "encode", "extract",
           "finetune", "list_models", "load_embeddings", "study", "zero_shot"]

from .errors import EmbedkitError  # noqa: E402
from .registry import create_backbone, list_models  # noqa: E402
from .embeddings import EmbeddingSet, load_embeddings  # noqa: E402
from .extract import encode, extract  # noqa: E402
from .finetune import finetune  # noqa: E402
from .store import Store  # noqa: E402
from .study import study  # noqa: E402
from .zero_shot import zero_shot  # noqa: E402
