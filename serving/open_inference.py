"""The Open Inference Protocol (KServe V2) over the inference core, without Flask.

Health, server and model metadata, and ``infer`` with JSON tensors and the
binary tensor extension: the request JSON may be followed by raw tensor bytes
(``Inference-Header-Content-Length`` gives the JSON's length; each binary input
carries ``parameters.binary_data_size``), and outputs asked for with
``parameters.binary_data`` (or the request's ``binary_data_output``) come back
the same way. Inputs and outputs are a signature's (``serving_default`` unless
the request's ``parameters.signature_name`` names another); shapes include the
batch dimension, so requests go through the same batcher as ``:predict``.

Triton's extensions that its clients call are answered as Triton answers them
(its messages and status codes too): model configuration, the repository index
(load and unload are refused, as Triton refuses them when it polls its
repository), and per-version statistics counted by the inference core.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import struct
import weakref
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
from tensorflow.core.framework import tensor_shape_pb2

from serving import json_codec
from serving.errors import (
    InvalidArgument,
    NotFound,
    ServingError,
    Unimplemented,
)
from serving.inference import InferenceCore
from serving.repository import VersionStatus
from serving.servable import DEFAULT_SIGNATURE, Servable, TensorSpec

SERVER_NAME = "tfkit"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
PLATFORM = "tensorflow_savedmodel"
BACKEND = "tensorflow"
# TF Serving's dtype names → the protocol's tensor data types.
DATATYPES = {
    "DT_BOOL": "BOOL",
    "DT_UINT8": "UINT8",
    "DT_UINT16": "UINT16",
    "DT_UINT32": "UINT32",
    "DT_UINT64": "UINT64",
    "DT_INT8": "INT8",
    "DT_INT16": "INT16",
    "DT_INT32": "INT32",
    "DT_INT64": "INT64",
    "DT_HALF": "FP16",
    "DT_BFLOAT16": "BF16",
    "DT_FLOAT": "FP32",
    "DT_DOUBLE": "FP64",
    "DT_STRING": "BYTES",
}
# Triton's repository index states, by TF Serving's version states.
_INDEX_STATES = {"AVAILABLE": "READY", "END": "UNAVAILABLE"}
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary data
# JSON number kinds numpy may infer, by the kind of dtype they may feed.
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iuf"}


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """A signature input or output as the protocol describes it."""

    spec: TensorSpec
    datatype: str
    shape: list[int]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.spec.alias, "datatype": self.datatype, "shape": self.shape}


@dataclasses.dataclass(frozen=True)
class _Table:
    """A signature's protocol tensors, built once per loaded version."""

    inputs: dict[str, _Tensor]
    outputs: dict[str, _Tensor]


@dataclasses.dataclass(frozen=True)
class InferResponse:
    """An ``infer`` answer: the body and, when binary tensors follow the JSON, its length."""

    body: bytes
    header_length: int | None = None


class Conflict(ServingError):
    """The request conflicts with how the server is run (HTTP 409)."""

    code = "ABORTED"


class Unavailable(ServingError):
    """Triton's answer to load and unload requests, and for a version that failed to load."""

    code = "UNAVAILABLE"


