"""TF Serving's REST JSON ↔ numpy: answers encoded here, requests decoded in json_requests."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidArgument
from serving.json_requests import (  # noqa: F401 - the codec's one import for its callers
    RequestFormat,
    batch_rows,
    decode_predict,
    examples_from_json,
    parse_body,
    signature_name,
)
from serving.json_tensors import B64, input_names, shape_text, to_array  # noqa: F401

_BYTES_SUFFIX = "_bytes"


def encode_predict(outputs: Mapping[str, np.ndarray], fmt: RequestFormat) -> bytes:
    """Encodes predict outputs as ``{"predictions": ...}`` or ``{"outputs": ...}``.

    Raises:
        InvalidArgument: Row format with an output that has no batch dimension or a
            batch size that differs from the others.
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    columns = {name: _jsonable(name, array) for name, array in outputs.items()}
    if fmt is RequestFormat.COLUMNAR:
        body = next(iter(columns.values())) if len(columns) == 1 else columns
        return dumps_outputs({"outputs": body}, outputs)
    batch = -1
    for name, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(columns) == 1:
        rows = next(iter(columns.values()))
    else:
        names = list(columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return dumps_outputs({"predictions": rows}, outputs)


def _jsonable(name: str, array: np.ndarray) -> Any:
    """What orjson can write for an output: numeric arrays stay arrays, strings become lists."""
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = name.endswith(_BYTES_SUFFIX)
        flat = [
            {B64: base64.b64encode(v).decode()} if as_b64 else _text(v) for v in array.ravel()
        ]
        if array.ndim <= 1:
            return flat[0] if array.ndim == 0 else flat
        listed = np.empty(len(flat), dtype=object)
        listed[:] = flat
        return listed.reshape(array.shape).tolist()
    if array.dtype.kind == "f" and array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)  # orjson writes only float32/float64 arrays
    return np.ascontiguousarray(array)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _all_finite(outputs: Mapping[str, np.ndarray]) -> bool:
    return all(
        array.dtype.kind != "f" or bool(np.isfinite(array).all()) for array in outputs.values()
    )


def dumps_outputs(doc: Any, outputs: Mapping[str, np.ndarray]) -> bytes:
    """``dumps(doc)`` of an answer made from ``outputs``; NaN and infinity as TF Serving has them.

    orjson writes a NaN or infinite float as ``null``, so the outputs are searched
    for one only when the answer has a ``null`` in it.
    """
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in body and not _all_finite(outputs):
        return dumps(doc, finite=False)
    return body


def dumps(doc: Any, finite: bool = True) -> bytes:
    """Encodes an answer; floats keep their shortest round-trip form, as TF Serving writes them.

    Args:
        doc: Dicts, lists, strings, numbers and numpy arrays.
        finite: False when some float is NaN or infinite; those are written as the
            ``NaN``/``Infinity`` tokens TF Serving uses (orjson would write null).
    """
    if finite:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(_plain(doc), allow_nan=True).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind == "f":
            # str() of a float32 is its shortest round-trip text; parsing it back as a
            # Python float keeps that text when json writes it.
            return np.asarray(value).astype(str).astype(np.float64).tolist()
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
