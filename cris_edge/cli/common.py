"""What every ``cris-*`` command does with errors, in one place.

A command's ``main(argv)`` is `run_command(prog, parser, body, argv)`: the parser gets
``--debug`` and the exit codes in its epilog, and ``body(args)`` runs with its errors mapped:

- bad input or usage (an option's value, a missing or unwritable path, a bad dataset, bundle or
  config, a missing extra): one line ``PROG: error: ...``, exit 2 (argparse's own usage errors
  also exit 2);
- a failure at run time (an engine build, a runtime or OS error): one line, exit 1;
- anything unexpected: one line naming the exception's type and "run with --debug for the
  traceback", exit 1;
- Ctrl-C: "interrupted", exit 130.

With ``--debug`` every such error is re-raised, full traceback. ``body`` should check its
outputs before any work (`cris_edge.paths.check_writable`, `check_not_input`), so that a bad
output path fails in a second, not after the work.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Optional, Sequence

EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = ("exit codes: 0 done; 2 bad input or usage (an option's value, a missing or unwritable path, a bad "
              "dataset, bundle or config), one line naming it; 1 failure at run time, one line; 130 interrupted. "
              "--debug shows the full traceback instead of the one line.")


class UsageError(Exception):
    """Bad input that a command line found itself (exit 2, the message as the one line)."""


def input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (exit 2): the library's own (BundleError, OutputError and
    configuration errors are ValueErrors; DatasetError), a path that is missing or in the way, a
    missing extra (ImportError). Resolved when an error is reported, so that importing a command
    line loads no numpy (cris-demo sets OPENBLAS_NUM_THREADS before numpy loads)."""
    from ..data.records import DatasetError

    return (UsageError, DatasetError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
            IsADirectoryError, PermissionError, ImportError)
#: Failures at run time that are reported in one line without a type name (exit 1).
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError)


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` and the exit codes (epilog) to ``parser``."""
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    parser.epilog = f"{parser.epilog.rstrip()}\n\n{EXIT_CODES}" if parser.epilog else EXIT_CODES
    return parser


def report(prog: str, err: BaseException) -> int:
    """Print ``err`` as one line on standard error; its exit code."""
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, input_errors()):
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_INPUT
    if isinstance(err, RUNTIME_ERRORS):
        print(f"{prog}: error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{prog}: error: unexpected {type(err).__name__}: {message} (run with --debug for the traceback)",
          file=sys.stderr)
    return EXIT_FAILURE


_RST_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|obj|exc|ref):`~?([^`]*)`")


def plain_text(text: Optional[str]) -> Optional[str]:
    """``text`` (a description or epilog, often a module docstring) without reStructuredText markup:
    roles such as ``:func:`name``` become ``name``, double backquotes are dropped."""
    if text is None:
        return None
    return _RST_ROLE.sub(r"\1", text).replace("``", "")


def run_command(prog: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
                argv: Optional[Sequence[str]] = None, intermixed: bool = False) -> int:
    """Parse ``argv`` with ``parser`` (``--debug`` added) and run ``body(args)``, its errors
    mapped to one line and an exit code as the module says."""
    add_debug(parser)
    parser.description, parser.epilog = plain_text(parser.description), plain_text(parser.epilog)
    args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    try:
        return body(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every error becomes one line (or, with --debug, the traceback)
        if args.debug:
            raise
        return report(prog, err)