class OpenInference:
    """Answers the Open Inference Protocol from the same models and batcher as TF Serving's API.

    Args:
        core: The TF Serving inference core (repository, metrics, batcher).

    Example:
        >>> v2 = OpenInference(core)                                # doctest: +SKIP
        >>> v2.infer("mlp", None, b'{"inputs": [...]}').body        # doctest: +SKIP
    """

    def __init__(self, core: InferenceCore) -> None:
        self.core = core
        self._tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        try:
            version = importlib.metadata.version("tfkit")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self._server_metadata = json_codec.dumps(
            {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}
        )

    def server_metadata(self) -> bytes:
        """``GET /v2``."""
        return self._server_metadata

    def server_ready(self) -> bool:
        """``GET /v2/health/ready``: there are models, and each has a version being served."""
        return self.core.repository.ready()

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """``GET /v2/models/{name}[/versions/{v}]/ready``.

        Raises:
            NotFound: No such model.
        """
        number = self.core._version(name, version, None)  # noqa: SLF001 - shared parsing
        self.core.repository.status(name)  # raises NotFound for an unknown model
        return bool(self._available(name, number))

    def model_metadata(self, name: str, version: str | None = None) -> bytes:
        """``GET /v2/models/{name}[/versions/{v}]``: the default signature's tensors."""

        def answer() -> bytes:
            number = self.core._version(name, version, None)  # noqa: SLF001
            with self.core.repository.servable(name, number) as servable:
                table = self._table(servable, DEFAULT_SIGNATURE)
                return json_codec.dumps({
                    "name": name,
                    "versions": [str(v) for v in sorted(self._available(name))],
                    "platform": PLATFORM,
                    "inputs": [t.metadata() for t in table.inputs.values()],
                    "outputs": [t.metadata() for t in table.outputs.values()],
                })

        return self.core._observed(name, "metadata", answer)  # noqa: SLF001

    def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None = None
    ) -> InferResponse:
        """``POST /v2/models/{name}[/versions/{v}]/infer``.

        Args:
            name: Model name.
            version: Version number as text, or None for the latest.
            body: The request body: JSON, then binary tensor data if ``header_length``.
            header_length: ``Inference-Header-Content-Length``: bytes of JSON at the start.

        Raises:
            ServingError: A malformed request, an unknown model, or a failed run.
        """

        def answer() -> InferResponse:
            doc, binary = _split_body(body, header_length)
            if not isinstance(doc.get("id", ""), str):
                raise InvalidArgument("'id' must be a string")
            parameters = _parameters(doc.get("parameters"), "parameters")
            signature_name = parameters.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise InvalidArgument("parameters.signature_name must be a string")
            number = self.core._version(name, version, None)  # noqa: SLF001
            with self.core.servable(name, number) as servable:
                signature = servable.signature(signature_name)
                table = self._table(servable, signature.name)
                arrays = _decode_inputs(doc, table, binary, name)
                wanted = _requested_outputs(doc, table, parameters, name)
                outputs = self.core.run(name, servable, signature, arrays, list(wanted))
                return _encode(doc, name, servable.version, table, outputs, wanted)

        return self.core._observed(name, "infer", answer, infer=True)  # noqa: SLF001

    def model_config(self, name: str, version: str | None = None) -> bytes:
        """``GET /v2/models/{name}[/versions/{v}]/config``: Triton's ``ModelConfig`` as JSON.

        ``max_batch_size`` is 0, so ``dims`` are the default signature's whole shapes
        (batch dimension included), as in the model metadata.

        Raises:
            ServingError: Triton's errors for an unknown model or a version not served.
        """
        number = self.core._version(name, version, None)  # noqa: SLF001
        try:
            with self.core.repository.servable(name, number) as servable:
                table = self._table(servable, DEFAULT_SIGNATURE)
        except NotFound:
            raise self._not_served(name, number) from None
        return json_codec.dumps({
            "name": name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "max_batch_size": 0,
            "input": [{"name": t.spec.alias, "data_type": _config_type(t.datatype),
                       "format": "FORMAT_NONE", "dims": t.shape}
                      for t in table.inputs.values()],
            "output": [{"name": t.spec.alias, "data_type": _config_type(t.datatype),
                        "dims": t.shape, "label_filename": ""}
                       for t in table.outputs.values()],
        })

    def repository_index(self, body: bytes) -> bytes:
        """``POST /v2/repository/index``: every model's versions and their states.

        Args:
            body: Empty, or ``{"ready": true}`` for only the versions being served.
        """
        ready_only = False
        if body.strip():
            ready_only = _object(json_codec.parse_body(body), "the index request").get(
                "ready", False)
            if not isinstance(ready_only, bool):
                raise InvalidArgument("Invalid value for 'ready': expected a boolean")
        index = []
        for name in self.core.repository.names():
            states = self._states(name)  # none: configured, but no version folder yet
            if not states and not ready_only:
                index.append({"name": name})
            for status in sorted(states, key=lambda s: s.version):
                entry = {"name": name, "version": str(status.version),
                         "state": _INDEX_STATES.get(status.state, "UNAVAILABLE")}
                if status.error_message:
                    entry["reason"] = status.error_message
                if entry["state"] == "READY" or not ready_only:
                    index.append(entry)
        return json_codec.dumps(index)

    def model_control(self) -> NoReturn:
        """``POST /v2/repository/models/{name}/(load|unload)``: refused with Triton's words for
        a server that polls its repository; this server follows its repository by itself.

        A 409 (the request conflicts with how the repository is run), not Triton's 503:
        the refusal is permanent, and 503 tells clients and load balancers to retry later.

        Raises:
            Conflict: Always.
        """
        raise Conflict(
            "explicit model load / unload is not allowed if polling is enabled"
        )

    def statistics(self, name: str | None = None, version: str | None = None) -> bytes:
        """``GET /v2/models[/{name}[/versions/{v}]]/stats``: each served version's statistics.

        Raises:
            InvalidArgument: The model, or that version of it, is not being served.
        """
        if name is None:
            served = {model: self._available(model) for model in self.core.repository.names()}
        else:
            number = self.core._version(name, version, None)  # noqa: SLF001
            versions = self._available(name)
            if not versions:
                raise InvalidArgument(f"requested model '{name}' is not available")
            if number is not None and number not in versions:
                raise InvalidArgument(
                    f"requested model version is not available for model '{name}'"
                )
            served = {name: versions if number is None else {number}}
        stats = []
        for model, versions in served.items():
            for number in sorted(versions):
                try:
                    with self.core.repository.servable(model, number) as servable:
                        numbers = self.core.statistics(servable).as_json()
                except NotFound:  # unloaded since it was listed
                    continue
                stats.append({"name": model, "version": str(number), **numbers})
        return json_codec.dumps({"model_stats": stats})

    def _not_served(self, name: str, number: int | None) -> ServingError:
        """Triton's error for a model, or a version of it, that is not being served."""
        if name not in self.core.repository.names():
            return InvalidArgument(f"Request for unknown model: '{name}' is not found")
        if number is None:
            return NotFound(f"Request for unknown model: '{name}' has no available versions")
        if number in {s.version for s in self._states(name)}:  # it failed to load
            return Unavailable(
                f"Request for unknown model: '{name}' version {number} is not at ready state"
            )
        return NotFound(f"Request for unknown model: '{name}' version {number} is not found")

    def _states(self, name: str, version: int | None = None) -> list[VersionStatus]:
        try:
            return self.core.repository.status(name, version)
        except NotFound:
            return []

    def _available(self, name: str, version: int | None = None) -> set[int]:
        return {s.version for s in self._states(name, version) if s.state == "AVAILABLE"}

    def _table(self, servable: Servable, signature_name: str) -> _Table:
        tables = self._tables.get(servable)
        if tables is None:
            tables = self._tables.setdefault(servable, {})
        table = tables.get(signature_name)
        if table is None:
            signature = servable.signature(signature_name)
            proto = servable.signature_defs[signature.name]
            table = tables[signature_name] = _Table(
                inputs={a: _tensor(s, proto.inputs[a].tensor_shape)
                        for a, s in signature.inputs.items()},
                outputs={a: _tensor(s, proto.outputs[a].tensor_shape)
                         for a, s in signature.outputs.items()},
            )
        return table


