"""Typed serving errors named after TF Serving's canonical status codes."""

from __future__ import annotations

import re
from collections.abc import Sequence

# TF Serving's http_server.cc maps canonical codes to HTTP statuses this way; the
# app's error handler is the only place that reads this table.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# TensorFlow's numeric error codes (tf.errors.*) in canonical order.
_CODE_NAMES = list(HTTP_STATUS)


class ServingError(Exception):
    """An error a client caused or should see, carrying a canonical status code.

    Attributes:
        code: Canonical status name, e.g. ``"INVALID_ARGUMENT"``.
        message: Text sent to the client as ``{"error": message}``.
    """

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving answers with for this code."""
        return HTTP_STATUS.get(self.code, 500)


class InvalidArgument(ServingError):
    """The request is malformed or does not fit the model."""

    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    """Unknown model, version, label or path."""

    code = "NOT_FOUND"


class Unimplemented(ServingError):
    """A feature TF Serving has that this server does not."""

    code = "UNIMPLEMENTED"


def code_name(tf_error_code: int) -> str:
    """Returns the canonical status name of a TensorFlow numeric error code."""
    if 0 <= tf_error_code < len(_CODE_NAMES):
        return _CODE_NAMES[tf_error_code]
    return "UNKNOWN"


def from_tf_error(exc: Exception, inputs: Sequence[tuple[str, str]] = ()) -> ServingError:
    """Wraps a TensorFlow ``OpError`` (or any exception) raised by a model run.

    The message is TensorFlow's, without what only the server's own debugging
    needs (see ``client_message``); a dtype mismatch on a fed tensor names the
    request input instead of the graph node.

    Args:
        exc: The error the run raised.
        inputs: ``(graph tensor name, request input name)`` of each fed tensor, in
            the order fed.
    """
    name = code_name(getattr(exc, "error_code", 2))
    text = getattr(exc, "message", None) or str(exc)
    error = ServingError(_fed_dtype_message(text, inputs) or client_message(text))
    error.code = name
    return error


# What TensorFlow appends to an error for whoever debugs the graph, never for a
# client: the node ("\n\t [[{{node _arg_x2_0_0}}]]"), the eager op
# ("[Op:MatMul] name: "), the Python stack that built the node, object reprs.
_NODE = re.compile(r"\s*\[\[\{\{(?:function_)?node [^}]*\}\}[^\]]*\]\]")
_NODE_REF = re.compile(r"\s*\{\{(?:function_)?node [^}]*\}\}")
_EAGER_OP = re.compile(r"\s*\[Op:[^\]]*\](?:\s*name:[^\n]*)?")
_DEBUG_TAIL = re.compile(
    r"\s*(?:Traceback \(most recent call last\)|Errors may have originated from an input "
    r"operation|Original stack trace for|Detected at node|Caused by op|Call stack:).*",
    re.DOTALL,
)
_DEFINED_AT = re.compile(r"\s*\(defined at [^)]*\)")
_OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")
# An absolute file path of two or more parts (a URL path in our own messages is never
# passed through here).
_FILE_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.@+~-]+){2,}/?")
_FED_DTYPE = re.compile(
    r"Type mismatch: actual (\w+) vs\. expect (\w+)\s*\[\[\{\{node _arg_(\S+)_(\d+)\}\}"
)


def client_message(text: str) -> str:
    """An error text from TensorFlow (or another library) as a client may see it.

    Graph node annotations, eager op names, stack traces, object reprs and
    absolute file paths are removed: they say nothing a client can act on and
    describe the server's insides.

    Example:
        >>> client_message("Incompatible shapes: [2] vs. [3] [[{{node add}}]]")
        'Incompatible shapes: [2] vs. [3]'
    """
    text = _DEBUG_TAIL.sub("", text)
    for pattern in (_NODE, _NODE_REF, _EAGER_OP, _DEFINED_AT):
        text = pattern.sub("", text)
    text = _OBJECT_REPR.sub("<object>", text)
    text = _FILE_PATH.sub("<path>", text)
    return " ".join(text.split()) or "The model run failed"


def _fed_dtype_message(text: str, inputs: Sequence[tuple[str, str]]) -> str:
    """TensorFlow's dtype mismatch on a fed tensor, told by the request input's name.

    A callable names its feed nodes ``_arg_<tensor, ":" as "_">_<index>``, e.g.
    ``_arg_x2_0_1`` for ``x2:0`` fed second. A string fed to a numeric input only
    happens through ``:classify`` and ``:regress``, which feed serialized
    ``tf.Example`` strings whatever the signature declares.
    """
    match = _FED_DTYPE.search(text)
    if match is None:
        return ""
    actual, expected, node, index = match.groups()
    position = int(index)
    if position >= len(inputs) or node != inputs[position][0].replace(":", "_"):
        return ""
    message = (
        f"Input '{inputs[position][1]}' takes DT_{expected.upper()} values, "
        f"but was fed DT_{actual.upper()}"
    )
    if actual == "string":
        message += (
            ". :classify and :regress feed serialized tf.Example strings; for this "
            "signature, call :predict with its \"signature_name\" instead"
        )
    return message


class Unauthenticated(ServingError):
    """The request lacks the bearer token the server was started with, or has a wrong one."""

    code = "UNAUTHENTICATED"


class PayloadTooLarge(ServingError):
    """The request body is larger than the server accepts (before or after decompression).

    TF Serving has no canonical code for this; HTTP's own 413 tells a client
    (or a proxy) that retrying the same body is pointless.
    """

    code = "RESOURCE_EXHAUSTED"

    @property
    def http_status(self) -> int:
        return 413


class UnsupportedMediaType(ServingError):
    """A ``Content-Encoding`` other than gzip, deflate or identity."""

    code = "INVALID_ARGUMENT"

    @property
    def http_status(self) -> int:
        return 415
