"""Private TensorFlow APIs tfkit uses: each with why, checked against TensorFlow 2.21."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator


@contextlib.contextmanager
def deprecation_notices_hidden() -> Iterator[None]:
    """TensorFlow's "... is deprecated" notices off for the block, for tfkit's own calls.

    The export is checked by loading it as TF Serving does, which only the TF1
    loader (``tf.compat.v1.saved_model.loader.load``, deprecated) does. There is
    no public switch; ``tensorflow.python.util.deprecation.silence`` is one, and,
    unlike a logging filter, it leaves the notice for the user's own later calls.
    ``silence`` (2.21) does not switch the notices back on when the block raises,
    so it is always left as if the block had succeeded.
    """
    try:
        from tensorflow.python.util import deprecation

        silence = deprecation.silence()
    except (ImportError, AttributeError):  # moved: the notices show, nothing breaks
        yield
        return
    silence.__enter__()
    try:
        yield
    finally:
        silence.__exit__(None, None, None)


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
