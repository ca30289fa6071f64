"""What the user asked to see, on stdout: epoch lines, data reports, the inferred task."""

from __future__ import annotations

import sys


def verbosity(verbose: int | None) -> int:
    """Keras's levels: 0 silent, 1 progress bar and epoch lines, 2 epoch lines only.

    None picks 1 on a terminal and 2 elsewhere (Jupyter, a pipe, a CI log), where
    a bar's carriage returns would pile up.
    """
    if verbose is None:
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def say(line: str, verbose: int | None = None) -> None:
    """Print one line to stdout unless `verbose` is 0; flushed, so pipes see it at once."""
    if verbosity(verbose):
        print(line, flush=True)
