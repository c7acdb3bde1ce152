"""Permission denied, for real (README, "Exit codes": 1 for what the operating system refused;
"Extraction": an unreadable file or folder is skipped with a one-line reason).

The suite runs as root here, and root reads and writes every file whatever its mode, so a test
that only chmods a file proves nothing.  These tests run `embedkit` as a child process that the
kernel holds to the permission bits: as root, the child gives up the two capabilities that let
root ignore them (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, dropped from its bounding set
before it executes Python), so a file of mode 000 is refused to it as to any user.  Dropping to
`nobody` instead is not possible on every machine: here the Python interpreter lives under
/root, which only root may enter.  Not root: the child runs as the user it is.  Where the child
can still read a file of mode 000 the tests skip, saying so.

The child embeds with a cheap installed backbone (tests/installed_backbone.py), so each run
costs a Python start-up and no model.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from installed_backbone import MODEL, install_pixel_hash, pythonpath_with
from one_line_error import assert_one_line_error

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_LIBC = ctypes.CDLL(None, use_errno=True)


def _give_up_permission_override():
    """Runs in the child between fork and exec: drops root's override of permission bits from
    the capability bounding set, which an executed program cannot get back."""
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if _LIBC.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) refused")


def run_held_to_permissions(*args, env=None) -> subprocess.CompletedProcess:
    """A child process that the permission bits apply to (see the module docstring)."""
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_give_up_permission_override if os.geteuid() == 0 else None)


@pytest.fixture(scope="module", autouse=True)
def permission_bits_apply(tmp_path_factory):
    """Skips the module where a child cannot be held to the permission bits."""
    secret = tmp_path_factory.mktemp("probe") / "secret"
    secret.write_text("x")
    secret.chmod(0)
    try:
        probe = run_held_to_permissions(sys.executable, "-c", f"open({str(secret)!r})")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot start a child without root's permission override here ({exc})")
    if probe.returncode == 0:
        pytest.skip("a child process reads a file of mode 000 here: permissions cannot be tested")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return install_pixel_hash(tmp_path_factory.mktemp("site"))


def embedkit(site: Path, *args) -> subprocess.CompletedProcess:
    """`embedkit ARGS --model pixel-hash --workers 0`, held to the permission bits (files are
    hashed, and refused, in the main process: loader workers would only add start-up time)."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with(site)}
    return run_held_to_permissions(sys.executable, "-m", "embedkit.cli.main", *map(str, args),
                                   "--model", MODEL, "--workers", "0", env=env)


@pytest.fixture
def folder(tmp_path, crash_loop) -> Path:
    """Images a/… and b/…, plus b/secret.png (mode 000) and locked/ (a folder of mode 000)."""
    images = crash_loop.make_images(tmp_path / "images", 4)
    crash_loop.make_images(tmp_path / "spare", 2, seed=1)
    (tmp_path / "spare" / "a" / "00001.png").rename(images / "b" / "secret.png")
    (tmp_path / "spare" / "b").rename(images / "locked")
    (images / "b" / "secret.png").chmod(0)
    (images / "locked").chmod(0)
    yield images
    (images / "locked").chmod(0o755)  # so that pytest can remove it


def test_unreadable_files_and_folders_are_skipped_with_one_line_each(folder, site, tmp_path):
    from embedkit.embeddings import load_embeddings

    result = embedkit(site, "extract", folder, "--cache", tmp_path / "cache",
                      "-o", tmp_path / "out.parquet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # the closing summary lists the skipped items
    secret = [ln for ln in lines if "secret.png" in ln]
    locked = [ln for ln in lines if "locked" in ln]
    assert len(secret) == 1 and "cannot read (Permission denied)" in secret[0], result.stdout
    assert len(locked) == 1 and "cannot list folder (Permission denied)" in locked[0], \
        result.stdout
    assert load_embeddings(tmp_path / "out.parquet").ids == \
        ["a/00001.png", "a/00003.png", "b/00000.png", "b/00002.png"]


def test_strict_stops_at_an_unreadable_file_in_one_line(folder, site, tmp_path):
    result = embedkit(site, "extract", folder, "--cache", tmp_path / "cache", "--strict")
    assert_one_line_error(result, 5, "secret.png", "Permission denied", "--strict")


#: README, "Exit codes": 1 is "an operating-system error (..., permission denied, ...)", and
#: "1 for what the operating system refused"
@pytest.mark.parametrize("where", ["cache", "dataset", "output"])
def test_permission_denied_is_exit_1_in_one_line(where, folder, site, tmp_path):
    """A cache folder, a dataset file, or an output folder that the operating system refuses."""
    closed = tmp_path / "closed"
    closed.mkdir()
    manifest = closed / "m.csv"
    manifest.write_text(f"path\n{folder / 'a' / '00001.png'}\n")
    cache, dataset, output = tmp_path / "cache", folder, tmp_path / "out.parquet"
    if where == "cache":
        cache = closed / "cache"
        closed.chmod(0o555)
    elif where == "dataset":
        dataset = manifest
        manifest.chmod(0)
    else:
        output = closed / "out.parquet"
        closed.chmod(0o555)
    result = embedkit(site, "extract", dataset, "--cache", cache, "-o", output)
    assert_one_line_error(result, 1, "Permission denied", str(closed))
