"""Private TensorFlow APIs tfkit uses: each with why, checked against TensorFlow 2.21."""

from __future__ import annotations

import pathlib

# The TF1 loader's notices, hidden around tfkit's own loads as around the server's.
from serving._compat import deprecation_notices_hidden  # noqa: F401


def write_fingerprint(path: pathlib.Path) -> None:
    """Rewrites a SavedModel's ``fingerprint.pb`` after ``saved_model.pb`` was edited.

    The fingerprint hashes ``saved_model.pb``; only TensorFlow's private
    ``fingerprinting_utils`` writes it. When that is gone, the stale file is
    removed (loaders accept a SavedModel without one).
    """
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(str(path))
    except (ImportError, AttributeError, RuntimeError):
        (path / "fingerprint.pb").unlink(missing_ok=True)
