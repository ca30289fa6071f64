"""Private TensorFlow APIs the server uses: each with why, checked against TensorFlow 2.21."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def deprecation_notices_hidden() -> Iterator[None]:
    """TensorFlow's "... is deprecated" notices off for the block, for the server's own calls.

    The server loads SavedModels as TF Serving does, which only the TF1 loader
    (``tf.compat.v1.saved_model.loader.load``, deprecated) does. There is no
    public switch; ``tensorflow.python.util.deprecation.silence`` is one, and,
    unlike a logging filter, it leaves the notice for the user's own later calls.
    ``silence`` (2.21) does not switch the notices back on when the block raises
    (a broken model), so it is always left as if the block had succeeded.
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
