"""The query code split by layer: imports point down only, `embedkit.neighbors` still offers
every name it had, and query resolution asks a backbone for its word vocabulary directly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import embedkit
import embedkit.neighbors
from embedkit import query_resolution, vector_search, vector_space, wordvector_evaluation
from embedkit.errors import BadInputError, NotFoundError, UsageError

PACKAGE = Path(embedkit.__file__).parent

#: The embedkit modules each lower floor may import (at module level or inside a function).
ALLOWED = {  # errors, options, schema and files are the ground floor of everything
    "vector_search": {"errors", "files", "options", "schema"},
    "vector_space": {"errors", "options", "vector_search"},
    "wordvector_evaluation": {"errors", "options", "vector_search", "vector_space"},
}

#: The public names of `embedkit.neighbors` before the split.
OLD_NAMES = {
    "AnalogyReport", "COSMUL_EPSILON", "INDEX_KINDS", "METHODS", "Neighbor", "NeighborIndex",
    "PairsReport", "RESTRICT_VOCAB", "SectionScore", "VectorSpace", "analogy_sample_lines",
    "as_space", "blockwise_topk", "cosine", "default_test_file", "embed_like",
    "evaluate_analogies", "evaluate_word_pairs", "item_vectors", "measure_recall",
    "parse_expression", "parse_vector", "read_analogies", "read_word_pairs", "recall_at_k",
    "set_query", "unit_rows", "word_space",
}


def embedkit_imports(module: str) -> set[str]:
    """The embedkit modules that `embedkit/<module>.py` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:  # from .x import y / from . import x
            found |= {node.module.split(".")[0]} if node.module else \
                {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedkit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("embedkit.")}
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_the_lower_floors_import_nothing_above_them(module):
    assert embedkit_imports(module) <= ALLOWED[module]


def test_the_import_check_sees_lazy_imports():
    # query_resolution imports extract, registry and text inside functions only
    assert {"extract", "registry", "text", "vector_space"} <= embedkit_imports("query_resolution")


def test_embedkit_neighbors_still_offers_every_name_it_had():
    modules = (vector_search, vector_space, query_resolution, wordvector_evaluation)
    exported = [name for m in modules for name in m.__all__]
    assert len(exported) == len(set(exported))  # each name has one home
    assert set(embedkit.neighbors.__all__) == set(exported) == OLD_NAMES
    for m in modules:
        for name in m.__all__:
            assert getattr(embedkit.neighbors, name) is getattr(m, name)


def test_word_space_refuses_a_backbone_without_a_word_vocabulary():
    with pytest.raises(UsageError, match="all-minilm-l6-v2 has no word vocabulary"):
        query_resolution.word_space("all-minilm-l6-v2")


def test_an_unknown_word_of_a_named_word_model_lists_close_spellings():
    with pytest.raises(NotFoundError, match="'kingg' is not in the vocabulary.*close "
                                            "spellings: king"):
        query_resolution.item_vectors(["kingg", "queen"], model="glove-6b-50d")


@pytest.mark.parametrize("read", [wordvector_evaluation.read_analogies,
                                  wordvector_evaluation.read_word_pairs])
def test_evaluation_files_that_are_not_utf8_are_refused_in_one_line(read, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(": capital-common-countries\nAthens Greece Bern Suisse\nk\xe9pi\tcar\t7.0\n"
                     .encode("latin-1"))
    with pytest.raises(BadInputError, match="not UTF-8 text"):
        read(str(path))
