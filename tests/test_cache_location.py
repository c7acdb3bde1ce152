"""Where the cache lives when nothing names it (README, "The cache": `~/.cache/embedkit`, that is
`$XDG_CACHE_HOME/embedkit`; `EMBEDKIT_HOME` or `--cache` override it).

The rest of the suite always sets EMBEDKIT_HOME (tests/conftest.py), so the defaults run only
here: `embedkit extract` in a child process whose environment has no EMBEDKIT_HOME, and the
cache is then opened where the README says it is and must hold the vectors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedkit.store import Store, default_root


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "t.txt"
    path.write_text("the cat sat\na dog ran\n")
    return path


def extract_without_embedkit_home(texts: Path, **env: str):
    """Runs `embedkit extract TEXTS` with EMBEDKIT_HOME and XDG_CACHE_HOME removed from the
    environment and `env` set instead."""
    child = {k: v for k, v in os.environ.items() if k not in ("EMBEDKIT_HOME", "XDG_CACHE_HOME")}
    child.update(HF_HUB_OFFLINE="1", **env)
    result = subprocess.run([sys.executable, "-m", "embedkit.cli.main", "extract", str(texts),
                             "--model", "glove-6b-50d", "-q"], env=child, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def vectors_in(root: Path) -> int:
    assert (root / "index.sqlite").is_file(), f"no cache at {root}"
    with Store(root) as store:
        return store.info().vectors


def test_the_cache_goes_under_xdg_cache_home(texts, tmp_path):
    extract_without_embedkit_home(texts, XDG_CACHE_HOME=str(tmp_path / "xdg"),
                                  HOME=str(tmp_path / "home"))
    assert vectors_in(tmp_path / "xdg" / "embedkit") == 2
    assert not (tmp_path / "home" / ".cache" / "embedkit").exists()


def test_without_xdg_cache_home_the_cache_goes_under_home(texts, tmp_path):
    extract_without_embedkit_home(texts, HOME=str(tmp_path / "home"))
    assert vectors_in(tmp_path / "home" / ".cache" / "embedkit") == 2


def test_embedkit_home_overrides_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("EMBEDKIT_HOME", str(tmp_path / "mine"))
    assert default_root() == tmp_path / "mine"
    monkeypatch.setenv("EMBEDKIT_HOME", "")  # set but empty: as if unset
    assert default_root() == tmp_path / "xdg" / "embedkit"
