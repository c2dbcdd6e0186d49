"""The ``mobilezoo`` command. Each module in this package adds its subcommands through ``register(subparsers)``.

The subcommands are thin: parse flags, call one library function, print its result as a table or JSON.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import warnings
from collections.abc import Callable

from mobilezoo.weights import WeightsAdaptedWarning, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilezoo", description="Lightweight CNNs, faithful to the papers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}").register(sub)
    return parser


DEBUG_ENV = "MOBILEZOO_DEBUG"  # set to 1 for the full traceback instead of the one-line error


def describe_error(error: BaseException) -> str:
    """One readable line for ``error``: its message (a file error also names the file), unexpected kinds labelled."""
    text = one_line(str(error))
    if isinstance(error, OSError):
        text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)  # "[Errno 13] Permission denied: 'x'" -> "Permission ..."
        if error.filename is not None and str(error.filename) not in text:
            text = f"{text}: {error.filename}"
    if isinstance(error, (ValueError, OSError)) and text:
        return text
    detail = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return f"{detail} (set {DEBUG_ENV}=1 for the traceback)"


def _warning_line(command: str) -> Callable[..., None]:
    """``warnings.showwarning`` printing mobilezoo's own notices as one line each (others as Python prints them)."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, WeightsAdaptedWarning):
            print(f"mobilezoo {command}: note: {one_line(str(message))}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run the ``mobilezoo`` command; returns the exit status.

    A failure prints one line, ``mobilezoo COMMAND: error: ...``, to stderr and returns 2 for bad input or an
    unusable file (ValueError, OSError), 1 for anything else and 130 for Ctrl-C; with the environment variable
    ``MOBILEZOO_DEBUG=1`` the exception propagates with its traceback instead.
    """
    args = build_parser().parse_args(argv)
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(args.command)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"mobilezoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        print(f"mobilezoo {args.command}: error: {describe_error(e)}", file=sys.stderr)
        return 2 if isinstance(e, (ValueError, OSError)) else 1


if __name__ == "__main__":
    sys.exit(main())
