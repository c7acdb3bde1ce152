"""Shared fixtures: an isolated cache home per session, small real datasets, fresh stores."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def embedkit_home(tmp_path_factory):
    """Every test runs against a throw-away EMBEDKIT_HOME (never the user's cache).
    Session-wide, so exported samples and probed layer shapes are shared between tests."""
    home = tmp_path_factory.mktemp("embedkit-home")
    old = os.environ.get("EMBEDKIT_HOME")
    os.environ["EMBEDKIT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EMBEDKIT_HOME", None)
    else:
        os.environ["EMBEDKIT_HOME"] = old


@pytest.fixture
def store(tmp_path):
    """A fresh, empty store of its own."""
    from embedkit.store import Store

    with Store(tmp_path / "store") as s:
        yield s


@pytest.fixture(scope="session")
def digits_small(tmp_path_factory):
    """Digits 5-9 (the target task), 4 images per class: 20 real 8x8 images."""
    from embedkit import samples

    return samples.export("digits-target", tmp_path_factory.mktemp("data") / "digits",
                          per_class=4)


@pytest.fixture(scope="session")
def lite0():
    from embedkit.registry import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def crash_loop():
    """benchmarks/crash_loop.py as a module (its harnesses and its cheap PixelHashBackbone)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "crash_loop", Path(__file__).resolve().parents[1] / "benchmarks" / "crash_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pixel_hash(crash_loop):
    """A deterministic image backbone with no model behind it: for cache mechanics tests."""
    return crash_loop.PixelHashBackbone()
