"""Text as training data for a character-level language model: a corpus and a vocabulary.

Every Python installation carries a corpus: the docstrings of its standard
library. `python_docstrings()` collects them at run time (in a child process,
so importing ~900 modules leaves this one untouched; nothing is downloaded)
and caches them per Python version. `prepare_text` cuts them into examples of
`context` characters whose labels are the next characters; sampling from a
trained model is in `tfkit.text`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfkit.data.spec import PEEK, DataSpec, PreparedData, in_memory

log = logging.getLogger(__name__)

NAME = "python_docstrings"
UNKNOWN = "\ufffd"  # any character outside printable ASCII and newline
# A fixed vocabulary, so a model's output units mean the same on every machine:
# id 0 unknown, 1 newline, 2..96 the printable ASCII characters " " .. "~".
VOCABULARY: tuple[str, ...] = (UNKNOWN, "\n", *(chr(c) for c in range(32, 127)))
DEFAULT_CONTEXT = 64
SEPARATOR = "\n\n"  # between documents

# Imported by name would show a window, print, open a browser, run a program, or
# take minutes (the test suite): their docstrings are not worth it.
SKIP_MODULES = ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test",
                "lib2to3", "ensurepip", "pydoc_data")

_COLLECT = r"""
import importlib, inspect, io, json, pkgutil, sys, warnings
skip = set(json.loads(sys.argv[1])); only = json.loads(sys.argv[2])
out, sys.stdout = sys.stdout, io.StringIO()
warnings.simplefilter("ignore")
def wanted(name):
    parts = name.split(".")
    return (parts[0] not in skip and not any(p.startswith("_") for p in parts)
            and not any(p in ("test", "tests", "idle_test", "__main__") for p in parts))
names = only or sorted(n for n in sys.stdlib_module_names if wanted(n))
docs = []
def add(obj):
    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    if doc and doc.strip():
        docs.append(inspect.cleandoc(doc))
def visit(module):
    add(module)
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            add(obj)
            for member in sorted(vars(obj)):
                if not member.startswith("_") and callable(vars(obj)[member]):
                    add(vars(obj)[member])
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            add(obj)
queue = list(names)
while queue:
    name = queue.pop(0)
    try:
        module = importlib.import_module(name)
    except BaseException:
        continue
    visit(module)
    if hasattr(module, "__path__") and not only:
        subs = sorted(f"{name}.{m.name}" for m in pkgutil.iter_modules(module.__path__))
        queue[:0] = [s for s in subs if wanted(s)]
out.write(json.dumps(docs))
"""


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Documents to train a language model on, in a fixed order.

    Example:
        >>> Corpus("tiny", ("Return the sum.", "Open a file.")).characters
        27
    """

    name: str
    documents: tuple[str, ...]

    @property
    def characters(self) -> int:
        return sum(map(len, self.documents))


def is_corpus(data: Any) -> bool:
    """True for a `Corpus` or the name "python_docstrings"."""
    return isinstance(data, Corpus) or (isinstance(data, str) and data == NAME)


def python_docstrings(modules: Sequence[str] | None = None) -> Corpus:
    """The docstrings of the standard library: modules, their classes, functions and methods.

    Modules come from `sys.stdlib_module_names` and their packages' submodules,
    in sorted order (private, test and `SKIP_MODULES` ones left out); a module
    that fails to import is skipped. Each docstring is cleaned with
    `inspect.cleandoc`; repeats are dropped, the first kept. The result is
    cached in `cache_dir()` per Python version, and in memory.

    Args:
        modules: collect only these modules (no submodules), e.g. for a quick test.

    Returns:
        A Corpus named "python_docstrings".

    Example:
        >>> corpus = python_docstrings(["json"])
        >>> corpus.documents[0].startswith("JSON (JavaScript Object Notation)")
        True
    """
    return Corpus(NAME, _collected(tuple(modules or ())))


@functools.lru_cache(maxsize=8)
def _collected(modules: tuple[str, ...]) -> tuple[str, ...]:
    key = hashlib.sha256(json.dumps([sys.version, SKIP_MODULES, modules]).encode()).hexdigest()
    path = cache_dir() / f"{NAME}-{sys.version_info.major}.{sys.version_info.minor}-{key[:12]}.json"
    if path.exists():
        return tuple(json.loads(path.read_text()))
    done = subprocess.run(
        [sys.executable, "-I", "-c", _COLLECT, json.dumps(SKIP_MODULES), json.dumps(modules)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=600, check=True,
        env={**os.environ, "DISPLAY": ""},
    )
    documents = tuple(dict.fromkeys(json.loads(done.stdout)))  # repeats dropped, order kept
    if not documents:
        raise RuntimeError("no docstrings found in the standard library")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".tmp{os.getpid()}")
        temp.write_text(json.dumps(documents))
        os.replace(temp, path)
    except OSError as exc:  # a read-only home still trains, it just collects again
        log.warning("could not cache the docstrings in %s: %s", path, exc)
    log.info("collected %d docstrings (%d characters)", len(documents),
             sum(map(len, documents)))
    return documents


