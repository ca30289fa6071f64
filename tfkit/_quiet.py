"""TensorFlow started without its start-up chatter (TF_CPP_MIN_LOG_LEVEL applies to it too),
and, in tfkit's own processes, without Python's garbage collector walking its objects.

TensorFlow 2.21 writes its ``port.cc`` (oneDNN), ``cudart_stub.cc`` (no CUDA) and
absl "All log messages before absl::InitializeLog()" lines to file descriptor 2
while ``import tensorflow`` runs, before its logging reads ``TF_CPP_MIN_LOG_LEVEL``,
so the variable alone hides none of them. The first import of ``tensorflow`` in the
process, whoever asks for it (tfkit, Keras, the user), therefore runs with
descriptor 2 sent to a temporary file; afterwards the captured text is written
back to stderr without the C++ log lines below ``TF_CPP_MIN_LOG_LEVEL``. If the
import fails, all of it is written back; a crash inside it (not an exception) loses
it, so at TF_CPP_MIN_LOG_LEVEL=0, which hides nothing, nothing is captured. From then
on TensorFlow filters its own lines (``cuInit``'s error without a GPU needs level 3).

In a process tfkit runs from its start (a ``tfkit`` command, a server worker; see
``own_process``), the same first import also runs with the cyclic garbage collector
paused, and everything alive after it is frozen (``gc.freeze``) before the collector is
back on. ``import tensorflow`` (with Keras, which it imports) makes some 350,000 objects
that live as long as the process; the collections their making sets off, and the first
collections of each older generation after it, walk them again and again and find almost
no garbage: about 1 s of CPU in a process that imports TensorFlow and trains the
penguins MLP for 5 epochs (``benchmarks/tensorflow_import.py``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator, Sequence

# TensorFlow's C++ INFO, WARNING and ERROR lines off unless the user set a level:
# on a CPU-only machine its one ERROR is "failed call to cuInit". Errors that matter
# reach Python as exceptions, with their message.
LOG_LEVEL = "3"
_SEVERITIES = "IWEF"  # absl's INFO, WARNING, ERROR, FATAL; TF_CPP_MIN_LOG_LEVEL counts from 0
_CPP_LINE = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_own_process = False  # set by own_process(): freeze what is alive once TensorFlow has started


def install() -> None:
    """Quiets TensorFlow's start-up in this process; a no-op when called again.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` (a level the user set wins), hides a warning
    TensorFlow raises about its own call inside tfkit's evaluation, and makes the
    first ``import tensorflow`` (if it has not happened yet) quiet, and frozen after it in
    a process marked with ``own_process``.

    Example:
        >>> install()
        >>> import tensorflow  # no port.cc or cudart_stub.cc lines
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", LOG_LEVEL)
    # Iterating a distributed dataset inside tf.function (tfkit's evaluation) asks
    # for its options in graph mode; TensorFlow warns about its own call.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options",
                            category=UserWarning, module="tensorflow")
    # Each train() makes its own compiled steps; TensorFlow counts them as retraces of
    # one function and warns after a few runs in a process (a notebook, a sweep).
    if not any(isinstance(f, _OwnRetraces) for f in logging.getLogger("tensorflow").filters):
        logging.getLogger("tensorflow").addFilter(_OwnRetraces())
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietImport())


class _OwnRetraces(logging.Filter):
    """Drops TensorFlow's retracing warning about tfkit's own step functions only."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "<bound method Steps."
                    in message)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, giving it a loader that runs it with stderr captured (at a
    TF_CPP_MIN_LOG_LEVEL above 0) and, in tfkit's own process, the collector paused."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and so that the real finders answer below
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module keeps the real loader (importlib.resources and inspect ask it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        lines = _startup_lines_hidden() if _min_log_level() > 0 else contextlib.nullcontext()
        with lines, _frozen_when_loaded() if _own_process else contextlib.nullcontext():
            self._loader.exec_module(module)


def own_process() -> None:
    """Marks this process as one tfkit runs from its start (a ``tfkit`` command, a server
    worker): TensorFlow's first import runs with the collector paused, and everything alive
    after it is frozen (``gc.freeze``): never walked by the collector again, nor collected
    (the import leaves little garbage: some 3,800 unreachable objects, measured on
    TensorFlow 2.21 with Keras 3.15).

    Only a process whose every object so far is tfkit's own is marked: a user's script or
    notebook may hold objects of its own by then, which must stay collectable.
    """
    global _own_process
    _own_process = True


@contextlib.contextmanager
def _frozen_when_loaded() -> Iterator[None]:
    """Runs the block with the cyclic garbage collector off and, if it succeeds, freezes
    everything alive before the collector is back on (it never walks them). On again
    after, unless it was already off (whoever turned it off meant it)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_on:
            gc.enable()


@contextlib.contextmanager
def _startup_lines_hidden() -> Iterator[None]:
    """Runs the block with descriptor 2 captured; replays it filtered, or whole on an error."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as captured:
        _flush_stderr()
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            if not failed:
                text = _without_startup_lines(text, _min_log_level())
            if text and sys.stderr is not None:
                sys.stderr.write(text)
                sys.stderr.flush()


def _without_startup_lines(text: str, level: int) -> str:
    """``text`` without the C++ log lines TF_CPP_MIN_LOG_LEVEL=``level`` would hide."""
    kept = []
    for line in text.splitlines(keepends=True):
        if _CPP_LINE.match(line) and _SEVERITIES.index(line[0]) < level:
            continue
        if line.startswith(_ABSL_PREAMBLE) and level > _SEVERITIES.index("W"):
            continue
        kept.append(line)
    return "".join(kept)


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()
