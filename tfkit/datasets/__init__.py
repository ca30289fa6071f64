"""Small real datasets shipped in the package, and synthetic data makers.

Nothing here downloads: the CSV files sit beside this module (see README.md in
this folder for each file's source and licence).
"""

from __future__ import annotations

import difflib
import pathlib
from typing import Any

import numpy as np
import pandas as pd

_HERE = pathlib.Path(__file__).parent

# name -> (file, default target, what it is)
BUNDLED: dict[str, tuple[str, str, str]] = {
    "penguins": ("penguins.csv", "species", "Palmer penguins, 344 birds, 3 species (CC0)"),
    "auto_mpg": ("auto_mpg.csv", "Miles_per_Gallon", "Auto MPG, 406 cars (UCI, CC BY 4.0)"),
    "digits": ("digits.csv.gz", "label", "8x8 handwritten digits, 1797 images (UCI, CC BY 4.0)"),
    # Series: tfkit.train windows these itself (tfkit/sequences.py).
    "sunspots": ("sunspots_monthly.csv", "sunspots", "monthly sunspots 1749-2008 (NOAA, PD)"),
    "co2": ("co2_weekly.csv", "co2", "weekly Mauna Loa CO2 1958-2001, 59 gaps (Scripps, PD)"),
}


def available() -> list[str]:
    """Names accepted by `load` and by `tfkit.train(data=...)`."""
    return sorted(BUNDLED)


def path(name: str) -> pathlib.Path:
    """The file behind a bundled dataset."""
    _check_name(name)
    return _HERE / BUNDLED[name][0]


def default_target(name: str) -> str:
    _check_name(name)
    return BUNDLED[name][1]


def load(name: str) -> Any:
    """Load a bundled dataset.

    Args:
        name: one of `available()`.

    Returns:
        A pandas DataFrame for tables ("penguins", "auto_mpg"); for "digits" a
        tuple `(images, labels)` with images float32 [N, 8, 8, 1] scaled to
        [0, 1] and labels int64 [N].

    Raises:
        ValueError: for an unknown name.

    Example:
        >>> frame = load("penguins")
        >>> frame.shape
        (344, 8)
    """
    _check_name(name)
    if name == "digits":
        return load_digits()
    frame = pd.read_csv(path(name))
    if name == "auto_mpg":
        # The car's name identifies a row rather than describing it, and the
        # model year is only a date string in this copy: keep the year number.
        frame = frame.drop(columns=["Name"])
        frame["Year"] = pd.to_datetime(frame["Year"]).dt.year.astype("float64")
    return frame


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as images [N, 8, 8, 1] in [0, 1] and labels [N]."""
    raw = np.loadtxt(path("digits"), delimiter=",", dtype=np.float32)
    images = (raw[:, :64] / 16.0).reshape(-1, 8, 8, 1).astype(np.float32)
    return images, raw[:, 64].astype(np.int64)


def make_linear(
    n: int = 1000, slope: float = 3.0, intercept: float = 2.0, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic `y = slope * x + intercept + noise`, x uniform in [-1, 1].

    Example:
        >>> X, y = make_linear(100)
        >>> X.shape, y.shape
        ((100, 1), (100,))
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1)).astype(np.float32)
    y = (slope * x[:, 0] + intercept + rng.normal(0.0, noise, size=n)).astype(np.float32)
    return x, y


def make_classification(
    n: int = 1000, features: int = 20, classes: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic classes, each a Gaussian blob around its own random centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(0.0, 1.0, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def make_images(
    n: int = 1000, size: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic images [n, size, size, 1] of four shapes on noise, and their class ids.

    Classes: 0 a filled square, 1 a hollow square, 2 a cross, 3 a diagonal line;
    each at a random place and size, with Gaussian pixel noise.

    Example:
        >>> X, y = make_images(8)
        >>> X.shape, sorted(set(y.tolist())) <= [0, 1, 2, 3]
        ((8, 16, 16, 1), True)
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.2, size=(n, size, size)).astype(np.float32)
    labels = rng.integers(0, 4, size=n)
    for image, label in zip(images, labels, strict=True):
        side = int(rng.integers(size // 3, size // 2 + 2))
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = image[top:top + side, left:left + side]
        if label == 0:
            box += 1.0
        elif label == 1:
            box[[0, -1], :] += 1.0
            box[1:-1, [0, -1]] += 1.0
        elif label == 2:
            box[side // 2, :] += 1.0
            box[:, side // 2] += 1.0
        else:
            box[np.arange(side), np.arange(side)] += 1.0
    return images[..., None], labels.astype(np.int64)


def _check_name(name: str) -> None:
    if name not in BUNDLED:
        close = difflib.get_close_matches(str(name).lower(), available(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown dataset {name!r}{hint}; bundled datasets are: {', '.join(available())}"
        )
