"""The inference core: TF Serving's status, metadata, predict, classify and regress, without Flask.

Every method takes plain values (model name, version, label, request body) and
returns the answer body or raises a ``ServingError``; the web layer only routes.
Every request is counted in the Prometheus metrics, and every inference request
also in its model version's statistics (``statistics``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from serving import json_codec
from serving.batching import Batcher
from serving.errors import InvalidArgument, ServingError
from serving.metrics import REST, UNKNOWN_MODEL, Metrics, RequestTimes, VersionStatistics
from serving.repository import ModelRepository
from serving.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable, Signature

T = TypeVar("T")

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is True
_MAX_VERSION = 2**63 - 1  # TF Serving parses versions as int64


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A call of one signature with given inputs and outputs, resolved on its first request.

    Kept in ``Servable.plans``, so it lives exactly as long as the model version.
    """

    feed_names: tuple[str, ...]
    fetches: tuple[str, ...]
    queue: Any  # the batcher's queue; None when the call never merges with others


@dataclasses.dataclass
class _Request:
    """An inference request in flight: the version it counts for, and its model call."""

    servable: Servable | None = None
    rows: int = 0
    run_start: int = 0  # time.perf_counter_ns() readings
    run_end: int = 0
    run_ns: int = 0


# The inference request this thread is answering; a merged batch runs in one of its
# requests' threads, so its run is timed for that request.
_REQUEST: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "tfkit_request", default=None
)


