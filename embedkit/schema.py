"""Schemas of the JSON records embedkit writes and reads back: a saved index's sidecar, a
fine-tuned folder's `finetune.json`, a checkpoint's metadata, a runtime export's record.

A record read back may have been edited, cut short or written by an older embedkit, and what
is built from it (a network, a search index, a file that is run) must not be built from a
value of the wrong type or range.  So each record has one schema, a dict of field -> `Rule`
(or the schema of a nested object), declared once beside the writer; `misfit` says which
field does not follow it, in words generated from the declaration, and `check` turns that into
the one-line refusal.  Missing and undeclared fields are refused alike: a record holds exactly
what its writer writes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import BadInputError, EmbedkitError

__all__ = ["ANY", "NUMBER", "OBJECT", "SHA256", "Rule", "check", "fraction", "integer",
           "list_of", "misfit", "one_of", "shown", "text"]


@dataclass(frozen=True)
class Rule:
    """What one field may hold: `test` says whether a value fits, `expected` says so in words
    (they end up in the refusal)."""

    expected: str
    test: Callable[[Any], bool]


def _is_int(value) -> bool:  # JSON true / false are not numbers here
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:  # an int is finite however large (math.isfinite would overflow)
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def integer(low: int, high: int | None = None, optional: bool = False) -> Rule:
    """A whole number from `low` (to `high`); also null when `optional`."""
    words = f"a whole number from {low} to {high}" if high is not None else \
        f"a whole number >= {low}"
    return Rule(words + (" or null" if optional else ""), lambda v: (optional and v is None) or (
        _is_int(v) and v >= low and (high is None or v <= high)))


def one_of(*values) -> Rule:
    """One of `values` (strings, or None for null)."""
    return Rule(" or ".join(json.dumps(v) for v in values),
                lambda v: (v is None or isinstance(v, str)) and v in values)


def list_of(rule: Rule) -> Rule:
    return Rule(f"a list, each {rule.expected}",
                lambda v: isinstance(v, list) and all(map(rule.test, v)))


def text(optional: bool = False) -> Rule:
    """A non-empty string; also null when `optional`."""
    return Rule("a non-empty string" + (" or null" if optional else ""),
                lambda v: (optional and v is None) or (isinstance(v, str) and v != ""))


def fraction() -> Rule:
    """A number from 0 to 1 (a recall, an accuracy)."""
    return Rule("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1)


ANY = Rule("any value", lambda v: True)
OBJECT = Rule("an object", lambda v: isinstance(v, dict))
NUMBER = Rule("a finite number", _is_number)
SHA256 = Rule("a sha256 in 64 lowercase hexadecimal digits", lambda v: (
    isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)))


def shown(value) -> str:
    """A value read from a JSON record, written back as JSON on one short line."""
    written = json.dumps(value)
    return written if len(written) <= 60 else written[:57] + "..."


def misfit(record, schema: dict, prefix: str = "") -> str | None:
    """Why `record` does not follow `schema` (field -> Rule, or the schema of a nested
    object), or None: the first field that is not declared, missing, or not what its rule
    says, named as `a.b`."""
    if not isinstance(record, dict):
        what = f"'{prefix[:-1]}'" if prefix else "the record"
        return f"{what} is {shown(record)}, expected an object of {', '.join(schema)}"
    unknown = [key for key in record if key not in schema]
    if unknown:
        return f"unknown field '{prefix}{unknown[0]}' (known: {', '.join(schema)})"
    for key, rule in schema.items():
        name = prefix + key
        if key not in record:
            return f"'{name}' is missing"
        problem = misfit(record[key], rule, f"{name}.") if isinstance(rule, dict) else (
            None if rule.test(record[key]) else
            f"'{name}' is {shown(record[key])}, expected {rule.expected}")
        if problem:
            return problem
    return None


def check(record, schema: dict, where, then: str,
          refused: type[EmbedkitError] = BadInputError):
    """Refuse (`refused`, a bad input by default) a record that does not follow `schema`, in
    one line: `where` (its file), the field and what it should hold, then `then` (what to do)."""
    problem = misfit(record, schema)
    if problem:
        raise refused(f"{where}: {problem}; {then}")
