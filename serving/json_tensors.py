"""JSON values ↔ numpy arrays for a signature's tensors, and the values quoted in error texts."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from serving.errors import InvalidArgument
from serving.servable import TensorSpec

B64 = "b64"
# Number kinds numpy may infer for a nested list, by the dtype family they may feed.
_ACCEPTED_KINDS = {"f": "iuf", "c": "iuf", "i": "iu", "u": "iu", "b": "b"}
_ERROR_VALUE_CHARS = 200


def input_names(names: Iterable[str]) -> str:
    """A signature's input names for an error message, quoted: they may hold spaces and commas.

    Example:
        >>> input_names(["price/sqft", "Lot Area"])
        '["Lot Area", "price/sqft"]'
    """
    return json.dumps(sorted(names), ensure_ascii=False)


def to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """Converts a (nested) JSON value to an array of the input's dtype.

    Numbers take numpy's fast path; anything numpy cannot take directly (ragged
    lists, wrong types) is walked to produce TF Serving's error text.

    Raises:
        InvalidArgument: The value is ragged or of the wrong JSON type.
    """
    if spec.np_dtype.kind == "O":
        return _string_array(value, spec)
    accepted = _ACCEPTED_KINDS.get(spec.np_dtype.kind, "")
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        array = None
    if array is not None and array.dtype.kind in accepted:
        if spec.np_dtype.kind in "iu" and array.size:
            limits = np.iinfo(spec.np_dtype)
            if array.min() < limits.min or array.max() > limits.max:
                raise InvalidArgument(
                    f"JSON Value: {short(value)} is out of range for {spec.dtype}"
                )
        return _cast(array, spec)
    _walk(value, _dense_shape(value), 0, lambda leaf: _check_leaf(leaf, spec))
    raise InvalidArgument(f"JSON Value: {short(value)} cannot be converted to {spec.dtype}")


def _cast(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` as the input's dtype; a finite number too large for it is an error.

    TF Serving refuses 1e39 for a DT_FLOAT input rather than feed infinity.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        result = array.astype(spec.np_dtype, copy=False)
        # A finite sum rules out an infinity in one pass; only when there may be one
        # (or the sum itself overflowed) is each value compared with its source.
        suspect = (
            result.dtype.kind == "f" and result is not array and result.size
            and not math.isfinite(np.add.reduce(result, axis=None))
        )
    if suspect:
        overflowed = np.isinf(result) & ~np.isinf(array)
        if overflowed.any():
            first = array.flat[int(np.argmax(overflowed))]
            target = "double" if spec.np_dtype == np.float64 else "float"
            raise InvalidArgument(
                f"Cannot convert JSON value: {first.item()!r} to {target} without loss of "
                "precision."
            )
    return result


def _string_array(value: Any, spec: TensorSpec) -> np.ndarray:
    shape = _dense_shape(value)
    flat: list[bytes] = []

    def add(leaf: Any) -> None:
        if isinstance(leaf, str):
            flat.append(leaf.encode())
        elif is_b64(leaf):
            flat.append(b64decode(leaf))
        elif isinstance(leaf, dict):
            raise InvalidArgument(
                f"JSON Value: {short(leaf)} not formatted correctly for base64 data"
            )
        else:
            raise _type_error(leaf, spec.dtype)

    _walk(value, shape, 0, add)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _dense_shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _walk(value: Any, shape: tuple[int, ...], level: int, leaf_fn) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise InvalidArgument(
                f"JSON Value: {short(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)}"
            )
        leaf_fn(value)
        return
    if level >= len(shape):
        raise InvalidArgument(
            f"Encountered list at unexpected level: {level} expected < {len(shape)}"
        )
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _walk(item, shape, level + 1, leaf_fn)


def _check_leaf(leaf: Any, spec: TensorSpec) -> None:
    kind = spec.np_dtype.kind
    is_bool = isinstance(leaf, bool)
    ok = (
        (kind == "b" and is_bool)
        or (kind in "fc" and isinstance(leaf, (int, float)) and not is_bool)
        or (kind in "iu" and isinstance(leaf, int) and not is_bool)
    )
    if not ok:
        raise _type_error(leaf, spec.dtype)


def _type_error(value: Any, dtype: str) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {short(value)} Type: {json_type(value)} is not of expected type: {dtype}"
    )


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def is_object(value: Any) -> bool:
    """A JSON object that is not a ``{"b64": ...}`` value."""
    return isinstance(value, dict) and not is_b64(value)


def b64decode(value: dict) -> bytes:
    try:
        return base64.b64decode(value[B64], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 3)`` → ``"[1,3]"``, as TF Serving writes shapes in its errors."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def short_text(text: str) -> str:
    return text if len(text) <= _ERROR_VALUE_CHARS else text[:_ERROR_VALUE_CHARS] + "..."


def short(value: Any) -> str:
    # Only the first _ERROR_VALUE_CHARS characters are shown, so only about as many
    # values are copied: an error about a 64 MiB request stays cheap to write.
    try:
        text = json.dumps(_preview(value, [_ERROR_VALUE_CHARS]), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return short_text(text)


def _preview(value: Any, budget: list[int]) -> Any:
    """A copy of ``value`` with at most ``budget[0]`` values in it (the rest cut off)."""
    budget[0] -= 1
    if isinstance(value, list):
        items = []
        for item in value:
            if budget[0] <= 0:
                items.append("...")
                break
            items.append(_preview(item, budget))
        return items
    if isinstance(value, dict):
        entries = {}
        for key, item in value.items():
            if budget[0] <= 0:
                entries["..."] = "..."
                break
            entries[key] = _preview(item, budget)
        return entries
    if isinstance(value, str) and len(value) > _ERROR_VALUE_CHARS:
        return value[:_ERROR_VALUE_CHARS]
    return value
