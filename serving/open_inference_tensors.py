"""The Open Inference Protocol's tensors: datatypes, and JSON and binary tensor data ↔ numpy."""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_shape_pb2

from serving import json_codec
from serving.errors import InvalidArgument, Unimplemented
from serving.servable import TensorSpec

PLATFORM = "tensorflow_savedmodel"
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
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary data
# JSON number kinds numpy may infer, by the kind of dtype they may feed.
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iuf"}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A signature input or output as the protocol describes it."""

    spec: TensorSpec
    datatype: str
    shape: list[int]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.spec.alias, "datatype": self.datatype, "shape": self.shape}


@dataclasses.dataclass(frozen=True)
class Table:
    """A signature's protocol tensors, built once per loaded version."""

    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]


@dataclasses.dataclass(frozen=True)
class InferResponse:
    """An ``infer`` answer: the body and, when binary tensors follow the JSON, its length."""

    body: bytes
    header_length: int | None = None


def protocol_tensor(spec: TensorSpec, shape: tensor_shape_pb2.TensorShapeProto) -> Tensor:
    datatype = DATATYPES.get(spec.dtype, spec.dtype.removeprefix("DT_"))
    dims = [-1] if shape.unknown_rank else [int(d.size) for d in shape.dim]
    return Tensor(spec, datatype, dims)


def split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        return json_codec.parse_body(body), memoryview(b"")
    if not 0 < header_length <= len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length {header_length} is outside the "
            f"{len(body)}-byte body"
        )
    view = memoryview(body)
    return json_codec.parse_body(bytes(view[:header_length])), view[header_length:]


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def parameters_of(value: Any, what: str) -> dict[str, Any]:
    """A ``parameters`` member: an object, or absent/null for none."""
    return {} if value is None else json_object(value, what)


def decode_inputs(
    doc: Mapping[str, Any], table: Table, binary: memoryview, model: str
) -> dict[str, np.ndarray]:
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("'inputs' must be a non-empty list of input tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in inputs:
        item = json_object(item, "each input")
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
        parameters = parameters_of(item.get("parameters"), f"input '{name}' parameters")
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


def _from_binary(data: memoryview, tensor: Tensor, shape: list[int]) -> np.ndarray:
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


def _from_json(data: Any, tensor: Tensor, shape: list[int]) -> np.ndarray:
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


def requested_outputs(
    doc: Mapping[str, Any], table: Table, parameters: Mapping[str, Any], model: str
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
        item = json_object(item, "each requested output")
        name = item.get("name")
        if not isinstance(name, str) or name not in table.outputs:
            raise InvalidArgument(f"unexpected inference output '{name}' for model '{model}'")
        options = parameters_of(item.get("parameters"), f"output '{name}' parameters")
        if "classification" in options:
            raise Unimplemented("the classification extension is not supported")
        wanted[name] = options.get("binary_data", default_binary) is True
    return wanted or {alias: default_binary for alias in table.outputs}


def encode_outputs(
    doc: Mapping[str, Any],
    model: str,
    version: int,
    table: Table,
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
