"""Property tests (hypothesis): random sequences of store operations keep its invariants, and
the input parsers never raise anything but embedkit's own errors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from embedkit.errors import EmbedkitError
from embedkit.inputs import open_dataset
from embedkit.query_resolution import parse_expression
from embedkit.store import Store

FPS = ["a" * 32, "b" * 32]
KEYS = [f"k{i}" for i in range(12)]


def _vector(fp, key):
    """The one true vector of (fingerprint, key): anything else served is a wrong vector."""
    seed = abs(hash((fp, key))) % (2**32)
    return np.random.default_rng(seed).standard_normal(4).astype(np.float32)


class StoreMachine(RuleBasedStateMachine):
    """put / get / flush / compact / reopen / kill (drop the unflushed buffer and the open
    connection, as SIGKILL would) in any order."""

    def __init__(self):
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="embedkit-prop-"))
        self.store = Store(self.root)
        self.writers = {}
        self.flushed: set[tuple[str, str]] = set()
        self.pending: set[tuple[str, str]] = set()

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _writer(self, fp):
        if fp not in self.writers:
            self.writers[fp] = self.store.writer(fp, {"name": fp[:4]}, flush_rows=3)
        return self.writers[fp]

    @rule(fp=st.sampled_from(FPS), keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=4))
    def put(self, fp, keys):
        w = self._writer(fp)
        w.add(keys, keys, np.stack([_vector(fp, k) for k in keys]))  # may publish in background
        self.pending |= {(fp, k) for k in keys}

    @rule()
    def flush(self):
        for fp, w in self.writers.items():
            w.flush()
            w.sync()
        self.flushed |= self.pending
        self.pending = set()

    @rule()
    def compact(self):
        self.store.compact(target_rows=8)

    @rule()
    def reopen(self):
        self.flush()
        self.store.close()
        self.store, self.writers = Store(self.root), {}

    @rule()
    def kill(self):
        self.store._db.close()  # no flush, no clean close: what SIGKILL leaves behind
        self.store, self.writers, self.pending = Store(self.root), {}, set()

    @rule(fp=st.sampled_from(FPS))
    def get(self, fp):
        got = self.store.get_many(fp, KEYS)
        for k, v in got.items():
            np.testing.assert_array_equal(v, _vector(fp, k))

    @invariant()
    def nothing_flushed_is_lost_and_nothing_is_wrong(self):
        for fp in FPS:
            got = self.store.get_many(fp, KEYS)
            assert {(fp, k) for k in got} >= {p for p in self.flushed if p[0] == fp}
            for k, v in got.items():
                np.testing.assert_array_equal(v, _vector(fp, k))

    @invariant()
    def verify_is_clean(self):
        assert self.store.verify() == []


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_the_manifest_reader_raises_only_embedkit_errors(tmp_path, content, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(content)
    try:
        ds = open_dataset(path)
    except EmbedkitError:
        return
    assert len({it.id for it in ds.items}) == len(ds.items), "ids are unique"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.dictionaries(st.sampled_from(["id", "text", "path", "label", "x"]),
                                     st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                               st.lists(st.integers(), max_size=2))),
                     max_size=5))
def test_jsonl_rows_of_any_shape_raise_only_embedkit_errors(tmp_path, rows):
    import json

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        open_dataset(path)
    except EmbedkitError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_the_analogy_parser_raises_only_embedkit_errors(expr):
    try:
        positive, negative = parse_expression(expr)
    except EmbedkitError:
        return
    assert all(isinstance(w, str) and w for w in positive + negative)