def _config_type(datatype: str) -> str:
    """A protocol datatype as a Triton model configuration's ``data_type``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _tensor(spec: TensorSpec, shape: tensor_shape_pb2.TensorShapeProto) -> _Tensor:
    datatype = DATATYPES.get(spec.dtype, spec.dtype.removeprefix("DT_"))
    dims = [-1] if shape.unknown_rank else [int(d.size) for d in shape.dim]
    return _Tensor(spec, datatype, dims)


def _split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        return json_codec.parse_body(body), memoryview(b"")
    if not 0 < header_length <= len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length {header_length} is outside the "
            f"{len(body)}-byte body"
        )
    view = memoryview(body)
    return json_codec.parse_body(bytes(view[:header_length])), view[header_length:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _parameters(value: Any, what: str) -> dict[str, Any]:
    """A ``parameters`` member: an object, or absent/null for none."""
    return {} if value is None else _object(value, what)


def _decode_inputs(
    doc: Mapping[str, Any], table: _Table, binary: memoryview, model: str
) -> dict[str, np.ndarray]:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("'inputs' must be a non-empty list of input tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in inputs:
        item = _object(item, "each input")
        name = item.get("name")
        tensor = table.inputs.get(name) if isinstance(name, str) else None
        if tensor is None:
            raise InvalidArgument(
                f"unexpected inference input '{name}' for model '{model}'; its inputs are: "
                f"{json_codec.input_names(table.inputs)}"
            )
        if name in arrays:
            raise InvalidArgument(f"input '{name}' is given more than once")
        if item.get("datatype") != tensor.datatype:
            raise InvalidArgument(
                f"unexpected datatype {item.get('datatype')} for inference input '{name}', "
                f"expecting {tensor.datatype}"
            )
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise InvalidArgument(f"input '{name}': shape must be a list of non-negative ints")
        parameters = _parameters(item.get("parameters"), f"input '{name}' parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidArgument(
                    f"input '{name}': binary_data_size {size} is beyond the request's "
                    f"{len(binary)} bytes of binary data"
                )
            arrays[name] = _from_binary(binary[offset:offset + size], tensor, shape)
            offset += size
        elif "data" in item:
            arrays[name] = _from_json(item["data"], tensor, shape)
        else:
            raise InvalidArgument(f"input '{name}' has neither data nor binary_data_size")
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data follow the inputs; expected none"
        )
    if len(arrays) != len(table.inputs):
        missing = sorted(set(table.inputs) - set(arrays))
        raise InvalidArgument(
            f"expected {len(table.inputs)} inputs but got {len(arrays)} inputs for model "
            f"'{model}'; missing {missing}"
        )
    return arrays


def _from_binary(data: memoryview, tensor: _Tensor, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    name = tensor.spec.alias
    if tensor.datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            if offset + 4 > len(data):
                raise InvalidArgument(f"input '{name}': truncated BYTES element length")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += 4
            if offset + length > len(data):
                raise InvalidArgument(f"input '{name}': truncated BYTES element")
            items.append(bytes(data[offset:offset + length]))
            offset += length
        if len(items) != count:
            raise InvalidArgument(
                f"input '{name}': {len(items)} BYTES elements for shape {shape}"
            )
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = tensor.spec.np_dtype.newbyteorder("<")
    if len(data) != count * dtype.itemsize:
        raise InvalidArgument(
            f"input '{name}': {len(data)} bytes of binary data, expected "
            f"{count * dtype.itemsize} for shape {shape} of {tensor.datatype}"
        )
    return np.frombuffer(data, dtype=dtype).astype(tensor.spec.np_dtype, copy=False).reshape(shape)


def _from_json(data: Any, tensor: _Tensor, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    name = tensor.spec.alias
    if tensor.datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise InvalidArgument(f"input '{name}': BYTES data must be strings")
        array = np.empty(len(flat), dtype=object)
        array[:] = [v.encode() for v in flat]
    else:
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):
            raise InvalidArgument(f"input '{name}': data is ragged or not numbers") from None
        if array.size and array.dtype.kind not in _JSON_KINDS.get(tensor.spec.np_dtype.kind, "iuf"):
            raise InvalidArgument(
                f"input '{name}': data of JSON type {array.dtype.kind!r} does not fit "
                f"{tensor.datatype}"
            )
        array = array.astype(tensor.spec.np_dtype, copy=False)
    if array.size != count:
        raise InvalidArgument(
            f"input '{name}': {array.size} elements of data for shape {shape} ({count})"
        )
    return array.reshape(shape)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else (item,))
    return flat


def _requested_outputs(
    doc: Mapping[str, Any], table: _Table, parameters: Mapping[str, Any], model: str
) -> dict[str, bool]:
    """Output alias → whether it goes back as binary data, in the order asked for."""
    default_binary = parameters.get("binary_data_output", False) is True
    requested = doc.get("outputs")
    if requested is None:
        return {alias: default_binary for alias in table.outputs}
    if not isinstance(requested, list):
        raise InvalidArgument("'outputs' must be a list")
    wanted: dict[str, bool] = {}
    for item in requested:
        item = _object(item, "each requested output")
        name = item.get("name")
        if not isinstance(name, str) or name not in table.outputs:
            raise InvalidArgument(f"unexpected inference output '{name}' for model '{model}'")
        options = _parameters(item.get("parameters"), f"output '{name}' parameters")
        if "classification" in options:
            raise Unimplemented("the classification extension is not supported")
        wanted[name] = options.get("binary_data", default_binary) is True
    return wanted or {alias: default_binary for alias in table.outputs}


def _encode(
    doc: Mapping[str, Any],
    model: str,
    version: int,
    table: _Table,
    outputs: Mapping[str, np.ndarray],
    wanted: Mapping[str, bool],
) -> InferResponse:
    answer: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if "id" in doc:
        answer["id"] = doc["id"]
    entries, chunks, in_json = [], [], {}
    for alias, binary in wanted.items():
        array = outputs[alias]
        datatype = table.outputs[alias].datatype
        entry: dict[str, Any] = {"name": alias, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _to_json(array, datatype)
            in_json[alias] = array
        entries.append(entry)
    answer["outputs"] = entries
    header = json_codec.dumps_outputs(answer, in_json)
    if not chunks:
        return InferResponse(header)
    return InferResponse(header + b"".join(chunks), len(header))


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.ravel():
            value = value if isinstance(value, bytes) else str(value).encode()
            parts += (_LENGTH.pack(len(value)), value)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in array.ravel()]
    if array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)  # orjson writes only float32/float64 arrays
    return np.ascontiguousarray(array).ravel()
