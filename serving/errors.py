"""Typed serving errors named after TF Serving's canonical status codes."""

from __future__ import annotations

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


class FailedPrecondition(ServingError):
    """The request is valid but the model cannot answer it as asked."""

    code = "FAILED_PRECONDITION"


class Unimplemented(ServingError):
    """A feature TF Serving has that this server does not."""

    code = "UNIMPLEMENTED"


class Internal(ServingError):
    """Something broke on the server side."""

    code = "INTERNAL"


def code_name(tf_error_code: int) -> str:
    """Returns the canonical status name of a TensorFlow numeric error code."""
    if 0 <= tf_error_code < len(_CODE_NAMES):
        return _CODE_NAMES[tf_error_code]
    return "UNKNOWN"


def from_tf_error(exc: Exception) -> ServingError:
    """Wraps a TensorFlow ``OpError`` (or any exception) raised by a model run."""
    name = code_name(getattr(exc, "error_code", 2))
    error = ServingError(getattr(exc, "message", None) or str(exc))
    error.code = name
    return error


class Unauthenticated(ServingError):
    """The request lacks the bearer token the server was started with, or has a wrong one."""

    code = "UNAUTHENTICATED"


class PayloadTooLarge(ServingError):
    """The request body is larger than the server accepts (before or after gunzip).

    TF Serving has no canonical code for this; HTTP's own 413 tells a client
    (or a proxy) that retrying the same body is pointless.
    """

    code = "RESOURCE_EXHAUSTED"

    @property
    def http_status(self) -> int:
        return 413


class UnsupportedMediaType(ServingError):
    """A ``Content-Encoding`` other than gzip or identity."""

    code = "INVALID_ARGUMENT"

    @property
    def http_status(self) -> int:
        return 415
