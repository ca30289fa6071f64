"""What the user asked to see goes to stdout: epoch lines, data reports, the inferred task."""

from __future__ import annotations

import logging
import sys

_log = logging.getLogger("tfkit")


def verbosity(verbose: int | None) -> int:
    """Keras's levels: 0 silent, 1 progress bar and epoch lines, 2 epoch lines only.

    None picks 1 on a terminal and 2 elsewhere (Jupyter, a pipe, a CI log), where
    a bar's carriage returns would pile up. `False`/`True` count as 0/1.

    Example:
        >>> verbosity(False), verbosity(2)
        (0, 2)
    """
    if verbose is None:
        return 1 if on_terminal() else 2
    return int(verbose)


def on_terminal() -> bool:
    """Whether stdout is a terminal (not Jupyter, a pipe or a file)."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def say(line: str, verbose: int | None = None) -> None:
    """Print one line to stdout unless `verbose` is 0; flushed, so pipes see it at once.

    At verbose 0 the line goes to the `tfkit` logger at INFO instead, for those
    who configured logging.

    Example:
        >>> say("task: binary (2 classes)", verbose=2)
        task: binary (2 classes)
    """
    if verbosity(verbose):
        print(line, flush=True)
    else:
        _log.info(line)
