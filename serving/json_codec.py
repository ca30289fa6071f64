"""TF Serving's REST JSON ↔ numpy: request parsing, tensor building, response encoding."""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidArgument
from serving.servable import TensorSpec

_BYTES_SUFFIX = "_bytes"
_B64 = "b64"
# Number kinds numpy may infer for a nested list, by the dtype family they may feed.
_ACCEPTED_KINDS = {"f": "iuf", "c": "iuf", "i": "iu", "u": "iu", "b": "b"}
_ERROR_VALUE_CHARS = 200
# A \uD800-\uDFFF escape: half of a surrogate pair, or a lone (invalid) one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class RequestFormat(enum.Enum):
    """How a predict request laid out its tensors; the answer mirrors it."""

    ROW = "instances"
    COLUMNAR = "inputs"


def parse_body(body: bytes) -> dict[str, Any]:
    """Parses a request body the way TF Serving does (NaN and Infinity allowed).

    Raises:
        InvalidArgument: Empty, malformed, or not a JSON object.
    """
    if not body or not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson rejects the NaN/Infinity tokens TF Serving accepts; the stdlib parser
        # takes them, so it is the (rare, slower) second try. Its number hooks read
        # numbers as orjson and TF Serving's RapidJSON do, which also keeps int() away
        # from a 100,000-digit literal.
        try:
            doc = json.loads(body, parse_int=_json_int, parse_float=_json_float)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"JSON Parse error: {exc}") from None
        except RecursionError:
            raise InvalidArgument("JSON Parse error: the document nests too deeply") from None
        if _SURROGATE_ESCAPE.search(body):
            _check_surrogates(doc)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_short(doc)} Is not object")
    return doc


def _check_surrogates(value: Any) -> None:
    """Rejects a lone UTF-16 surrogate (``"\\ud800"``), as orjson and RapidJSON do.

    The stdlib parser lets one through, and it cannot become UTF-8 bytes later.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidArgument(
                    "JSON Parse error: The surrogate pair in string is invalid."
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _json_int(text: str) -> int | float:
    """An integer literal: int64/uint64 as int, larger as float, as RapidJSON reads it."""
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return _json_float(text)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"Number too big to be stored in double: {_short_text(text)}")
    return value


def batch_rows(doc: Mapping[str, Any]) -> int:
    """The number of rows a request carries, to hold it to a limit before any work.

    Rows are the ``instances`` or ``examples`` items, or the first dimension of
    each columnar ``inputs`` tensor (the largest, when there are several).

    Example:
        >>> batch_rows({"inputs": {"a": [[1], [2]], "b": [3, 4, 5]}})
        3
    """
    rows = 0
    for key in ("instances", "examples"):
        if isinstance(doc.get(key), list):
            rows = max(rows, len(doc[key]))
    inputs = doc.get("inputs")
    columns = inputs.values() if _is_object(inputs) else [inputs]
    for column in columns:
        if isinstance(column, list):
            rows = max(rows, len(column))
    return rows


def signature_name(doc: Mapping[str, Any]) -> str:
    """Returns the request's optional ``signature_name`` ('' when absent)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {_short(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def decode_predict(
    doc: Mapping[str, Any], inputs: Mapping[str, TensorSpec]
) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """Builds input arrays from a predict request in row or columnar format.

    Args:
        doc: The parsed request.
        inputs: The signature's inputs, by alias.

    Returns:
        Arrays by input alias, and the format the answer must use.

    Raises:
        InvalidArgument: The request does not fit TF Serving's format or the signature.
    """
    if not inputs:
        raise InvalidArgument("Failed to get input map for signature")
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise InvalidArgument(
            f"JSON Value: {_short(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_rows:
        return _decode_rows(doc["instances"], inputs, doc), RequestFormat.ROW
    if has_columns:
        return _decode_columns(doc["inputs"], inputs), RequestFormat.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _decode_rows(instances: Any, inputs: Mapping[str, TensorSpec], doc) -> dict:
    if not isinstance(instances, list):
        raise InvalidArgument(
            f"JSON Value: {_short(doc)} Excepting 'instances' to be an list/array"
        )
    if not instances:
        raise InvalidArgument(f"JSON Value: {_short(doc)} No values in 'instances' array")
    if not _is_object(instances[0]):
        if len(inputs) > 1:
            raise InvalidArgument(
                "instances is a plain list, but expecting list of objects as multiple "
                "input tensors required as per tensorinfo_map"
            )
        for i, item in enumerate(instances):
            if _is_object(item):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {i} of input list"
                )
        (spec,) = inputs.values()
        return {spec.alias: _batch(instances, spec, key=None)}
    names = set(inputs)
    for i, item in enumerate(instances):
        if not _is_object(item):
            raise InvalidArgument(f"Expecting object but got list at item {i} of input list")
        if item.keys() != names:
            unknown = sorted(set(item) - names)
            if unknown:
                raise InvalidArgument(
                    f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: JSON object: does not have named input: "
                    f"{unknown[0]}. The inputs are: {input_names(names)}"
                )
            raise InvalidArgument(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{_short(item)} keys must be equal to: {','.join(sorted(names))}"
            )
    return {
        alias: _batch([item[alias] for item in instances], spec, key=alias)
        for alias, spec in inputs.items()
    }


