"""TF Serving's REST requests → numpy: the body, predict's rows or columns, classify's examples."""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidArgument
from serving.json_tensors import (
    b64decode,
    input_names,
    is_b64,
    is_object,
    json_type,
    shape_text,
    short,
    short_text,
    to_array,
)
from serving.servable import TensorSpec

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
        raise InvalidArgument(f"JSON Value: {short(doc)} Is not object")
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
        raise ValueError(f"Number too big to be stored in double: {short_text(text)}")
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
    columns = inputs.values() if is_object(inputs) else [inputs]
    for column in columns:
        if isinstance(column, list):
            rows = max(rows, len(column))
    return rows


def signature_name(doc: Mapping[str, Any]) -> str:
    """Returns the request's optional ``signature_name`` ('' when absent)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {short(doc)} not formatted correctly. "
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
            f"JSON Value: {short(doc)} Not formatted correctly expecting only one of "
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
            f"JSON Value: {short(doc)} Excepting 'instances' to be an list/array"
        )
    if not instances:
        raise InvalidArgument(f"JSON Value: {short(doc)} No values in 'instances' array")
    if not is_object(instances[0]):
        if len(inputs) > 1:
            raise InvalidArgument(
                "instances is a plain list, but expecting list of objects as multiple "
                "input tensors required as per tensorinfo_map"
            )
        for i, item in enumerate(instances):
            if is_object(item):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {i} of input list"
                )
        (spec,) = inputs.values()
        return {spec.alias: _batch(instances, spec, key=None)}
    names = set(inputs)
    for i, item in enumerate(instances):
        if not is_object(item):
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
                f"{short(item)} keys must be equal to: {','.join(sorted(names))}"
            )
    return {
        alias: _batch([item[alias] for item in instances], spec, key=alias)
        for alias, spec in inputs.items()
    }


def _decode_columns(value: Any, inputs: Mapping[str, TensorSpec]) -> dict:
    if not is_object(value):
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
            f"JSON Value: {short(doc)} When method is {method}, key 'examples' is expected "
            "and was not found"
        )
    if not isinstance(examples, list):
        raise InvalidArgument(
            f"JSON Value: {short(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise InvalidArgument(f"JSON Value: {short(doc)} 'examples' value is an empty array")
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
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type(value)}")
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
    elif is_b64(value):
        kind, value = "bytes_list", b64decode(value)
    else:
        raise InvalidArgument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
        )
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise InvalidArgument(
            f"Unexpected element type in feature: {name} expecting type: "
            f"{current.removesuffix('_list')}"
        )
    getattr(feature, kind).value.append(value)
