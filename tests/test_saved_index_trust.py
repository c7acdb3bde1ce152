"""Saved search indexes are checked before use (issue 19, part 3): the sidecar records the
sha256 of the index file's bytes, and is itself held to a schema, so an index swapped for
another set's, bytes edited inside it (a stored vector, a NaN, the HNSW neighbour lists), a
truncated file or an edited sidecar is refused in one line (exit 5, bad input) instead of
answering with wrong neighbours or a traceback.  The sets are 150 x 16 random float32 vectors,
saved with EmbeddingSet.save, so no model runs."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli
from embedkit.embeddings import EmbeddingSet
from embedkit.vector_search import sidecar_path, unit_rows
from embedkit.vector_space import VectorSpace
from one_line_error import assert_one_line_error

BAD_INPUT = 5
QUERY = "5/00005.png"


def random_set(seed: int, order=None) -> EmbeddingSet:
    """150 x 16 random vectors with image-like ids; `order` shuffles the rows."""
    vectors = np.random.default_rng(seed).standard_normal((150, 16)).astype(np.float32)
    ids = [f"{i % 10}/{i:05d}.png" for i in range(150)]
    order = np.arange(150) if order is None else order
    return EmbeddingSet([ids[i] for i in order], vectors[order])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """d150.parquet and its hnsw index A.faiss, built by the CLI; O.faiss indexes the same rows
    shuffled (same shape, another set)."""
    folder = tmp_path_factory.mktemp("indexes")
    feats = random_set(0).save(folder / "d150.parquet")
    shuffled = random_set(0, np.random.default_rng(1).permutation(150))
    other = shuffled.save(folder / "o150.parquet")
    for source, name in ((feats, "A.faiss"), (other, "O.faiss")):
        done = CliRunner().invoke(cli, ["index", "build", str(source), "--index", "hnsw",
                                        "-o", str(folder / name)])
        assert done.exit_code == 0, done.output
    return folder


def similar(folder, index_name: str):
    """`embedkit similar QUERY --embeddings d150.parquet --index FOLDER/INDEX -k 5 --json`."""
    return CliRunner().invoke(cli, ["similar", QUERY, "--embeddings",
                                    str(folder / "d150.parquet"), "--index",
                                    str(folder / index_name), "-k", "5", "--json"])


def neighbours(result) -> list:
    assert result.exit_code == 0, result.output
    return [n["key"] for n in json.loads(result.output)["neighbors"]]


def copy_index(built, tmp_path, name: str = "A.faiss"):
    """A copy of the built index `name` and its sidecar as tmp_path/A.faiss, to tamper with."""
    target = tmp_path / "A.faiss"
    shutil.copy(built / name, target)
    shutil.copy(sidecar_path(built / "A.faiss"), sidecar_path(target))
    shutil.copy(built / "d150.parquet", tmp_path / "d150.parquet")
    return target


def assert_refused(result, *words):
    """The documented one-line error, exit 5, saying how to rebuild the index."""
    assert_one_line_error(result, BAD_INPUT, "embedkit index build", *words)


def assert_untouched_answers(built):
    """The untouched A.faiss still answers as the in-memory hnsw index of the set does."""
    space = VectorSpace.from_embeddings(random_set(0))
    expected = [n.key for n in space.most_similar(QUERY, topn=5, index="hnsw")]
    assert neighbours(similar(built, "A.faiss")) == expected


def patched(path, old: bytes, new: bytes):
    """Overwrite the one occurrence of `old` in the file at `path` with `new` (same length)."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def test_an_index_swapped_for_one_of_a_shuffled_set_is_refused(built, tmp_path):
    index = copy_index(built, tmp_path, "O.faiss")  # cp O.faiss A.faiss
    assert_refused(similar(tmp_path, "A.faiss"), str(index))
    assert_untouched_answers(built)


def test_one_stored_vector_overwritten_is_refused(built, tmp_path):
    index = copy_index(built, tmp_path)
    unit = unit_rows(random_set(0).vectors)
    patched(index, unit[6].tobytes(), unit[7].tobytes())
    assert_refused(similar(tmp_path, "A.faiss"), str(index))
    assert_untouched_answers(built)


def test_a_nan_written_into_a_stored_vector_is_refused(built, tmp_path):
    index = copy_index(built, tmp_path)
    unit = unit_rows(random_set(0).vectors)
    poisoned = unit[5].copy()
    poisoned[0] = np.nan
    patched(index, unit[5].tobytes(), poisoned.tobytes())
    assert_refused(similar(tmp_path, "A.faiss"), str(index))
    assert_untouched_answers(built)


def test_overwritten_hnsw_neighbour_lists_are_refused(built, tmp_path):
    import faiss

    index = copy_index(built, tmp_path)
    graph = faiss.read_index(str(index))  # held: the neighbour vector lives inside it
    links = faiss.vector_to_array(graph.hnsw.neighbors)
    starts = faiss.vector_to_array(graph.hnsw.offsets)[:-1]
    width = graph.hnsw.nb_neighbors(0)
    # each node's links on the bottom level (where every row is a node) now point at the next
    # row: the file stays readable and safe to search, but the graph is wrong
    bottom = np.zeros(len(links), bool)
    for start in starts:
        bottom[start:start + width] = True
    moved = np.where(bottom & (links >= 0), (links + 1) % 150, links).astype(links.dtype)
    patched(index, links.tobytes(), moved.tobytes())
    assert_refused(similar(tmp_path, "A.faiss"), str(index))
    assert_untouched_answers(built)


def test_a_truncated_index_file_is_refused(built, tmp_path):
    index = copy_index(built, tmp_path)
    index.write_bytes(index.read_bytes()[:-1000])
    assert_refused(similar(tmp_path, "A.faiss"), str(index), "sha256 differs")
    # with the sidecar's sha256 made to match, faiss itself fails to read it: one line too
    sidecar = json.loads(sidecar_path(index).read_text())
    sidecar["index_sha256"] = hashlib.sha256(index.read_bytes()).hexdigest()
    sidecar_path(index).write_text(json.dumps(sidecar))
    assert_refused(similar(tmp_path, "A.faiss"), str(index), "faiss cannot read it")
    assert_untouched_answers(built)


def test_a_sidecar_without_the_index_files_sha256_is_refused(built, tmp_path):
    index = copy_index(built, tmp_path)  # as an older embedkit wrote it
    sidecar = json.loads(sidecar_path(index).read_text())
    del sidecar["index_sha256"]
    sidecar_path(index).write_text(json.dumps(sidecar))
    assert_refused(similar(tmp_path, "A.faiss"), str(sidecar_path(index)), "'index_sha256'")
    assert_untouched_answers(built)


@pytest.mark.parametrize("edit,named", [({"params": {"bogus": 1}}, "bogus"),
                                        ({"params": [1, 2]}, "params"),
                                        ({"kind": "exact"}, "kind"),
                                        ({"about": "x"}, "about"),
                                        ({"kind": ["hnsw"]}, "kind"),
                                        # bytes intact, but not what the sidecar describes
                                        ({"kind": "ivf"}, "IndexHNSWFlat"),
                                        ({"ntotal": 149}, "149")])
def test_an_edited_sidecar_is_refused(built, tmp_path, edit, named):
    index = copy_index(built, tmp_path)
    sidecar = json.loads(sidecar_path(index).read_text())
    sidecar_path(index).write_text(json.dumps({**sidecar, **edit}))
    assert_refused(similar(tmp_path, "A.faiss"), str(index), named)
    assert_untouched_answers(built)