def cache_dir() -> pathlib.Path:
    """Where collected text is kept: $TFKIT_CACHE_DIR, else $XDG_CACHE_HOME/tfkit, else ~/.cache."""
    if os.environ.get("TFKIT_CACHE_DIR"):
        return pathlib.Path(os.environ["TFKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tfkit"


def encode(text: str) -> np.ndarray:
    """Character ids in `VOCABULARY` (int32); anything else is the unknown id 0.

    Example:
        >>> encode("Hi\\n").tolist()
        [42, 75, 1]
    """
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.where((points >= 32) & (points <= 126), points - 30, 0)
    return np.where(points == 10, 1, ids).astype(np.int32)


def decode(ids: Any) -> str:
    """Text from character ids."""
    return "".join(VOCABULARY[int(i)] for i in np.asarray(ids).reshape(-1))


def unigram_loss(train_ids: np.ndarray, validation_ids: np.ndarray) -> float:
    """Validation cross-entropy (nats per character) of character frequencies from training.

    The baseline a language model must beat: it knows how often each character
    occurs but nothing about context. Counts are add-one smoothed.
    """
    counts = np.bincount(train_ids, minlength=len(VOCABULARY)) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[validation_ids].mean())


def prepare_text(
    data: Corpus | str, *, context: int | None = None, validation_split: float = 0.1,
    seed: int = 0,
) -> PreparedData:
    """Examples of `context` character ids, labelled with the next character at each position.

    Documents (not characters) are split: a seeded draw of `validation_split`
    of them is validation, so no validation text appears in training. Each
    side's documents are joined by a blank line and cut into non-overlapping
    windows of `context + 1` characters (features the first `context`, labels
    the last `context`).

    Args:
        data: a Corpus, or "python_docstrings".
        context: characters per example; default 64.
        validation_split: share of the documents held out.
        seed: which documents are held out.

    Returns:
        PreparedData with features [N, context] int32 and labels [N, context] int64;
        the spec's `info` holds the vocabulary, the context and the unigram baseline.
    """
    corpus = python_docstrings() if isinstance(data, str) else data
    context = context or DEFAULT_CONTEXT
    order = np.random.default_rng(seed).permutation(len(corpus.documents))
    n_val = int(round(len(order) * validation_split))
    held_out = set(order[:n_val].tolist())
    sides = {"train": [], "validation": []}
    for i, document in enumerate(corpus.documents):
        sides["validation" if i in held_out else "train"].append(document)
    ids = {side: encode(SEPARATOR.join(docs)) for side, docs in sides.items()}
    train_x, train_y = _windows(ids["train"], context)
    val_x, val_y = _windows(ids["validation"], context)
    if not len(train_x):
        raise ValueError(f"the corpus has fewer than {context + 1} training characters; "
                         "use a shorter context (window) or more text")
    baseline = unigram_loss(ids["train"], val_y.reshape(-1)) if len(val_y) else None
    report = _report(corpus, len(sides["validation"]), len(train_x), len(val_x), context,
                     int(np.count_nonzero(ids["train"] == 0)), baseline)
    spec = DataSpec(
        name=corpus.name, kind="text", task="multiclass", input_shape=(context,),
        numeric_columns=(), string_columns=(), class_names=VOCABULARY,
        output_units=len(VOCABULARY), sample=train_x[:PEEK], n_train=len(train_x),
        n_val=len(val_x), report=report,
        info={"vocabulary": VOCABULARY, "context": context, "unigram_validation_loss": baseline},
    )
    if not spec.n_val:
        val_x = val_y = None
    return in_memory(spec, train_x, train_y, val_x, val_y)


def _report(corpus: Corpus, held_out: int, n_train: int, n_val: int, context: int,
            unknown: int, baseline: float | None) -> tuple[str, ...]:
    """What `prepare_text` did, in words: documents held out, examples, the baseline."""
    return (
        f"{len(corpus.documents)} documents, {corpus.characters} characters; "
        f"{held_out} documents held out for validation",
        f"{n_train} training / {n_val} validation examples of {context} characters",
        f"{unknown} training characters outside the vocabulary map to {UNKNOWN!r}",
    ) + ((f"unigram baseline validation loss: {baseline:.4f} nats per character",)
         if baseline is not None else ())


def _windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(ids) - 1) // context
    x = ids[:n * context].reshape(n, context)
    y = ids[1:n * context + 1].reshape(n, context).astype(np.int64)
    return x, y
