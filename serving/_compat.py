"""Private TensorFlow APIs the server uses: each with why, checked against TensorFlow 2.21."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


def start_tensorflow_without_keras() -> None:
    """Imports TensorFlow without the import of all of Keras it ends with; for server workers.

    TensorFlow 2.21's ``__init__`` ends with ``import keras.src.optimizers`` inside
    ``try: ... except ImportError: pass``, so that optimizers register with the SavedModel
    registry (Keras 3 registers none). That imports all of Keras, and with it
    ``matplotlib.pyplot`` and pandas. A server loads SavedModels with TensorFlow's own
    loader and uses none of them: each worker starts with less CPU and memory without
    them. While TensorFlow starts, ``keras`` is found (TensorFlow reads where its folder
    is) but not loaded; afterwards it imports as usual for whoever asks for it.
    """
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return
    finder = _KerasFoundNotLoaded()
    sys.meta_path.insert(0, finder)
    try:
        import tensorflow  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


class _KerasFoundNotLoaded(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``keras`` where it is installed, with a loader that refuses to load it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None:
            spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        raise ImportError("Keras is not loaded while the server starts TensorFlow")

    def exec_module(self, module: types.ModuleType) -> None:  # not reached: create_module raises
        self.create_module(module.__spec__)


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
