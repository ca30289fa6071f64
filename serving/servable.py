"""One loaded SavedModel version: its graph, session and signature tables."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import threading
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from serving import _compat
from serving.errors import InvalidArgument, client_message, from_tf_error

logger = logging.getLogger(__name__)

CLASSIFY_METHOD = "tensorflow/serving/classify"  # tfkit's export writes these two
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
# TF2 SavedModels carry their initialiser as a signature; it is not a servable one.
_INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output, resolved once at load time.

    Attributes:
        alias: The key clients use (e.g. ``"x"``).
        tensor_name: The graph tensor behind it (e.g. ``"x:0"``).
        dtype: TF Serving's dtype name, e.g. ``"DT_FLOAT"``.
        np_dtype: The numpy dtype request values are converted to.
        shape: The declared dimensions (-1 for any size); None when the rank is unknown.
            Not enforced (TF Serving feeds what it is sent), only quoted in errors.
    """

    alias: str
    tensor_name: str
    dtype: str
    np_dtype: np.dtype
    shape: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Signature:
    """A signature's method and its input/output tables, sorted by alias."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def _spec(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    tf_dtype = tf.dtypes.as_dtype(info.dtype) if info.dtype else tf.string
    np_dtype = np.dtype(object) if tf_dtype == tf.string else np.dtype(tf_dtype.as_numpy_dtype)
    has_shape = info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank
    shape = tuple(d.size for d in info.tensor_shape.dim) if has_shape else None
    return TensorSpec(alias, info.name, types_pb2.DataType.Name(info.dtype), np_dtype, shape)


class Servable:
    """A SavedModel version loaded into its own graph and TF1 session.

    Every SavedModel, TF1 or TF2, is loaded the way TF Serving loads it: the
    MetaGraph tagged ``serve`` goes into a graph, its variables are restored and
    its init op runs. Requests are fed through ``Session.MakeCallable``, which,
    like TF Serving, does not check fed shapes against the placeholders' declared
    shapes (``Session.run`` does, in Python), so ``{"instances": [2.0, 3.0]}``
    reaches an ``x`` declared ``[-1, 1]`` exactly as TF Serving feeds it.

    Args:
        path: The version folder, e.g. ``models/penguins/3``.
        version: The version number.
        inter_op_threads: TF Serving's ``--tensorflow_inter_op_parallelism``: 0 lets
            TensorFlow choose, -1 runs the graph's ops in the calling thread.
        intra_op_threads: TF Serving's ``--tensorflow_intra_op_parallelism`` (0: TensorFlow
            chooses).
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        version: int,
        *,
        inter_op_threads: int = 0,
        intra_op_threads: int = 0,
    ) -> None:
        self.path = pathlib.Path(path)
        self.version = version
        self._graph = tf.Graph()
        session_config = config_pb2.ConfigProto(
            allow_soft_placement=True,
            inter_op_parallelism_threads=inter_op_threads,
            intra_op_parallelism_threads=intra_op_threads,
        )
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
        try:
            with self._graph.as_default(), _compat.deprecation_notices_hidden():
                meta_graph = tf.compat.v1.saved_model.loader.load(
                    self._session, [tf.saved_model.SERVING], str(self.path)
                )
        except Exception:
            self._session.close()
            raise
        self._graph.finalize()  # a served graph never grows; finalize makes that a guarantee
        self.signature_defs = {
            key: sig
            for key, sig in meta_graph.signature_def.items()
            if key != _INIT_OP_SIGNATURE
        }
        self.signatures = {key: _signature(key, sig) for key, sig in self.signature_defs.items()}
        self._input_names = _input_names(self.signatures.values())
        # TF Serving's metadata JSON for these signatures, built once rather than per request.
        self.signature_defs_json = {
            key: json_format.MessageToDict(
                sig, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
            )
            for key, sig in self.signature_defs.items()
        }
        self._callables: dict[tuple, object] = {}
        # Whatever a request needs that depends only on this version and the call's
        # signature, inputs and outputs, worked out by its first request (see inference.py).
        self.plans: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._retired = False

    def signature(self, name: str) -> Signature:
        """Returns the named signature (``serving_default`` when empty).

        Raises:
            InvalidArgument: No such signature in this model.
        """
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise InvalidArgument(
                f'Serving signature name: "{key}" not found in signature def'
            ) from None

    def call(
        self, feed_names: tuple[str, ...], fetches: tuple[str, ...], values: Iterable[np.ndarray]
    ) -> list[np.ndarray]:
        """Runs the graph: feeds by graph tensor name, in order, and the fetches' values.

        Args:
            feed_names: Graph tensor names to feed (e.g. ``("x:0",)``).
            fetches: Graph tensor names to return, in order.
            values: One array per name in ``feed_names``, in that order.

        Returns:
            The fetched values, in the order of ``fetches``.

        Raises:
            ServingError: The run failed; the code is TensorFlow's.
        """
        fn = self._callables.get((feed_names, fetches))
        if fn is None:
            fn = self._make_callable(feed_names, fetches)
        try:
            return fn(*values)
        except tf.errors.OpError as exc:
            fed = [(name, self._input_names.get(name, "?")) for name in feed_names]
            raise from_tf_error(exc, fed) from None

    def _make_callable(self, feed_names: tuple[str, ...], fetches: tuple[str, ...]):
        with self._lock:
            try:
                fn = _compat.make_callable(self._session, feed_names, fetches)
            except (tf.errors.OpError, ValueError, KeyError) as exc:
                raise InvalidArgument(f"Cannot run signature: {client_message(str(exc))}") from None
            self._callables[(feed_names, tuple(fetches))] = fn
        return fn

    def acquire(self) -> bool:
        """Marks one request in flight; False if the version was already retired."""
        with self._lock:
            if self._retired:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Ends one request; closes the session if the version was retired meanwhile."""
        with self._lock:
            self._in_flight -= 1
            close = self._retired and self._in_flight == 0
        if close:
            self._close()

    def retire(self) -> None:
        """Stops new requests and closes the session once the last one finishes."""
        with self._lock:
            self._retired = True
            close = self._in_flight == 0
        if close:
            self._close()

    def _close(self) -> None:
        self._callables.clear()
        self.plans.clear()
        self._session.close()
        logger.info("Unloaded %s version %d", self.path.parent.name, self.version)


def _signature(name: str, sig: meta_graph_pb2.SignatureDef) -> Signature:
    return Signature(
        name=name,
        method_name=sig.method_name,
        inputs={alias: _spec(alias, sig.inputs[alias]) for alias in sorted(sig.inputs)},
        outputs={alias: _spec(alias, sig.outputs[alias]) for alias in sorted(sig.outputs)},
    )


def _input_names(signatures: Iterable[Signature]) -> dict[str, str]:
    """Graph tensor name → the input name(s) clients use for it, for error messages."""
    aliases: dict[str, set[str]] = {}
    for signature in signatures:
        for spec in signature.inputs.values():
            aliases.setdefault(spec.tensor_name, set()).add(spec.alias)
    # Quoted by the message as 'x' or 'inputs' when signatures name one tensor differently.
    return {name: "' or '".join(sorted(known)) for name, known in aliases.items()}
