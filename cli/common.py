"""Pieces shared by the commands: the error-reporting group, output helpers, common options."""

from __future__ import annotations

import contextlib
import functools
import json
import sys

import click

from embedkit.errors import EmbedkitError, UsageError
from embedkit.files import printable


class EmbedkitGroup(click.Group):
    """Turns embedkit errors into one line on stderr and the documented exit code."""

    def invoke(self, ctx):
        with _printable_output():
            return self._invoke(ctx)

    def _invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EmbedkitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # disk full, permissions, a file that vanished mid-run
            click.echo(f"error: {os_error_line(exc)}", err=True)
            sys.exit(1)
        except RecursionError:
            click.echo("error: input nested too deeply to read (RecursionError)", err=True)
            sys.exit(5)
        except KeyboardInterrupt:
            click.echo("interrupted: everything flushed so far stays in the cache", err=True)
            sys.exit(130)


@contextlib.contextmanager
def _printable_output():
    """Everything a command writes to stdout and stderr passes `printable`: a file name, id,
    label or message carrying terminal control sequences is shown, never acted on, whichever
    message, table, warning or note it reaches the terminal through."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if isinstance(s, _PrintableStream) else _PrintableStream(s)
                              for s in streams)  # a group inside a group wraps once
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class _PrintableStream:
    """A text stream that escapes control characters; a carriage return that starts a write
    (a progress bar redrawing its line) is kept.  It has no `buffer`, so that nothing (click
    on a stream it thinks misconfigured, say) writes past it to the bytes below."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "backslashreplace")
        redraw = "\r" if text.startswith("\r") else ""
        return self._stream.write(redraw + printable(text[len(redraw):]))

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        if name == "buffer":
            raise AttributeError("the CLI's output is text only")
        return getattr(self._stream, name)


def os_error_line(exc: OSError) -> str:
    """'FILE: reason' for an OSError, or just the reason when it names no file."""
    from embedkit.files import display_name

    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{display_name(str(exc.filename))}: {reason}" if exc.filename else reason


def emit_json(data):
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain aligned text table."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
cache_option = click.option("--cache", type=click.Path(file_okay=False), default=None,
                            envvar="EMBEDKIT_HOME",
                            help="Cache folder (default ~/.cache/embedkit, or $EMBEDKIT_HOME).")


def choice(options) -> click.Choice:
    """A click Choice built from a core declaration (embedkit.options), never a copy of it."""
    return click.Choice(list(options.values))


