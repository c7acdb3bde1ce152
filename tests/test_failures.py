"""One line for every failure, with the exit code the README promises (Exit codes table), and
one policy for every text input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import embedkit
from embedkit.cli.main import cli
from embedkit.inputs import open_dataset
import hung
from one_line_error import assert_one_line_error


def run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'


def _failing_command(*stderr_lines):
    """A click command that writes `stderr_lines` and exits 6, as the CLI's error handler does."""
    @click.command()
    def failing():
        for line in stderr_lines:
            click.echo(line, err=True)
        sys.exit(6)

    return failing


@pytest.mark.parametrize("stderr_lines", [
    (TRACEBACK + "StoreError: damaged", "error: the index is damaged"),
    ("warning: something else", "error: the index is damaged"),
    ("the index is damaged",),
])
def test_the_one_line_check_refuses_anything_but_one_error_line(stderr_lines):
    """The check itself: a traceback or any second line before the error, or a line without
    `error: `, must each fail it (the inline check it replaces passed the first two)."""
    result = CliRunner().invoke(_failing_command(*stderr_lines))
    with pytest.raises(AssertionError):
        assert_one_line_error(result, 6, "damaged")
    as_process = subprocess.CompletedProcess([], 6, "", "\n".join(stderr_lines) + "\n")
    with pytest.raises(AssertionError):
        assert_one_line_error(as_process, 6, "damaged")


def test_the_one_line_check_accepts_one_error_line_and_clicks_own_refusals():
    result = CliRunner().invoke(_failing_command("error: the index is damaged"))
    assert assert_one_line_error(result, 6, "damaged") == "error: the index is damaged"
    with pytest.raises(AssertionError, match="exit 6, expected 5"):
        assert_one_line_error(result, 5)

    @click.command()
    @click.option("--deep", type=click.IntRange(min=1))
    def verify(deep):
        pass

    refused = CliRunner().invoke(verify, ["--deep", "0"])  # click's usage, hint, then Error:
    assert assert_one_line_error(refused, 2, "--deep").startswith("Error: Invalid value")


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def test_a_non_utf8_file_name_is_embedded_and_shown_escaped(tmp_path, pixel_hash):
    folder = tmp_path / "imgs"
    _png(folder / "ok.png", 3)
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    with open(raw, "wb") as f:
        f.write((folder / "ok.png").read_bytes()[:-1] + b"\x82")  # other bytes, same image
    _png(folder / "x.png", 5)
    es = embedkit.extract(folder, pixel_hash, cache=tmp_path / "c", progress=False, workers=0)
    assert es.ids == ["caf\\xe9.png", "ok.png", "x.png"]
    es.save(tmp_path / "out.parquet")
    assert embedkit.load_embeddings(tmp_path / "out.parquet").ids == es.ids


def test_a_damaged_index_exits_6_and_an_unusable_one_exits_1(tmp_path, digits_small):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "index.sqlite").write_bytes(b"this is not a database, it is garbage" * 100)
    assert_one_line_error(run("cache", "info", "--cache", damaged), 6, "index is damaged",
                    "verify --repair")
    blocked = tmp_path / "blocked"
    (blocked / "index.sqlite").mkdir(parents=True)  # cannot be opened as a file
    assert_one_line_error(run("cache", "info", "--cache", blocked), 1, "cache database error")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert_one_line_error(run("extract", digits_small, "--cache", not_a_folder / "sub", "-q"), 1,
                    "cannot open the cache")


def test_a_read_only_index_is_one_line(tmp_path, monkeypatch):
    import sqlite3

    import embedkit.store as store_module

    embedkit.Store(tmp_path / "ro").close()
    real = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect", lambda path, **kw: real(
        f"file:{path}?mode=ro", uri=True, **kw))
    assert_one_line_error(run("cache", "clear", "--yes", "--cache", tmp_path / "ro"), 1,
                    "readonly database")


FSIZE = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
from embedkit.cli.main import main
sys.argv = ["embedkit", "extract", sys.argv[1], "--cache", sys.argv[2], "-q", "--device", "cpu",
            "--model", "glove-6b-50d"]
