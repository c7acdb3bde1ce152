"""A hostile folder built by the test: each kind of bad (or merely odd) input gets its
documented outcome, and the good items' vectors are exactly those they get on their own."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import embedkit

GOOD = "embedded"


def _save(path, image, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


def _rgb(seed, size=(24, 32)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8))


def _png_claiming(width, height) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def build_corpus(root):
    """{relative id: expected outcome} - GOOD, or a fragment of the skip reason."""
    expect = {}

    def add(name, outcome, writer):
        writer(root / name)
        if outcome is not None:
            expect[name] = outcome

    jpeg = io.BytesIO()
    _rgb(1).save(jpeg, format="JPEG", quality=90)
    add("good.png", GOOD, lambda p: _save(p, _rgb(0)))
    add("good.jpg", GOOD, lambda p: p.write_bytes(jpeg.getvalue()))
    add("truncated.jpg", "cannot decode", lambda p: p.write_bytes(jpeg.getvalue()[:300]))
    add("zero.png", "empty file (0 bytes), not an image", lambda p: p.write_bytes(b""))
    add("jpeg-named.png", GOOD, lambda p: p.write_bytes(jpeg.getvalue()))  # content decides
    add("text.jpg", "not a readable image", lambda p: p.write_text("not an image"))
    add("bomb.png", "decompression-bomb guard", lambda p: p.write_bytes(_png_claiming(90000, 90000)))
    add("one-pixel.png", GOOD, lambda p: _save(p, _rgb(2, (1, 1))))
    add("strip.png", "aspect ratio is too extreme", lambda p: _save(p, _rgb(3, (1, 20000))))
    add("cmyk.jpg", GOOD, lambda p: _save(p, _rgb(4).convert("CMYK"), quality=90))
    add("grey16.png", GOOD, lambda p: _save(
        p, Image.fromarray(np.linspace(0, 65535, 24 * 32).astype(np.uint16).reshape(24, 32))))
    add("palette-alpha.png", GOOD, lambda p: _save(
        p, _rgb(5).convert("P"), transparency=0))
    add("animated.gif", GOOD, lambda p: _save(
        p, _rgb(6), save_all=True, append_images=[_rgb(7)], duration=50))
    add("progressive.jpg", GOOD, lambda p: _save(p, _rgb(8), progressive=True, quality=85))
    add("rgba.webp", GOOD, lambda p: _save(p, _rgb(9).convert("RGBA"), lossless=True))
    add("float.tiff", GOOD, lambda p: _save(
        p, Image.fromarray(np.random.default_rng(10).random((24, 32)).astype(np.float32))))
    add("grey-alpha.png", GOOD, lambda p: _save(p, _rgb(11).convert("LA")))
    add("bad-crc.png", "not a readable image", lambda p: p.write_bytes(
        (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:])(_encode(_rgb(12), "PNG"))))
    add("header-only.bmp", "cannot decode", lambda p: p.write_bytes(_encode(_rgb(13), "BMP")[:60]))
    add("exif-rotated.jpg", GOOD, lambda p: _save(p, _rgb(14), exif=_rotated_exif()))
    add("dir.jpg", None, lambda p: (p / "inner").mkdir(parents=True))  # a folder, never a file
    add("dangling.png", "dangling symbolic link", lambda p: os.symlink(root / "absent.png", p))
    add("self-loop.png", "symbolic link loop", lambda p: os.symlink(p, p))
    add("cycle", "points at a folder above it", lambda p: os.symlink(root, p))
    add("alias.png", GOOD, lambda p: os.symlink(root / "good.png", p))
    add("pipe.png", "not a regular file", lambda p: os.mkfifo(p))
    add(".hidden.png", None, lambda p: _save(p, _rgb(15)))  # hidden: not part of the dataset
    add("notes.txt", None, lambda p: p.write_text("a note among images"))  # images dominate
    # names that would drive a terminal: shown escaped (tested through the CLI below)
    add("osc\x1b]0;title\x07csi\x1b[2J.png", "not a readable image",
        lambda p: p.write_text("not an image"))
    add("bidi\u202egnp.exe.png", GOOD, lambda p: _save(p, _rgb(18)))
    raw = os.path.join(os.fsencode(root), b"caf\xe9.png")
    with open(raw, "wb") as f:
        f.write(_encode(_rgb(16), "PNG"))
    expect["caf\\xe9.png"] = GOOD
    if os.geteuid() != 0:  # root reads everything
        add("unreadable.png", "Permission denied", lambda p: _save(p, _rgb(17)).chmod(0))
    return expect


def _encode(image, fmt) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _rotated_exif():
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    root.mkdir()
    return root, build_corpus(root)


def test_at_least_25_kinds(corpus):
    _, expect = corpus
    assert len(expect) >= 25


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile-cache")


def test_every_kind_gets_its_documented_outcome(corpus, lite0, cache, tmp_path):
    root, expect = corpus
    es = embedkit.extract(root, lite0, cache=cache, progress=False, workers=0, batch_size=1)
    skipped = dict(es.summary.skipped)
    outcome = {i: GOOD for i in es.ids} | skipped
    assert set(outcome) == set(expect), set(outcome) ^ set(expect)
    for name, want in expect.items():
        if want == GOOD:
            assert name in es.ids, f"{name}: {skipped.get(name)}"
        else:
            assert want in skipped[name], f"{name}: {skipped[name]!r}"
    assert all(len(r.splitlines()) == 1 for r in skipped.values())

    # the good items' vectors are exactly what they get on their own, in a clean folder
    clean = tmp_path / "clean"
    clean.mkdir()
    good = [i for i in es.ids]
    for n, item_id in enumerate(good):
        shutil.copy(os.path.join(os.fsencode(root), os.fsencode(item_id.replace("\\xe9", "\udce9"))),
                    clean / f"{n:02d}{os.path.splitext(item_id)[1]}")
    alone = embedkit.extract(clean, lite0, cache=tmp_path / "cache2", progress=False, workers=0,
                             batch_size=1)
    assert alone.summary.skipped == []
    np.testing.assert_array_equal(alone.vectors, es.vectors)


def test_the_cli_shows_every_name_without_a_control_character(corpus, cache):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    root, expect = corpus
    result = CliRunner().invoke(cli, ["extract", str(root), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    shown = result.output
    assert not any(c in shown for c in "\x1b\x07\u202e"), repr(shown)
    assert "osc\\x1b]0;title\\x07csi" in shown  # the skipped file, named and escaped
    skipped = [line for line in shown.splitlines() if line.startswith("  skipped ")]
    assert len(skipped) == sum(want != GOOD for want in expect.values())