def _decode_columns(value: Any, inputs: Mapping[str, TensorSpec]) -> dict:
    if not _is_object(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        (spec,) = inputs.values()
        return {spec.alias: to_array(value, spec)}
    arrays = {}
    for alias, spec in inputs.items():
        if alias not in value:
            raise InvalidArgument(
                f"Missing named input: {alias} in 'inputs' object. "
                f"The inputs are: {input_names(inputs)}"
            )
        arrays[alias] = to_array(value[alias], spec)
    return arrays


def input_names(names: Iterable[str]) -> str:
    """A signature's input names for an error message, quoted: they may hold spaces and commas.

    Example:
        >>> input_names(["price/sqft", "Lot Area"])
        '["Lot Area", "price/sqft"]'
    """
    return json.dumps(sorted(names), ensure_ascii=False)


def _batch(items: list, spec: TensorSpec, key: str | None) -> np.ndarray:
    """Stacks one input's per-row values into a batch, with TF Serving's row errors."""
    try:
        return to_array(items, spec)
    except InvalidArgument:
        pass  # find which row is at fault, to say so
    where = " key: " + key if key is not None else ""
    first = None
    for i, item in enumerate(items):
        try:
            array = to_array(item, spec)
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"Failed to process element: {i}{where} of 'instances' list. "
                f"Error: INVALID_ARGUMENT: {exc.message}"
            ) from None
        if first is None:
            first = array
        elif array.shape != first.shape:
            detail = (
                f"Expecting tensor size: {first.size} but got: {array.size}"
                if array.size != first.size
                else f"Expecting shape {shape_text(first.shape)} but got: {shape_text(array.shape)}"
            )
            raise InvalidArgument(
                f"Failed to process element: {i}{where} of 'instances' list. "
                f"Error: INVALID_ARGUMENT: {detail}"
            )
    raise InvalidArgument(f"Cannot batch the values of input {spec.alias}")


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
                    f"JSON Value: {_short(value)} is out of range for {spec.dtype}"
                )
        return _cast(array, spec)
    _walk(value, _dense_shape(value), 0, lambda leaf: _check_leaf(leaf, spec))
    raise InvalidArgument(f"JSON Value: {_short(value)} cannot be converted to {spec.dtype}")


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
        elif _is_b64(leaf):
            flat.append(_b64decode(leaf))
        elif isinstance(leaf, dict):
            raise InvalidArgument(
                f"JSON Value: {_short(leaf)} not formatted correctly for base64 data"
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
                f"JSON Value: {_short(value)} found at incorrect level: {level + 1} in the "
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
        f"JSON Value: {_short(value)} Type: {_json_type(value)} is not of expected type: {dtype}"
    )


def _json_type(value: Any) -> str:
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


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _is_object(value: Any) -> bool:
    """A JSON object that is not a ``{"b64": ...}`` value."""
    return isinstance(value, dict) and not _is_b64(value)


def _b64decode(value: dict) -> bytes:
    try:
        return base64.b64decode(value[_B64], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def examples_from_json(doc: Mapping[str, Any], method: str) -> list[bytes]:
    """Serialized ``tf.Example`` protos from a classify/regress request.

    ``context`` features are merged into every example, as TF Serving does with
    an ``ExampleListWithContext``.

    Raises:
        InvalidArgument: ``examples`` missing, not a list, empty, or a bad feature.
    """
    from tensorflow.core.example import example_pb2

    examples = doc.get("examples")
    if "examples" not in doc:
        raise InvalidArgument(
            f"JSON Value: {_short(doc)} When method is {method}, key 'examples' is expected "
            "and was not found"
        )
    if not isinstance(examples, list):
        raise InvalidArgument(
            f"JSON Value: {_short(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(f"JSON Value: {_short(doc)} 'examples' value is an empty array")
    context = example_pb2.Example()
    if "context" in doc:
        _fill_example(doc["context"], context)
    serialized = []
    for item in examples:
        example = example_pb2.Example()
        example.CopyFrom(context)
        _fill_example(item, example)
        serialized.append(example.SerializeToString())
    return serialized


def _fill_example(value: Any, example) -> None:
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        feature.Clear()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)


def _add_feature_value(value: Any, name: str, feature) -> None:
    if isinstance(value, bool):
        kind, value = "int64_list", int(value)
    elif isinstance(value, float):
        kind = "float_list"
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        kind = "int64_list"
    elif isinstance(value, str):
        kind, value = "bytes_list", value.encode()
    elif _is_b64(value):
        kind, value = "bytes_list", _b64decode(value)
    else:
        raise InvalidArgument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise InvalidArgument(
            f"Unexpected element type in feature: {name} expecting type: "
            f"{current.removesuffix('_list')}"
        )
    getattr(feature, kind).value.append(value)


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
            {_B64: base64.b64encode(v).decode()} if as_b64 else _text(v) for v in array.ravel()
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


def shape_text(shape: Sequence[int]) -> str:
    """``(1, 3)`` → ``"[1,3]"``, as TF Serving writes shapes in its errors."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def _short_text(text: str) -> str:
    return text if len(text) <= _ERROR_VALUE_CHARS else text[:_ERROR_VALUE_CHARS] + "..."


def _short(value: Any) -> str:
    # Only the first _ERROR_VALUE_CHARS characters are shown, so only about as many
    # values are copied: an error about a 64 MiB request stays cheap to write.
    try:
        text = json.dumps(_preview(value, [_ERROR_VALUE_CHARS]), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _short_text(text)


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
