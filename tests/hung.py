"""Waiting on a subprocess in a test without asserting on time.

A test never fails because the machine is slow or busy (a run that takes a minute here may take
ten on a loaded CI runner), yet a process that hangs must not block the suite forever.  So the
only limit is `HUNG_S`, far above any honest run, and passing it fails with "hung", never with a
claim about speed."""

from __future__ import annotations

import subprocess
import time

#: Long enough that only a process that will never end reaches it.
HUNG_S = 1800


def run(args, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, **kwargs)`, failing with "hung" only after `HUNG_S`."""
    try:
        return subprocess.run(args, timeout=HUNG_S, **kwargs)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hung: {args!r} had not ended after {HUNG_S} s") from None


def communicate(proc: subprocess.Popen) -> tuple:
    """`proc.communicate()`, killing it and failing with "hung" only after `HUNG_S`."""
    try:
        return proc.communicate(timeout=HUNG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"hung: {proc.args!r} had not ended after {HUNG_S} s") from None


def wait_until(ready, what: str) -> None:
    """Poll `ready()` until it is true; fail with "hung" (naming `what`) only after `HUNG_S`."""
    started = time.monotonic()
    while not ready():
        assert time.monotonic() - started < HUNG_S, f"hung: waited {HUNG_S} s for {what}"
        time.sleep(0.05)
