"""Time series as training data: kept importable here; the code is in `tfkit.data.series`."""

from tfkit.data.series import (
    SCALES,
    SERIES,
    Series,
    fill_gaps,
    is_series,
    load_series,
    make_windows,
    naive_mae,
    prepare_series,
)

__all__ = ["SCALES", "SERIES", "Series", "fill_gaps", "is_series", "load_series",
           "make_windows", "naive_mae", "prepare_series"]
