"""What the user asked to see, on stdout: epoch lines, data reports, the inferred task, a bar."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

import keras

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


class ProgressBar:
    """Keras's progress bar over one epoch's steps, drawn at verbose=1 on a terminal only.

    Off a terminal it draws nothing: carriage returns would pile up in a
    notebook cell or a log. Its line always ends before the block exits, when
    the last step is reached or an error cuts the epoch short, so whatever is
    printed next (the epoch line, a traceback) starts a line of its own.

    Example:
        >>> with ProgressBar(2, verbose=1) as bar:  # doctest: +SKIP
        ...     bar.update(1, {"loss": 0.52})
        ...     bar.update(2, {"loss": 0.47})
    """

    def __init__(self, steps: int, verbose: int | None) -> None:
        shown = (verbosity(verbose) == 1 and on_terminal()
                 and keras.config.is_interactive_logging_enabled())
        # The values given are the epoch's running means already: shown as they
        # are (no metric is "stateless"), not averaged over the steps again.
        self._bar = keras.utils.Progbar(steps, stateless_metrics=()) if shown else None
        self._open = False  # a line is drawn and not yet ended

    def update(self, done: int, values: dict[str, float]) -> None:
        """Draw `done` of the epoch's steps and the running values; the last step ends the line."""
        if self._bar is None:
            return
        self._bar.update(done, list(values.items()), finalize=done >= self._bar.target)
        self._open = done < self._bar.target

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = False
