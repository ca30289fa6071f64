"""TensorFlow's ``TensorProto`` and the Open Inference Protocol's typed contents ↔ numpy arrays."""

from __future__ import annotations

import functools
import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import InvalidArgument

# TensorProto dtype → (numpy dtype, the repeated field holding its values when not packed
# into tensor_content). DT_HALF's values are its bit patterns in half_val.
_TF_TYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_NP_TYPES = {dtype: code for code, (dtype, _) in _TF_TYPES.items()}

# The protocol's datatype → (numpy dtype, its InferTensorContents field); FP16 and BF16
# travel only as raw bytes.
V2_TYPES: dict[str, tuple[np.dtype, str | None]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "INT8": (np.dtype(np.int8), "int_contents"),
    "INT16": (np.dtype(np.int16), "int_contents"),
    "INT32": (np.dtype(np.int32), "int_contents"),
    "INT64": (np.dtype(np.int64), "int64_contents"),
    "UINT8": (np.dtype(np.uint8), "uint_contents"),
    "UINT16": (np.dtype(np.uint16), "uint_contents"),
    "UINT32": (np.dtype(np.uint32), "uint_contents"),
    "UINT64": (np.dtype(np.uint64), "uint64_contents"),
    "FP16": (np.dtype(np.float16), None),
    "FP32": (np.dtype(np.float32), "fp32_contents"),
    "FP64": (np.dtype(np.float64), "fp64_contents"),
    "BYTES": (np.dtype(object), "bytes_contents"),
}


def to_array(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """A request's ``TensorProto`` as a numpy array, read as TensorFlow reads it.

    Values come from ``tensor_content`` when it is set, else from the dtype's repeated
    field, where fewer values than the shape holds repeat the last one (one value
    fills the tensor; none gives zeros), as ``tensor.FromProto`` does.

    Raises:
        InvalidArgument: An unsupported dtype, or values that do not fit the shape.
    """
    known = _TF_TYPES.get(proto.dtype)
    if known is None:
        raise InvalidArgument(
            f"Input '{alias}': dtype {types_pb2.DataType.Name(proto.dtype)} is not supported"
            if proto.dtype in types_pb2.DataType.values()
            else f"Input '{alias}': unknown dtype {proto.dtype}"
        )
    dtype, field = known
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"Input '{alias}': shape {shape} has a negative dimension")
    count = math.prod(shape)
    if proto.tensor_content and dtype.kind != "O":
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise InvalidArgument(
                f"Input '{alias}': tensor_content holds {len(content)} bytes; shape {shape} of "
                f"{types_pb2.DataType.Name(proto.dtype)} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    values = getattr(proto, field)
    if dtype.kind == "O":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    elif field == "half_val":
        array = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(list(values), dtype=dtype)
    if len(array) == count:
        return array.reshape(shape)
    if len(array) > count:
        raise InvalidArgument(
            f"Input '{alias}': {len(array)} values do not fit shape {shape} ({count} values)"
        )
    filled = np.full(count, b"" if dtype.kind == "O" else 0, dtype=dtype)
    filled[:len(array)] = array
    if len(array):
        filled[len(array):] = array[-1]
    return filled.reshape(shape)


def to_proto(array: np.ndarray, proto: tensor_pb2.TensorProto | None = None
             ) -> tensor_pb2.TensorProto:
    """An answer's array as a ``TensorProto`` (written into ``proto`` when given, e.g. a
    response's map entry), its values in the dtype's repeated field (``float_val``,
    ``string_val``, ...), as TF Serving's ``Predict`` answers by default (``AsProtoField``).
    """
    proto = tensor_pb2.TensorProto() if proto is None else proto
    dtype = array.dtype
    if dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()
        )
    else:
        code = _NP_TYPES.get(dtype) or _NP_TYPES.get(dtype.newbyteorder("="))
        if code is None:
            raise InvalidArgument(f"The model answered with an unsupported dtype {dtype}")
        proto.dtype = code
        field = _TF_TYPES[code][1]
        flat = array.ravel()
        if field == "half_val":
            flat = flat.view(np.uint16)
        getattr(proto, field).extend(flat.tolist())
    proto.tensor_shape.CopyFrom(_shape(array.shape))
    return proto


@functools.lru_cache(maxsize=256)
def _shape(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    # One copy of a ready message costs less than adding its dimensions one by one.
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape])


def v2_contents_bytes(contents, datatype: str, name: str) -> bytes:
    """A V2 input's typed ``contents`` as the raw bytes ``raw_input_contents`` would carry.

    Raises:
        InvalidArgument: The datatype is unknown or has no typed contents field.
    """
    known = V2_TYPES.get(datatype)
    if known is None or known[1] is None:
        raise InvalidArgument(
            f"input '{name}': datatype {datatype} cannot be sent as typed contents; "
            "send it in raw_input_contents"
        )
    dtype, field = known
    values = getattr(contents, field)
    if dtype.kind == "O":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    return np.asarray(values, dtype=dtype.newbyteorder("<")).tobytes()


def fill_v2_contents(contents, raw: bytes, datatype: str) -> bool:
    """Writes raw output bytes into typed ``contents``; False when the datatype has no field."""
    known = V2_TYPES.get(datatype)
    if known is None or known[1] is None:
        return False
    dtype, field = known
    if dtype.kind == "O":
        values, offset = [], 0
        while offset < len(raw):
            length = int.from_bytes(raw[offset:offset + 4], "little")
            values.append(raw[offset + 4:offset + 4 + length])
            offset += 4 + length
    else:
        values = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).tolist()
    getattr(contents, field).extend(values)
    return True
