"""Where `data=` comes from: a bundled dataset's name, a CSV path, or the object itself."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from tfkit import datasets
from tfkit.data.messages import did_you_mean


def load(data: Any, argument: str) -> tuple[str, Any, str | None]:
    """(name, data, default target): a bundled name or a CSV path read; others as given."""
    if isinstance(data, str) and data in datasets.BUNDLED:
        return data, datasets.load(data), datasets.default_target(data)
    if isinstance(data, (str, os.PathLike)):
        if not os.path.exists(data):
            raise ValueError(
                f"{argument} {str(data)!r} is neither a bundled dataset "
                f"({', '.join(datasets.available())}) nor an existing CSV file"
                f"{did_you_mean(os.path.basename(str(data)), datasets.available())}"
            )
        return os.path.splitext(os.path.basename(str(data)))[0], pd.read_csv(data), None
    return "data", data, None
