"""The gRPC server beside the Flask app: TF Serving's and KServe V2's services on one port.

It runs in each gunicorn worker, started once the app has loaded its models
(``start``), and answers from that app's inference core, so gRPC and REST share
the models, the batcher, the version policy, the limits, the token and the
metrics. With several workers each binds the port with ``SO_REUSEPORT`` and the
kernel spreads connections over them, as for REST. ``stop`` refuses new calls
and lets the calls in flight finish.

Errors map one to one: a ``ServingError``'s canonical code is the gRPC status
code (TF Serving's own mapping), its message the status details, with server
paths removed as in REST answers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc

from serving import security
from serving.errors import ServingError

logger = logging.getLogger(__name__)

EXTENSION = "tfkit_grpc"  # the running grpc.Server, in app.extensions
SERVICES = (
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "inference.GRPCInferenceService",
)
DEFAULT_MAX_THREADS = 16
T = TypeVar("T")


class Gate:
    """Runs each call's answer: the bearer token first (unless the call is a health
    check), then ``ServingError`` → the gRPC status of the same name.

    Args:
        guard: The app's ``security.Guard`` (token digest, paths to hide).
    """

    def __init__(self, guard: Any) -> None:
        self._guard = guard

    def __call__(self, context: grpc.ServicerContext, answer: Callable[[], T],
                 open_: bool = False) -> T:
        try:
            if not open_ and self._guard.token_digest is not None:
                security.check_token({"HTTP_AUTHORIZATION": _authorization(context)}, self._guard)
            return answer()
        except ServingError as exc:
            code = getattr(grpc.StatusCode, exc.code, grpc.StatusCode.UNKNOWN)
            message = security.scrub_paths(exc.message, self._guard.server_paths)
            context.abort(code, message.encode("utf-8", "backslashreplace").decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - a client sees the type only, as over REST
            logger.exception("Unexpected error in a gRPC call")
            context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(exc).__name__}")
        raise AssertionError("context.abort raises")  # pragma: no cover


def _authorization(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def start(app: Any, host: str, port: int, max_threads: int = DEFAULT_MAX_THREADS,
          reuse_port: bool = False) -> tuple[grpc.Server, int]:
    """Serves the app's models over gRPC on ``host:port`` until ``stop``.

    Args:
        app: The Flask app from ``create_app``; its core, Open Inference layer and guard.
        host: Interface to bind.
        port: Port; 0 picks a free one.
        max_threads: Calls handled at once (TF Serving's ``--grpc_max_threads``).
        reuse_port: Bind with ``SO_REUSEPORT``, for a port every worker listens on.

    Returns:
        The running server and the port it bound.

    Raises:
        OSError: The address cannot be bound.
    """
    from grpc_reflection.v1alpha import reflection
    from tensorflow_serving.apis import (  # noqa: F401 - the *_pb2 modules: see below
        model_service_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2,
        prediction_service_pb2_grpc,
    )

    from serving.grpc_open_inference import InferenceService
    from serving.grpc_tf_serving import ModelService, PredictionService
    from serving.protos import grpc_predict_v2_pb2_grpc
    from serving.views import kserve_v2, tf_serving

    core = app.extensions[tf_serving.EXTENSION]
    gate = Gate(app.extensions[security.EXTENSION])
    limit = int(app.config["MAX_CONTENT_LENGTH"])  # --max_request_mb, as for REST bodies
    server = grpc.server(
        futures.ThreadPoolExecutor(max_threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, gate), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, gate), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(app.extensions[kserve_v2.EXTENSION], gate), server)
    # Reflection answers from the default descriptor pool: tensorflow-serving-api's *_grpc
    # modules load only the messages, so the services' own files are imported above.
    reflection.enable_server_reflection((*SERVICES, reflection.SERVICE_NAME), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address} for gRPC: {exc}") from None
    server.start()
    app.extensions[EXTENSION] = server
    return server, bound


def start_in_worker(app: Any) -> None:
    """``start`` in a gunicorn worker, from the ``GRPC_*`` keys ``tfkit serve`` put in the app
    config; a port that cannot be bound stops the whole server (no respawning)."""
    config = getattr(app, "config", {})
    if not config.get("GRPC_PORT"):
        return
    from gunicorn.arbiter import Arbiter

    host = config["GRPC_HOST"]
    try:
        _, bound = start(app, host, int(config["GRPC_PORT"]), int(config["GRPC_MAX_THREADS"]),
                         reuse_port=bool(config["GRPC_REUSE_PORT"]))
    except OSError as exc:
        logger.error("%s", exc)
        sys.exit(Arbiter.WORKER_BOOT_ERROR)
    # gRPC's C core reads GRPC_EXPERIMENTS when the server starts (`tfkit serve` sets it).
    logger.info("Serving gRPC on %s:%d (GRPC_EXPERIMENTS=%s)", host, bound,
                os.environ.get("GRPC_EXPERIMENTS", ""))


def stop(app: Any, grace: float) -> None:
    """Refuses new calls at once; waits up to ``grace`` seconds for the calls in flight."""
    server = app.extensions.pop(EXTENSION, None) if hasattr(app, "extensions") else None
    if server is not None:
        server.stop(grace).wait(grace + 1)