class InferenceCore:
    """Answers TF Serving REST requests from a model repository.

    Args:
        repository: Where the loaded models live.
        metrics: Where request counts and latencies go.
        max_batch_rows: Most rows (``instances``, ``examples``, first dimension of
            ``inputs``) one request may carry; None or 0 for no limit.
        batcher: Merges concurrent model runs; default: batching with TF Serving's defaults.
    """

    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics | None = None,
        batcher: Batcher | None = None,
        max_batch_rows: int | None = None,
    ) -> None:
        self.repository = repository
        self.metrics = metrics or Metrics()
        self.batcher = batcher or Batcher()
        self.max_batch_rows = max_batch_rows or None
        self._statistics: weakref.WeakKeyDictionary[Servable, VersionStatistics] = (
            weakref.WeakKeyDictionary()
        )

    def statistics(self, servable: Servable) -> VersionStatistics:
        """A loaded version's inference statistics, kept as long as the version is."""
        statistics = self._statistics.get(servable)
        if statistics is None:
            statistics = self._statistics.setdefault(servable, VersionStatistics())
        return statistics

    @contextlib.contextmanager
    def servable(self, name: str, version: int | None) -> Iterator[Servable]:
        """``repository.servable``, noting the version an inference request counts for."""
        with self.repository.servable(name, version) as servable:
            request = _REQUEST.get()
            if request is not None:
                request.servable = servable
            yield servable

    def status(self, name: str, version: str | None = None, label: str | None = None) -> bytes:
        """``GET /v1/models/{name}[/versions/{v}|/labels/{l}]``."""

        def answer() -> bytes:
            number = self.version_number(name, version, label)
            states = self.repository.status(name, number)
            return json_codec.dumps({
                "model_version_status": [
                    {"version": str(s.version), "state": s.state,
                     "status": {"error_code": s.error_code, "error_message": s.error_message}}
                    for s in states
                ]
            })

        return self.observed(name, "status", answer)

    def metadata(self, name: str, version: str | None = None, label: str | None = None) -> bytes:
        """``GET /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``."""

        def answer() -> bytes:
            number = self.version_number(name, version, label)
            with self.repository.servable(name, number) as servable:
                return json_codec.dumps({
                    "model_spec": {"name": name, "signature_name": "",
                                   "version": str(servable.version)},
                    "metadata": {"signature_def": {"signature_def": servable.signature_defs_json}},
                })

        return self.observed(name, "metadata", answer)

    def predict(
        self, name: str, body: bytes, version: str | None = None, label: str | None = None
    ) -> bytes:
        """``POST .../{name}[/versions/{v}|/labels/{l}]:predict`` in row or columnar format."""

        def answer() -> bytes:
            doc = self._parse(body)
            signature_name = json_codec.signature_name(doc)
            number = self.version_number(name, version, label)
            with self.servable(name, number) as servable:
                signature = servable.signature(signature_name)
                arrays, fmt = json_codec.decode_predict(doc, signature.inputs)
                outputs = self.run(name, servable, signature, arrays, list(signature.outputs))
            return json_codec.encode_predict(outputs, fmt)

        return self.observed(name, "predict", answer, infer=True)

    def classify(
        self, name: str, body: bytes, version: str | None = None, label: str | None = None
    ) -> bytes:
        """``POST ...:classify``: ``examples`` → ``results`` of ``[label, score]`` pairs."""

        def answer() -> bytes:
            examples, outputs = self._on_examples(name, body, version, label, "classify")
            results = classifications(outputs, len(examples))
            return json_codec.dumps_outputs({"results": results}, outputs)

        return self.observed(name, "classify", answer, infer=True)

    def regress(
        self, name: str, body: bytes, version: str | None = None, label: str | None = None
    ) -> bytes:
        """``POST ...:regress``: ``examples`` → ``results``, one float per example."""

        def answer() -> bytes:
            examples, outputs = self._on_examples(name, body, version, label, "regress")
            results = regressions(outputs, len(examples))
            return json_codec.dumps_outputs({"results": results}, outputs)

        return self.observed(name, "regress", answer, infer=True)

    def _on_examples(self, name: str, body: bytes, version: str | None, label: str | None,
                     verb: str) -> tuple[list[bytes], dict[str, np.ndarray]]:
        doc = self._parse(body)
        signature_name = json_codec.signature_name(doc)
        number = self.version_number(name, version, label)
        _, examples, outputs = self.run_examples(
            name, number, signature_name, lambda: json_codec.examples_from_json(doc, verb), verb)
        return examples, outputs

    def run_examples(self, name: str, number: int | None, signature_name: str,
                     examples: Callable[[], list[bytes]], verb: str) -> tuple[int, list, dict]:
        """``classify``/``regress`` (``verb``), for any transport, of the serialized tf.Examples
        ``examples()`` gives once the signature is checked (TF Serving's order of errors).
        Returns the version that answered, the examples, and the outputs by alias."""
        method, what, outputs_of = _EXAMPLE_CALLS[verb]
        with self.servable(name, number) as servable:
            signature = _checked(servable.signature(signature_name), method, what)
            wanted = outputs_of(signature)
            rows = examples()
            outputs = self._run_examples(name, servable, signature, rows, wanted)
            return servable.version, rows, outputs

    def check_rows(self, rows: int) -> None:
        """Refuses a request of more rows than ``max_batch_rows``, whatever its transport."""
        if self.max_batch_rows is not None and rows > self.max_batch_rows:
            raise InvalidArgument(
                f"Request has {rows} rows; the server accepts at most {self.max_batch_rows} "
                "per request (max_batch_rows). Split the batch into smaller requests."
            )

    def _parse(self, body: bytes) -> dict[str, Any]:
        doc = json_codec.parse_body(body)
        self.check_rows(json_codec.batch_rows(doc))
        return doc

    def run(
        self,
        name: str,
        servable: Servable,
        signature: Signature,
        arrays: dict[str, np.ndarray],
        aliases: list[str],
    ) -> dict[str, np.ndarray]:
        """Runs a signature on input arrays (by alias), through the batcher.

        Returns:
            The outputs named in ``aliases``, by alias.
        """
        key = (signature.name, *arrays, "->", *aliases)
        plan = servable.plans.get(key)
        if plan is None:
            plan = servable.plans.setdefault(key, self._plan(name, servable, signature, key))

        statistics = self.statistics(servable)

        def run_fn(batch: dict[str, np.ndarray]) -> list[np.ndarray]:
            started = time.perf_counter_ns()
            values = servable.call(plan.feed_names, plan.fetches, batch.values())
            took = time.perf_counter_ns() - started
            statistics.executed(_rows(batch), took)
            runner = _REQUEST.get()
            if runner is not None:
                runner.run_ns += took
            return values

        request = _REQUEST.get()
        if request is not None:
            request.rows += _rows(arrays)
            request.run_start = time.perf_counter_ns()
        try:
            values = self.batcher.run_queued(plan.queue, arrays, run_fn)
        except ServingError as exc:
            hint = _shape_hint(signature, arrays) if exc.code == "INVALID_ARGUMENT" else ""
            if not hint:
                raise
            error = ServingError(f"{hint}: {exc.message}")
            error.code = exc.code
            raise error from None
        if request is not None:
            request.run_end = time.perf_counter_ns()
        return {alias: np.asarray(value) for alias, value in zip(aliases, values, strict=True)}

    def _plan(self, name: str, servable: Servable, signature: Signature, key: tuple) -> _Plan:
        inputs, outputs = key[1 : key.index("->")], key[key.index("->") + 1 :]
        batchable = self.batcher.params.enabled and self.batcher.batchable(
            servable, servable.signature_defs[signature.name], signature.name
        )
        return _Plan(
            feed_names=tuple(signature.inputs[alias].tensor_name for alias in inputs),
            fetches=tuple(signature.outputs[alias].tensor_name for alias in outputs),
            queue=self.batcher.queue(servable, name, key) if batchable else None,
        )

    def _run_examples(
        self,
        name: str,
        servable: Servable,
        signature: Signature,
        examples: list[bytes],
        aliases: list[str],
    ) -> dict[str, np.ndarray]:
        serialized = np.empty(len(examples), dtype=object)
        serialized[:] = examples
        # Serialized examples are fed as strings whatever dtype the signature declares,
        # as TF Serving does (half_plus_three's regress signature declares DT_FLOAT).
        return self.run(name, servable, signature, {"inputs": serialized}, aliases)

    def observed(self, name: str, api: str, answer: Callable[[], T], infer: bool = False,
                 entrypoint: str = REST) -> T:
        """Runs ``answer`` as one ``api`` request that came through ``entrypoint`` (REST or
        GRPC): counted, timed, batched when ``infer``."""
        start = time.perf_counter_ns()
        status = "OK"
        request = _Request() if infer else None
        token = _REQUEST.set(request)
        try:
            if infer:
                with self.batcher.arrival():
                    return answer()
            return answer()
        except ServingError as exc:
            status = exc.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            _REQUEST.reset(token)
            end = time.perf_counter_ns()
            self.metrics.observe(self._label(name), api, status, (end - start) / 1e9,
                                 entrypoint=entrypoint)
            if request is not None and request.servable is not None:
                self._count(request, start, end, ok=status == "OK")

    def _count(self, request: _Request, start: int, end: int, ok: bool) -> None:
        """Adds an inference request to its model version's statistics."""
        statistics = self.statistics(request.servable)
        if not ok:
            statistics.failed(end - start)
        elif request.run_end:
            statistics.succeeded(RequestTimes(
                start, request.run_start, request.run_end, end, request.run_ns, request.rows
            ))

    def _label(self, name: str) -> str:
        # A name from the request becomes a label value only when the server has that
        # model: each value is a series for good, and a client may send any name.
        return name if self.repository.has(name) else UNKNOWN_MODEL

    def version_number(self, name: str, version: str | None, label: str | None) -> int | None:
        """A request's version (digits as text) or label as a version number; None: latest."""
        if label is not None:
            return self.repository.label_version(name, label)
        if version is None:
            return None
        digits = version.lstrip("0") or "0"
        # The length test comes first: int() of a 5,000-digit string is refused (or slow).
        if not _DIGITS.fullmatch(version) or len(digits) > 19 or int(digits) > _MAX_VERSION:
            raise InvalidArgument(
                f"Failed to convert version: {version} to numeric. "
                f"Expected a version number from 0 to {_MAX_VERSION}"
            )
        return int(digits)