main()
"""


def test_a_file_size_limit_is_one_line(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"the cat number {i} sat on the mat\n" for i in range(400)))
    proc = hung.run([sys.executable, "-c", FSIZE, str(texts), str(tmp_path / "c")],
                    capture_output=True, text=True)
    line = assert_one_line_error(proc, 1)
    assert "cache database error" in line or "too large" in line.lower(), line


def test_a_folder_nested_1000_deep(tmp_path, pixel_hash):
    deep = tmp_path / "deep"
    path = str(deep)
    os.mkdir(path)
    for _ in range(1000):  # one level at a time: os.makedirs itself recurses
        path = os.path.join(path, "d")
        os.mkdir(path)
    _png(Path(path) / "bottom.png")
    _png(deep / "top.png", 9)
    try:
        ds = open_dataset(deep)
        assert [it.id.count("/") for it in ds.items] == [1000, 0]
        es = embedkit.extract(deep, pixel_hash, cache=tmp_path / "c", progress=False, workers=0)
        assert len(es) == 2
    finally:  # bottom-up, one level at a time: shutil.rmtree (and pytest's clean-up) recurse
        os.remove(os.path.join(path, "bottom.png"))
        while path != str(deep):
            os.rmdir(path)
            path = os.path.dirname(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_malicious_weights_file_is_refused_in_one_line(tmp_path, digits_small, monkeypatch):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv.weight": _Payload()}))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    text = tmp_path / "text.pth"  # before: torch's KeyError escaped as a traceback
    text.write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    for weights in (evil, junk, text):
        result = run("extract", digits_small, "--weights", weights, "--cache", tmp_path / "c",
                     "-q", "--workers", "0")
        assert_one_line_error(result, 4, str(weights), "refused")
        assert "weights_only=False" not in result.output  # torch's advice, never ours
    assert not (tmp_path / "PWNED").exists(), "the pickle's payload never ran"


def test_an_os_error_without_a_file_name_reads_cleanly(tmp_path, digits_small, monkeypatch):
    from embedkit.store import Store

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "publish", full)
    result = run("extract", digits_small, "--cache", tmp_path / "c", "-q", "--workers", "0")
    assert_one_line_error(result, 1, "No space left on device")


def test_manifest_problems_are_bad_input_exit_5(tmp_path):
    (tmp_path / "cols.csv").write_text("foo,bar\n1,2\n")
    assert_one_line_error(run("extract", tmp_path / "cols.csv", "-q"), 5, "'path' column")
    (tmp_path / "lines.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    assert_one_line_error(run("extract", tmp_path / "lines.jsonl", "-q"), 5, "lines.jsonl:2")
    (tmp_path / "dup.csv").write_text("id,text\na,the cat\na,the dog\n")
    assert_one_line_error(run("extract", tmp_path / "dup.csv", "-q"), 5, "id 'a' is used twice")
    # before: the open quote swallowed every later row into one text, without a word
    (tmp_path / "open.csv").write_text('text,label\n"unterminated,pos\nok film,neg\n')
    assert_one_line_error(run("extract", tmp_path / "open.csv", "-q"), 5,
                    "open.csv:2: a quote opened in this row is never closed")
    # a quote inside a hand-written field stays text, as it always did
    (tmp_path / "quoted.csv").write_text('text,label\n"The Matrix" is great,pos\n')
    from embedkit.inputs import open_dataset

    assert [it.text for it in open_dataset(tmp_path / "quoted.csv").items] == \
        ["The Matrix is great"]
    # messages name the dataset as given, not the folder it is in
    (tmp_path / "new.txt").write_text("a cat\n")
    assert_one_line_error(run("extract", tmp_path / "new.txt", "-m", "efficientnet_lite0", "-q"),
                          2, "new.txt holds texts; pick a text model")
    (tmp_path / "gone.csv").write_text(f"path,label\n{tmp_path / 'nothing.png'},x\n")
    assert_one_line_error(run("extract", tmp_path / "gone.csv", "-q"), 5,
                    "gone.csv: no item could be embedded")


# -- inputs, consistently ----------------------------------------------------------------------

def test_a_utf8_bom_in_a_csv_header_is_accepted(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nthe cat,a\n".encode("utf-8"))
    ds = open_dataset(tmp_path / "bom.csv")
    assert ds.items[0].text == "the cat" and ds.label_names == ["label"]


@pytest.mark.parametrize("name,content", [
    ("t.txt", b"the cat\nthe \xff dog\n"),
    ("t.csv", b"text\nthe cat\nthe \xff dog\n"),
    ("t.jsonl", b'{"text": "the cat"}\n{"text": "the \xff dog"}\n'),
])
def test_one_policy_for_bytes_that_are_not_utf8(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    es = embedkit.extract(tmp_path / name, "glove-6b-50d", cache=tmp_path / "c", progress=False)
    assert len(es) == 2, "the line is kept, the bad byte replaced"
    assert any("1 line had bytes that are not UTF-8 (replaced by U+FFFD)" in n
               for n in es.summary.notes), es.summary.notes


def test_text_ids_are_unique_line_numbers_for_every_input_kind(tmp_path):
    (tmp_path / "t.txt").write_text("first\n\nthird\n")
    (tmp_path / "t.csv").write_text("text,label\nfirst,a\n,b\nthird,c\n")
    (tmp_path / "t.jsonl").write_text('{"text": "first"}\n{"text": null}\n{"text": "third"}\n')
    assert [i.id for i in open_dataset(tmp_path / "t.txt").items] == ["1", "3"]
    for name in ("t.csv", "t.jsonl"):
        items = open_dataset(tmp_path / name).items
        offset = 1 if name.endswith(".csv") else 0  # the CSV header is line 1
        assert [i.id for i in items] == [str(n + offset) for n in (1, 2, 3)]
        assert items[1].error and not items[0].error, "a skipped row keeps its own id"


def test_links_loops_and_special_files_are_listed_as_skipped(tmp_path, pixel_hash):
    folder = tmp_path / "f"
    _png(folder / "good.png", 1)
    os.symlink(folder / "missing.png", folder / "dangling.png")
    os.symlink(folder / "loop2.png", folder / "loop1.png")
    os.symlink(folder / "loop1.png", folder / "loop2.png")
    os.symlink(folder, folder / "cycle")
    os.mkfifo(folder / "pipe.png")
    os.symlink(folder / "good.png", folder / "alias.png")
    es = embedkit.extract(folder, pixel_hash, cache=tmp_path / "c", progress=False, workers=0)
    reasons = dict(es.summary.skipped)
    assert es.ids == ["alias.png", "good.png"]
    assert "dangling symbolic link" in reasons["dangling.png"]
    assert "symbolic link loop" in reasons["loop1.png"] and "symbolic link loop" in reasons["loop2.png"]
    assert "points at a folder above it" in reasons["cycle"]
    assert "not a regular file" in reasons["pipe.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: permissions cannot be tested")
def test_unreadable_files_and_folders_are_skipped_with_a_reason(tmp_path, pixel_hash):
    folder = tmp_path / "f"
    _png(folder / "good.png", 1)
    _png(folder / "secret.png", 2).chmod(0)
    _png(folder / "locked" / "x.png", 3)
    (folder / "locked").chmod(0)
    try:
        es = embedkit.extract(folder, pixel_hash, cache=tmp_path / "c", progress=False, workers=0)
        reasons = dict(es.summary.skipped)
        assert "Permission denied" in reasons["secret.png"]
        assert "cannot list folder" in reasons["locked"]
    finally:
        (folder / "locked").chmod(0o755)


def test_manifest_paths_outside_the_within_folder_are_refused(tmp_path, pixel_hash):
    inside, outside = _png(tmp_path / "data" / "in.png", 1), _png(tmp_path / "other" / "out.png", 2)
    manifest = tmp_path / "data" / "m.csv"
    manifest.write_text(f"path\nin.png\n../other/out.png\n{outside}\n")
    assert len(embedkit.extract(manifest, pixel_hash, cache=tmp_path / "c", progress=False,
                                workers=0)) == 3, "allowed by default"
    es = embedkit.extract(manifest, pixel_hash, cache=tmp_path / "c", progress=False, workers=0,
                          within=str(tmp_path / "data"))
    assert es.ids == ["in.png"] and len(es.summary.skipped) == 2
    assert all("outside --within" in r for _, r in es.summary.skipped)
    assert inside.exists()


MEMORY = """
import resource, sys
from embedkit.extract import extract
extract(sys.argv[1], "glove-6b-50d", cache=sys.argv[2], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_10mb_line_needs_megabytes_not_gigabytes(tmp_path):
    words = np.array(["the", "cat", "sat", "on", "mat", "xqzv", "running"])
    line = " ".join(np.random.default_rng(0).choice(words, 2_500_000))[:10_000_000]
    (tmp_path / "big.txt").write_text(line + "\n")
    (tmp_path / "small.txt").write_text("the cat sat\n")
    peak = {}
    for name in ("small", "big"):
        out = hung.run([sys.executable, "-c", MEMORY, str(tmp_path / f"{name}.txt"),
                        str(tmp_path / name)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        peak[name] = int(out.stdout.split()[-1]) / 1024  # MB
    assert peak["big"] - peak["small"] < 400, peak


def test_cache_info_header_and_table_agree(tmp_path, digits_small, pixel_hash):
    cache = tmp_path / "c"
    embedkit.extract(digits_small, pixel_hash, cache=cache, progress=False, workers=0)
    from embedkit.store import Store

    with Store(cache) as s:  # a duplicate row left by two writers computing the same item
        key = s.sample(1)[0][1]
        s.publish(pixel_hash.fingerprint(), [key], ["dup"], np.zeros((1, 16), np.float32))
        info = s.info()
    assert info.vectors == sum(m["vectors"] for m in info.models) == 20
    assert info.shards == sum(m["shards"] for m in info.models) == 2
    result = run("cache", "info", "--json", "--cache", cache)
    assert json.loads(result.output)["vectors"] == 20