device_option = click.option("--device", default="auto", show_default=True,
                             help="auto, cpu, cuda, cuda:1, mps.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


def run_options(f):
    """--batch-size, --device, --precision, --quiet: how the backbone runs.  The command
    receives them as one `run` dict, ready for `embedkit.extract(**run)`."""
    from embedkit.options import PRECISIONS

    @functools.wraps(f)
    def command(*args, batch_size, device, precision, quiet, **kwargs):
        return f(*args, run={"batch_size": batch_size, "device": device,
                             "precision": precision, "progress": False if quiet else None},
                 **kwargs)

    options = [
        click.option("--batch-size", "-b", type=int, default=32, show_default=True),
        device_option,
        click.option("--precision", type=choice(PRECISIONS), default="auto", show_default=True,
                     help="auto = bf16 autocast on CUDA, fp32 elsewhere."),
        quiet_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def model_options(f):
    """--model, --layer, --pool, --normalize, --weights: how items become vectors."""
    options = [
        click.option("--model", "-m", default=None,
                     help="Backbone name (embedkit models); default efficientnet_lite0 for "
                          "images, glove-6b-50d for text."),
        click.option("--layer", default=None, help="Layer to read (embedkit layers MODEL)."),
        click.option("--pool", default=None,
                     help="Image block layers: avg (default), max, gem, flatten. "
                          "Word vectors: mean (default), sif."),
        click.option("--normalize", is_flag=True, default=False, help="L2-normalise vectors."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Explicit weights file for the model."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


SKIP_NONFINITE_HELP = ("Drop the vectors of a saved embeddings file that hold NaN or infinite "
                       "values (counted on stderr) instead of refusing the file.")
#: The one --skip-nonfinite flag (how each command applies it differs; the option does not).
skip_nonfinite_flag = click.option("--skip-nonfinite", is_flag=True, help=SKIP_NONFINITE_HELP)


def read_saved_set(spec, options: str, **how):
    """`spec` read as a saved embeddings file the way `options` (as the user typed them) ask:
    `how` is passed to load_embeddings.  Vectors dropped by skip_nonfinite are counted in one
    line on stderr, so stdout stays the command's answer."""
    from embedkit.embeddings import is_embeddings_file, load_embeddings

    if not is_embeddings_file(spec):
        raise UsageError(f"{options}: options for a saved embeddings file (.parquet, .npy, "
                         f".npz, or a .csv embedkit wrote); {spec or 'none was given'} is not "
                         "one")
    emb = load_embeddings(spec, **how)
    skipped = emb.meta.get("skipped_nonfinite")
    if skipped:
        click.echo(f"note: {spec}: skipped {skipped} of {len(emb) + skipped} vectors holding "
                   "NaN or infinite values (--skip-nonfinite)", err=True)
    return emb


def embeddings_columns(f):
    """--vector-column, --id-column, --skip-nonfinite: how to read an embeddings file another
    tool wrote.  When one is given, the command's `embeddings` argument arrives as the
    EmbeddingSet read with them (everything downstream takes a set as well as a file)."""

    @functools.wraps(f)
    def command(*args, vector_column, id_column, skip_nonfinite, **kwargs):
        if vector_column or id_column or skip_nonfinite:
            kwargs["embeddings"] = read_saved_set(
                kwargs.get("embeddings"), "--vector-column / --id-column / --skip-nonfinite",
                vector_column=vector_column, id_column=id_column, skip_nonfinite=skip_nonfinite)
        return f(*args, **kwargs)

    command = skip_nonfinite_flag(command)
    command = click.option("--id-column", default=None,
                           help="Id column of a Parquet file another tool wrote (default: "
                                "'id' if present, else row numbers).")(command)
    return click.option("--vector-column", default=None,
                        help="Vector column of a Parquet file another tool wrote (default: "
                             "its only list column).")(command)


def skip_nonfinite_option(argument: str):
    """--skip-nonfinite for a command whose `argument` may be a saved embeddings file: given,
    that argument arrives as the EmbeddingSet read without its non-finite vectors."""

    def decorate(f):
        @functools.wraps(f)
        def command(*args, skip_nonfinite, **kwargs):
            if skip_nonfinite:
                kwargs[argument] = read_saved_set(kwargs[argument], "--skip-nonfinite",
                                                  skip_nonfinite=True)
            return f(*args, **kwargs)

        return skip_nonfinite_flag(command)

    return decorate


def figure_path(ctx, param, value):
    """Click callback for an option naming a figure file: a suffix matplotlib cannot write is
    refused before any work (`plots.check_figure_path`)."""
    if value is None:
        return value
    from embedkit.plots import check_figure_path

    try:
        check_figure_path(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def list_options(*names: str) -> type[click.Command]:
    """A command class whose options `names` (e.g. "--sources", "-s") take several values each:
    `--sources A B C` (or `--sources=A B C`) gives the values after the option, up to the next
    option or `--`, each to it (click's own `--sources A --sources B` is also accepted)."""
    longs = [n for n in names if n.startswith("--")]

    class ListOptions(click.Command):
        def parse_args(self, ctx, args):
            expanded, current = [], None
            for at, arg in enumerate(args):
                if arg == "--":
                    expanded += args[at:]
                    break
                if arg in names:
                    current = arg
                    continue
                if arg.startswith("-") and arg != "-":
                    current = next((n for n in longs if arg.startswith(f"{n}=")), None)
                elif current is not None:
                    expanded.append(current)
                expanded.append(arg)
            try:
                return super().parse_args(ctx, expanded)
            except click.UsageError as exc:
                used = [n for n in names if n in args]
                if "unexpected extra argument" in exc.message:
                    exc.message += (f"; of this command's options only {' and '.join(longs)} "
                                    f"take{'s' if len(longs) == 1 else ''} several values "
                                    f"({longs[0]} A B C)")
                elif isinstance(exc, click.MissingParameter) and used and \
                        isinstance(exc.param, click.Argument):
                    exc.message = (f"It goes before {used[0]}, whose values run up to the "
                                   "next option.")
                raise

    return ListOptions
