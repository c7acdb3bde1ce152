"""The smaller refusals of the trust review: each a value or file that used to end in a
traceback, a wrong exit code, or raw terminal control sequences, and now gets one line with
the documented exit code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import embedkit
from embedkit.cli.main import cli
from embedkit.errors import UsageError
from embedkit.files import printable
from one_line_error import assert_one_line_error


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, code):
    return assert_one_line_error(result, code)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24, 3), np.uint8)).save(
            root / f"{i}.png")
    return root


def test_a_pickled_kv_naming_other_types_is_refused_as_untrusted(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "evil.kv").write_bytes(pickle.dumps(Evil()))
    line = one_line_error(run("similar", "king", "--model", tmp_path / "evil.kv"), 4)
    assert "refusing to unpickle posix.system" in line
    assert not (tmp_path / "pwned").exists()


def test_a_corrupt_kv_is_bad_input_not_untrusted(tmp_path):
    (tmp_path / "junk.kv").write_bytes(b"\x80\x04junk that is no pickle")
    line = one_line_error(run("similar", "king", "--model", tmp_path / "junk.kv"), 5)
    assert "junk.kv" in line


def test_a_model_name_too_long_to_be_a_file_is_an_unknown_model(images):
    line = one_line_error(run("extract", images, "--model", "a" * 300), 3)
    assert "unknown model" in line


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_name_is_refused_not_read_as_the_default(images, name):
    line = one_line_error(run("extract", images, "--model", name), 2)
    assert "empty" in line
    with pytest.raises(UsageError, match="empty"):
        embedkit.extract(str(images), model=name)


def test_none_among_inputs_is_refused_naming_its_type():
    with pytest.raises(UsageError, match="got a NoneType"):
        embedkit.encode([None])
    with pytest.raises(UsageError, match="got a NoneType"):
        embedkit.encode(["a text", None])


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (5, 0)])
def test_an_empty_pil_image_is_refused_as_empty(size):
    with pytest.raises(UsageError, match=f"{size[0]}x{size[1]} pixels is empty"):
        embedkit.encode([Image.new("RGB", size)])


def test_printable_escapes_every_terminal_control_and_keeps_text():
    shown = printable("a\x1b[31mb\x1b]0;title\x07c\x9b2Jd\u202eE\rF\x00\x7f\ttab\nnext é 猫")
    assert shown == ("a\\x1b[31mb\\x1b]0;title\\x07c\\x9b2Jd\\u202eE\\x0dF\\x00\\x7f\ttab\n"
                     "next é 猫")


def test_control_sequences_in_a_skipped_file_name_never_reach_the_terminal(images, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "good.png").write_bytes((images / "0.png").read_bytes())
    evil = "bad\x1b]0;pwned\x07\x1b]8;;x\x07link\x9b2J\u202e.png"
    (folder / evil).write_bytes(b"not an image")
    result = run("extract", folder, "-o", tmp_path / "out.parquet")
    assert result.exit_code == 0, result.output
    shown = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert not any(c in shown for c in "\x1b\x07\x9b\u202e"), repr(shown)
    assert "bad\\x1b]0;pwned\\x07" in shown  # named, escaped
    saved = embedkit.load_embeddings(tmp_path / "out.parquet")
    assert list(saved.ids) == ["good.png"]


def test_an_error_message_carrying_control_characters_is_escaped(tmp_path):
    missing = tmp_path / "no\x1b]0;pwned\x07such"
    result = run("extract", missing)
    line = one_line_error(result, 3)
    assert "\x1b" not in result.output and "\\x1b]0;pwned\\x07" in line
