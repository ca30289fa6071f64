"""Time series as training data: load a series, fill its gaps, cut it into windows by time.

A forecaster is a regressor on windows: the features of an example are the
`window` values before time t, its label the value at t. Validation is the
last part of the series; no validation value is ever the label or an input of
a training window, and the scaling statistics come from the training part only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from tfkit import datasets
from tfkit.data.spec import PEEK, DataSpec, PreparedData, in_memory

# name -> (default window, what one step is, scale the model sees the values on)
SERIES: dict[str, tuple[int, str, str]] = {
    # Two years of months (a solar cycle is ~11 years). Counts: the month-to-month
    # noise grows with the level, and a square root makes it about even.
    "sunspots": (24, "month", "sqrt"),
    "co2": (52, "week", "linear"),  # one year of weeks: the seasonal cycle
}
SCALES = ("linear", "sqrt")


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """A regularly spaced series.

    Attributes:
        name: what to call it (the model's folder name on export).
        values: float64 values, gaps already filled.
        times: one label per value (e.g. "1749-01").
        filled: True where a value was missing and has been filled in; such
            values serve as inputs but are never a label.
        report: what was done to the series, in words.
        scale: "linear", or "sqrt" for counts (non-negative, noise growing with
            the level): a model sees the square roots and squares its prediction.
    """

    name: str
    values: np.ndarray
    times: np.ndarray
    filled: np.ndarray
    report: tuple[str, ...] = ()
    scale: str = "linear"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {self.scale!r}")
        if self.scale == "sqrt" and (self.values < 0).any():
            raise ValueError("scale 'sqrt' needs non-negative values (counts); use 'linear'")

    @classmethod
    def from_values(cls, values: Any, name: str = "series", scale: str = "linear") -> Series:
        """A series from an array; missing values (NaN) are filled as in `fill_gaps`."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        filled_values, filled, note = fill_gaps(values)
        return cls(name, filled_values, np.arange(len(values)).astype(str), filled,
                   (note,) if note else (), scale)


def is_series(data: Any) -> bool:
    """True for a `Series` or the name of a bundled one ("sunspots", "co2")."""
    return isinstance(data, Series) or (isinstance(data, str) and data in SERIES)


def load_series(name: str) -> Series:
    """A bundled series: "sunspots" (monthly, 1749-2008) or "co2" (weekly, 1958-2001).

    CO2 has 59 missing weeks; they are filled by linear interpolation in time
    (see `fill_gaps`) and marked, so no filled value is ever a label.

    Example:
        >>> load_series("co2").filled.sum()
        59
    """
    if name not in SERIES:
        raise ValueError(f"unknown series {name!r}; the series are: {', '.join(SERIES)}")
    frame = pd.read_csv(datasets.path(name))
    time_column, value_column = frame.columns[:2]
    values, filled, note = fill_gaps(frame[value_column].to_numpy(np.float64))
    return Series(name, values, frame[time_column].astype(str).to_numpy(), filled,
                  (note,) if note else (), SERIES[name][2])


def fill_gaps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Linear interpolation between the neighbouring measurements (ends: the nearest one).

    Returns:
        (filled values, mask of the filled positions, a sentence saying what was done).
    """
    missing = np.isnan(values)
    if not missing.any():
        return values, missing, ""
    if missing.all():
        raise ValueError("the series has no values")
    index = np.arange(len(values))
    filled = values.copy()
    filled[missing] = np.interp(index[missing], index[~missing], values[~missing])
    return filled, missing, (
        f"filled {int(missing.sum())} missing values of {len(values)} by linear interpolation "
        "in time; they serve as inputs only, never as labels"
    )


def make_windows(values: np.ndarray, window: int, targets: np.ndarray) -> tuple:
    """Features [len(targets), window] (the values before each target time) and labels."""
    x = np.stack([values[t - window:t] for t in targets]).astype(np.float32)
    return x, values[targets].astype(np.float32)


def naive_mae(x: np.ndarray, y: np.ndarray) -> float:
    """MAE of the "same as the last step" forecast."""
    return float(np.mean(np.abs(y - x[:, -1]))) if len(y) else float("nan")


def prepare_series(
    data: Series | str, *, window: int | None = None, validation_split: float = 0.2
) -> PreparedData:
    """Windows of a series, split by time.

    The last `validation_split` of the label times is validation; training
    windows end before the first validation time, and the mean and standard
    deviation in the spec (for a model to scale by) are those of the training
    part, on the model's scale (of the square roots for a "sqrt" series).
    Windows whose label was a filled gap are dropped.

    Args:
        data: a `Series` or a bundled series name.
        window: values per input window; default per series (sunspots 24, co2 52).
        validation_split: fraction of the label times held out, at the end.

    Returns:
        PreparedData with features [N, window] float32 and labels [N] float32.

    Raises:
        ValueError: a window too long for the series.
    """
    series = load_series(data) if isinstance(data, str) else data
    window = window or SERIES.get(series.name, (24, ""))[0]
    n = len(series.values)
    n_val = int(round(n * validation_split))  # the same times for any window
    split = n - n_val
    if split - window < 2:
        raise ValueError(
            f"window {window} leaves no training windows in a series of {n} values "
            f"({n_val} validation labels); use a shorter window"
        )
    real = ~series.filled
    train_t = np.arange(window, split)[real[window:split]]
    val_t = np.arange(split, n)[real[split:]]
    train_x, train_y = make_windows(series.values, window, train_t)
    val_x, val_y = make_windows(series.values, window, val_t) if n_val else (None, None)
    info = {
        "series": series.name, "window": window, "scale": series.scale,
        **_scaling(series, split, real),
        "first_validation_time": str(series.times[split]) if n_val else None,
        "naive_validation_mae": naive_mae(val_x, val_y) if n_val else None,
    }
    report = _report(series, window, split, len(train_t), len(val_t), info)
    spec = DataSpec(
        name=series.name, kind="tensor", task="regression", input_shape=(window,),
        numeric_columns=(), string_columns=(), class_names=None, output_units=1,
        sample=train_x[:PEEK], n_train=len(train_t), n_val=len(val_t) if n_val else 0,
        report=tuple(report), info=info,
    )
    if not spec.n_val:
        val_x = val_y = None
    return in_memory(spec, train_x, train_y, val_x, val_y)


def _scaling(series: Series, split: int, real: np.ndarray) -> dict[str, float]:
    """Mean and std of the training part's real values, on the model's scale."""
    history = series.values[:split][real[:split]]
    if series.scale == "sqrt":
        history = np.sqrt(history)
    return {"mean": float(history.mean()), "std": float(history.std() or 1.0)}


def _report(series: Series, window: int, split: int, n_train: int, n_val: int,
            info: dict[str, Any]) -> list[str]:
    """What `prepare_series` did, in words: the split by time, the scale, dropped windows."""
    report = [*series.report, (
        f"{n_train} training windows of {window} values with labels up to "
        f"{series.times[split - 1]}; {n_val} validation windows with labels from "
        f"{info['first_validation_time']} (split by time)"
    )]
    if series.scale == "sqrt":
        report.append("the model sees square roots of the values (counts: it evens out the "
                      "noise) and squares its prediction back")
    n = len(series.values)
    if n_train + n_val < n - window:
        report.append(f"dropped {n - window - n_train - n_val} windows whose label "
                      "was a filled gap")
    if split < n:
        report.append(f"naive 'same as last step' validation MAE: "
                      f"{info['naive_validation_mae']:.4g}")
    return report