def _rows(arrays: dict[str, np.ndarray]) -> int:
    """The first dimension of the inputs: the rows of a request, or of a merged batch."""
    first = next(iter(arrays.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _checked(signature: Signature, method: str, what: str) -> Signature:
    if signature.method_name != method:
        raise InvalidArgument(
            f"Expected {what} signature method_name to be {method}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1 or "inputs" not in signature.inputs:
        raise InvalidArgument(
            f"Expected one input Tensor named 'inputs' in the {what} signature, "
            f"got {sorted(signature.inputs)}"
        )
    return signature


def _shape_hint(signature: Signature, arrays: dict[str, np.ndarray]) -> str:
    """Names the input whose shape differs from the signature's, when a run failed.

    TensorFlow's own message names graph nodes and matrix sizes; this says which
    request input is off, and what the model expects instead.
    """
    for alias, array in arrays.items():
        declared = signature.inputs[alias].shape
        serialized = array.dtype == object and signature.inputs[alias].dtype != "DT_STRING"
        if declared is None or serialized:
            continue  # serialized tf.Examples (:classify, :regress) never match the declared shape
        fits = len(declared) == array.ndim and all(
            d in (-1, n) for d, n in zip(declared, array.shape, strict=True)
        )
        if not fits:
            return (
                f"Input '{alias}' was sent with shape {json_codec.shape_text(array.shape)} but "
                f"the signature expects {json_codec.shape_text(declared)} (-1: any size)"
            )
    return ""


def regressions(outputs: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """``regress``'s one value per example, from a regression signature's ``outputs``."""
    values = outputs["outputs"]
    if values.shape not in ((batch,), (batch, 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or "
            f"[batch_size, 1] but got {list(values.shape)}"
        )
    return values.reshape(-1)


def _classify_outputs(signature: Signature) -> list[str]:
    wanted = [a for a in ("classes", "scores") if a in signature.outputs]
    if not wanted:
        raise InvalidArgument(
            "Expected classification signature outputs to contain classes or scores"
        )
    return wanted


def _regress_outputs(signature: Signature) -> list[str]:
    if "outputs" not in signature.outputs:
        raise InvalidArgument("No regression outputs found in signature.")
    return ["outputs"]


_EXAMPLE_CALLS = {"classify": (CLASSIFY_METHOD, "classification", _classify_outputs),
                  "regress": (REGRESS_METHOD, "regression", _regress_outputs)}


def classifications(outputs: dict[str, np.ndarray], batch: int) -> list[list[list[Any]]]:
    """``classify``'s ``[label, score]`` pairs per example, from ``classes`` and/or ``scores``."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for alias, array in (("classes", classes), ("scores", scores)):
        if array is None:
            continue
        if array.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}"
            )
        if array.shape[0] != batch:
            raise InvalidArgument(
                f"Input batch size did not match output batch size: {batch} vs. {array.shape[0]}"
            )
        if alias == "scores" and array.dtype.kind != "f":
            raise InvalidArgument("Expected scores Tensor of DT_FLOAT")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise InvalidArgument(
            f"Tensors class and score should match in shape: {list(classes.shape)} vs. "
            f"{list(scores.shape)}"
        )
    shape = (classes if classes is not None else scores).shape
    results = []
    for i in range(shape[0]):
        row = []
        for j in range(shape[1]):
            label = classes[i, j] if classes is not None else b""
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            # A numpy float32 scalar, so the answer keeps its shortest text (0.1, not 0.1000000015).
            score = scores[i, j] if scores is not None else np.float32(0.0)
            row.append([label, score])
        results.append(row)
    return results

