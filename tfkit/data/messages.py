"""What the data layer tells the user: `DataWarning`, report lines and error-message helpers."""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from typing import Any

# tfkit's own folder: a warning points at the first frame outside it (the user's line).
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class DataWarning(UserWarning):
    """tfkit changed the user's data: cells read as missing, a column left out.

    The same line is in `DataSpec.report`. To silence it:
    `warnings.simplefilter("ignore", tfkit.DataWarning)`.
    """


class Warned(str):
    """A report line that was also issued as a `DataWarning` (so it is shown once)."""


def warn(line: str, report: list[str]) -> None:
    """Add `line` to the report and issue it as a `DataWarning` at the user's calling line."""
    report.append(Warned(line))
    # Point the warning at the user's line that called tfkit, not at this package.
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(line, DataWarning, stacklevel=level)


def closest(word: Any, choices: Any) -> str | None:
    """The near miss of `word` among `choices` (case aside), or None."""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(word: Any, choices: Any) -> str:
    """' (did you mean 'price'?)' for a near miss among `choices`, else ''."""
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""


def check_choice(argument: str, value: Any, allowed: tuple) -> None:
    """Raise ValueError naming `argument`, the value and the allowed ones, unless allowed."""
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, allowed))}; got "
                         f"{value!r}{did_you_mean(value, allowed)}")


def list_names(names: Any, limit: int = 5) -> str:
    """The first `limit` names, comma-separated, with '…' when there are more."""
    names = list(names)
    return ", ".join(map(str, names[:limit])) + (", …" if len(names) > limit else "")
