"""The one check of the README's promise for failures ("Exit codes"): a failed command writes
exactly one line to stderr, `error: <what and what to do>`, exits with the documented code, and
shows no traceback.

One helper, so that every test checks the promise the same way, and a helper that is itself
tested (tests/test_failures.py feeds it a fabricated traceback): an earlier inline copy let any
run ending in SystemExit pass whatever it printed, because of how `and` binds before `or`.
Progress bars go to stderr only on a terminal (never under a test runner), so no other stderr
line is allowed beside the error, with one exception: a value that click itself refuses (an
option's type or callback, exit 2) is reported in click's own form, its usage line and its
`Try '... --help'` hint above one `Error: ` line."""

from __future__ import annotations

import subprocess


def assert_one_line_error(result, exit_code: int, *fragments: str) -> str:
    """Assert that `result` (a click `Result` or a `subprocess.CompletedProcess` run with
    `text=True`) is one documented error line; every fragment must appear in that line.
    Returns the line, for checks of its own."""
    code, stderr, everything, exception = _outcome(result)
    assert code == exit_code, f"exit {code}, expected {exit_code}:\n{everything}"
    assert "Traceback" not in everything, f"a traceback was printed:\n{everything}"
    assert exception is None or isinstance(exception, SystemExit), \
        f"an exception escaped: {exception!r}\n{everything}"
    line = _error_line(stderr, code)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def _outcome(result) -> tuple[int, str, str, BaseException | None]:
    """(exit code, stderr, stdout and stderr together, escaped exception) of either kind of run."""
    if isinstance(result, subprocess.CompletedProcess):
        return result.returncode, result.stderr, (result.stdout or "") + result.stderr, None
    return result.exit_code, result.stderr, result.output, result.exception


def _error_line(stderr: str, exit_code: int) -> str:
    """The only error line of `stderr`, after click's usage and hint lines where click refused an
    option (exit 2)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    prefix = "error: "
    if exit_code == 2 and lines and lines[0].startswith("Usage: "):
        hint = lines[1] if len(lines) > 1 else ""
        assert hint.startswith("Try ") and hint.endswith(" for help."), stderr
        lines, prefix = lines[2:], "Error: "
    assert len(lines) == 1, f"expected one error line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith(prefix) and not line.startswith(prefix + ":"), line
    return line
