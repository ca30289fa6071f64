"""A table's cells read as numbers or text: '$1,200' and '12%' are numbers, '?' is missing."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from tfkit.data.messages import warn

# A text column is read as numbers when at least this share of its cells (not
# counting empty ones or markers such as 'N/A') are numbers: a few junk cells must
# not turn a numeric column into thousands of categories.
NUMERIC_SHARE = 0.8
MISSING_MARKERS = frozenset(  # compared stripped and lower-cased
    {"", "?", "-", "--", "---", ".", "na", "n/a", "#n/a", "nan", "null", "none", "missing"}
)
_CURRENCY = "$€£¥"
_THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d*)?")


def read_column(column: pd.Series, kind: str | None, label: str, hint: str,
                report: list[str]) -> tuple[pd.Series, str]:
    """The column as float64 numbers or as text (object, NaN where missing), and its kind."""
    if kind == "categorical":
        return as_text(column), kind
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64), "numeric"
    cells = column.to_numpy(dtype=object)
    present = ~pd.isna(cells)
    texts = [str(cell) for cell in cells[present]]
    numbers = {text: to_number(text) for text in set(texts)}
    parsed = [numbers[text] for text in texts]
    countable = sum(text.strip().lower() not in MISSING_MARKERS for text in texts)
    found = sum(value is not None for value in parsed)
    if kind is None and countable and found < NUMERIC_SHARE * countable:
        return as_text(column), "categorical"
    values = np.full(len(cells), np.nan)
    values[present] = [np.nan if value is None else value for value in parsed]
    _say_junk(texts, parsed, label, hint, report)
    _say_written(texts, parsed, numbers, label, report)
    return pd.Series(values, index=column.index), "numeric"


def _say_junk(texts, parsed, label: str, hint: str, report: list[str]) -> None:
    """Warn about the cells of a numeric column that are not numbers."""
    junk = [text for text, value in zip(texts, parsed, strict=True) if value is None]
    if junk:
        examples = ", ".join(map(repr, list(dict.fromkeys(junk))[:3]))
        what = ("cells are not numbers and were" if len(junk) != 1
                else "cell is not a number and was")
        warn(f"{label}: {len(junk)} {what} treated as missing ({examples})"
             f"{'; ' + hint if hint else ''}", report)


def _say_written(texts, parsed, numbers, label: str, report: list[str]) -> None:
    """Report the numbers written with currency signs, thousands separators or percent signs."""
    written = [text for text, value in zip(texts, parsed, strict=True)
               if value is not None and not is_plain_number(text)]
    if written:
        report.append(f"{label}: read {len(written)} cells written with currency signs, "
                      f"thousands separators or percent signs as numbers (e.g. {written[0]!r} "
                      f"as {numbers[written[0]]:,.10g}"
                      + ("; '12%' reads as 12)" if any("%" in t for t in written) else ")"))


def read_target(column: pd.Series, kind: str | None, label: str,
                report: list[str]) -> tuple[pd.Series, str]:
    """The target read as a feature is, except that true/false stays text and a '?' is
    no class: classes are named as the user wrote them, and a row without one is dropped."""
    hint = "those rows have no target and are dropped"
    if kind is None and pd.api.types.is_bool_dtype(column):
        return as_text(column), "categorical"
    y, kind = read_column(column, kind, label, hint, report)
    if kind == "categorical":
        marked = y.notna() & y.astype(str).str.strip().str.lower().isin(MISSING_MARKERS)
        if marked.any():
            examples = ", ".join(map(repr, list(dict.fromkeys(y[marked]))[:3]))
            warn(f"{label}: {int(marked.sum())} cells mark a missing value ({examples}) and "
                 f"are not a class; {hint}", report)
            y = y.where(~marked, np.nan)
        _say_case_twins(y, label, report)
    return y, kind


def _say_case_twins(y: pd.Series, label: str, report: list[str]) -> None:
    """Warn about classes spelled alike but for upper/lower case."""
    spellings = pd.Series(y.dropna().unique(), dtype=object)
    groups = spellings.groupby(spellings.str.lower()).agg(list)
    alike = [names for names in groups if len(names) > 1]
    if alike:
        shown = "; ".join("/".join(map(repr, sorted(names))) for names in alike[:3])
        warn(f"{label}: classes differ only in upper/lower case ({shown}) and are kept "
             "apart; write them one way if they are the same class", report)


def to_number(text: str) -> float | None:
    """The number a cell spells, allowing ' 12 ', '1,500', '$1,200', '-$5' and '12%'."""
    rest, sign = text.strip(), ""
    if rest.startswith(("-", "+")):
        sign, rest = rest[0], rest[1:].lstrip()
    if rest[:1] and rest[0] in _CURRENCY:
        rest = rest[1:].lstrip()
    if not sign and rest.startswith(("-", "+")):  # "$-5"
        sign, rest = rest[0], rest[1:]
    if rest.endswith("%"):
        rest = rest[:-1].rstrip()
    if _THOUSANDS.fullmatch(rest):
        rest = rest.replace(",", "")
    if not rest or not (rest[0].isdigit() or rest[0] == "."):  # float() also reads 'inf'
        return None
    try:
        value = float(sign + rest)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def is_plain_number(text: str) -> bool:
    """True when `float()` reads the text as it is."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_text(column: pd.Series) -> pd.Series:
    """Text cells as written; numbers without a spurious '.0'; missing stays NaN."""
    def text(cell: Any) -> Any:
        if pd.isna(cell):
            return np.nan
        if isinstance(cell, (float, np.floating)) and float(cell).is_integer():
            return str(int(cell))
        return str(cell).strip()  # "no " is "no": spaces around a cell are never meant

    return pd.Series([text(cell) for cell in column.to_numpy(dtype=object)],
                     index=column.index, dtype=object)
