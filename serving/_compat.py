"""Private TensorFlow APIs the server uses: each with why, checked against TensorFlow 2.21."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any


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


def make_callable(session: Any, feed_names: Iterable[str], fetches: Iterable[str]) -> Any:
    """A callable running ``session`` on positional feeds, without the feed shape check.

    ``Session.run`` checks each fed value's shape against its placeholder's declared
    shape, in Python; TF Serving feeds what it is sent, and so must this server
    (``{"instances": [2.0, 3.0]}`` reaches an ``x`` declared ``[-1, 1]``). The C++
    ``Session::MakeCallable`` does not check; ``Session._make_callable_from_options``
    (2.21) reaches it from Python with the feeds and fetches named by graph tensor.
    """
    from tensorflow.core.protobuf import config_pb2  # here: importing this module starts no TF

    options = config_pb2.CallableOptions(feed=list(feed_names), fetch=list(fetches))
    return session._make_callable_from_options(options)  # noqa: SLF001 - see above
