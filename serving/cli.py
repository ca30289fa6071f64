"""``tfkit serve``: the command-line flags (TF Serving's names too), the WSGI and gRPC servers.

The server is gunicorn with ``gthread`` workers, one per CPU core
(``os.cpu_count()``) by default, each with 16 threads. Threads, because
``Session.run`` releases the GIL, so requests overlap in TensorFlow while Python
parses and encodes JSON. Several processes, because small models are bound by
the GIL: on 2 cores, the 32→128→2 benchmark MLP at 16 connections served 1742
requests/s with 2 workers and 973 with 1 (a model-less Flask app, same settings:
2753 and 1460); see benchmarks/RESULTS.md. ``--workers 1`` gives one process.
``os.cpu_count()`` counts the machine's cores, not a container's CPU quota: under
a quota, give ``--workers`` explicitly.

With ``--workers N``, each worker process:

- loads every model (memory × N) and polls the model repository itself, so for
  up to a poll interval two workers may serve different versions of a model;
- batches only its own requests (``serving/batching.py``), with its own queues:
  ``--num_batch_threads`` (default: the cores) and ``--max_enqueued_batches`` hold
  per worker, and each worker's TensorFlow sizes its intra-op pool to all cores.

With several workers each listens on its own ``SO_REUSEPORT`` socket, opened
only once its models are loaded (``_listen_later``), so the kernel spreads new
connections evenly over the workers that are ready (on one shared socket, 16
keep-alive connections opened at once all went to one worker in 1 of 4 runs, and
that worker's GIL capped the throughput at half).

Prometheus metrics are shared: a scrape on any worker shows the totals of all
workers, the other workers' numbers up to about a second old
(``serving/metric_snapshots.py``; the master gives the workers a private
temporary folder for it and removes it when it stops).

gRPC (``serving/grpc_server.py``) runs in every worker beside the WSGI server, from
the same app, on a port every worker binds with ``SO_REUSEPORT``. With
``--rest_api_port`` given the command line is TF Serving's and ``--port`` is the gRPC
port (``ports``); otherwise ``--port`` is REST's and ``--grpc-port`` turns gRPC on.

The app is created in each worker after the fork (gunicorn's master never imports
TensorFlow, which is not fork-safe), and gunicorn gives us graceful SIGTERM
handling. Measured on a 2-core machine (client on the same cores), half_plus_two,
4 keep-alive clients, 5 s: gunicorn gthread (16 threads) 410-450 requests/s,
waitress (16 threads) ~290 requests/s (one worker each).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port
GRPC_GRACE_SECONDS = 5.0  # calls in flight at SIGTERM; below gunicorn's graceful_timeout
# gRPC core's EventEngine experiments, on by default in grpcio 1.85, off in the workers: the
# server then polls its connections itself instead of passing each read and write between
# threads. Per one-row Predict that took the server from 14-15 context switches to 11 (REST:
# 6), and its median latency from 1.02x REST's to 0.92x (medians of 7 runs each; see
# benchmarks/RESULTS.md, "gRPC core's polling"). A GRPC_EXPERIMENTS of the user's own is kept.
GRPC_EXPERIMENTS = ("-event_engine_listener,-event_engine_for_all_other_endpoints,"
                    "-event_engine_callback_cq")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``tfkit serve``'s flags; TF Serving's flag names work as well.

    Args:
        parser: The (sub)command parser to fill.
    """
    source = parser.add_argument_group("models")
    source.add_argument(
        "--models", default=None,
        help="model repository: every sub-folder is a model named after it (default: models)",
    )
    source.add_argument("--model_name", "--model-name", default=None,
                        help="serve one model under this name (with --model_base_path)")
    source.add_argument("--model_base_path", "--model-base-path", default=None,
                        help="folder holding the model's numbered version folders")
    source.add_argument(
        "--model_config_file", "--model-config-file", default=None,
        help="TF Serving model config (text-proto; or JSON when it ends in .json): "
             "names, base paths, version policies, version labels",
    )
    source.add_argument(
        "--file_system_poll_wait_seconds", "--poll-seconds", type=float, default=1.0,
        help="seconds between repository polls for new/removed versions; 0 loads once",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=DEFAULT_HOST,
                        help="interface to bind (default 127.0.0.1: this machine only)")
    server.add_argument(
        "--port", type=int, default=None,
        help=f"HTTP port (default {DEFAULT_PORT}); with --rest_api_port given, the gRPC port "
             f"instead (default {DEFAULT_GRPC_PORT}), as TF Serving's --port is",
    )
    server.add_argument("--rest_api_port", "--rest-api-port", type=int, default=None,
                        help="HTTP port, TF Serving's name for it; makes --port the gRPC port")
    server.add_argument(
        "--grpc-port", "--grpc_port", type=int, default=None,
        help="serve gRPC (TF Serving's PredictionService and ModelService, KServe V2's "
             "GRPCInferenceService) on this port; 0: no gRPC (default: none, or --port "
             "when --rest_api_port is given)",
    )
    server.add_argument("--grpc_max_threads", "--grpc-max-threads", type=int, default=16,
                        help="gRPC calls handled at once in each worker process")
    server.add_argument("--rest_api_num_threads", "--threads", type=int, default=16,
                        help="request threads in each worker process")
    server.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="worker processes, each loading every model, polling the repository and "
             "batching on its own; metrics are summed over all of them "
             "(default: os.cpu_count(), %(default)s here)",
    )
    limits = parser.add_argument_group("limits and access")
    limits.add_argument("--max_request_mb", "--max-request-mb", type=float, default=64.0,
                        help="largest accepted request body in MiB, also after gzip "
                             "decompression (larger: 413)")
    limits.add_argument("--max_json_depth", "--max-json-depth", type=int, default=None,
                        help="deepest JSON nesting accepted (default 32)")
    limits.add_argument("--max_batch_rows", "--max-batch-rows", type=int, default=None,
                        help="most rows per request (default 65536; 0: no limit)")
    limits.add_argument(
        "--auth_token_file", "--auth-token-file", default=None,
        help="require 'Authorization: Bearer <token>' on every route but health checks; "
             "the token is this file's content (or set TFKIT_AUTH_TOKEN)",
    )
    limits.add_argument(
        "--cors_allowed_origins", "--cors-allowed-origins", default=None,
        help="comma-separated origins browsers may call from, e.g. https://app.example.com "
             "(default: CORS off)",
    )
    add_batching_arguments(parser)


def add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds TF Serving's batching and TensorFlow threading flags (see ``serving/batching.py``).

    Args:
        parser: The (sub)command parser to fill.
    """
    batching = parser.add_argument_group(
        "batching", "concurrent requests for one model signature merged into one model run"
    )
    batching.add_argument(
        "--enable_batching", "--enable-batching", type=_boolean, nargs="?", const=True,
        default=True, metavar="BOOL",
        help="merge concurrent requests (default true; --enable_batching=false turns it off)",
    )
    batching.add_argument(
        "--batching_parameters_file", "--batching-parameters-file", default=None,
        help="TF Serving BatchingParameters text-proto, e.g. 'max_batch_size { value: 64 }'",
    )
    for flag, text in (
        ("max_batch_size", "most rows in one merged run (default 1000)"),
        ("batch_timeout_micros", "longest wait for a batch to fill; only while other requests "
                                 "are still being parsed (default 0)"),
        ("num_batch_threads", "runs of one model signature at a time (default: CPU cores)"),
        ("max_enqueued_batches", "queue bound in batches; beyond it requests get 503 (default 10)"),
    ):
        batching.add_argument(f"--{flag}", f"--{flag.replace('_', '-')}", type=int, default=None,
                              help=text + "; overrides the parameters file")
    graph = parser.add_argument_group("tensorflow")
    graph.add_argument(
        "--tensorflow_inter_op_parallelism", type=int, default=-1,
        help="threads running independent ops; -1 (default) runs a request's ops in its own "
             "request thread, 0 lets TensorFlow choose",
    )
    graph.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                       help="threads inside one op (0: TensorFlow chooses)")


def batching_config(args: argparse.Namespace) -> dict[str, Any]:
    """The app config keys set by ``add_batching_arguments``'s flags."""
    config: dict[str, Any] = {
        "ENABLE_BATCHING": args.enable_batching,
        "BATCHING_PARAMETERS_FILE": args.batching_parameters_file,
        "TENSORFLOW_INTER_OP_PARALLELISM": args.tensorflow_inter_op_parallelism,
        "TENSORFLOW_INTRA_OP_PARALLELISM": args.tensorflow_intra_op_parallelism,
    }
    for flag in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches"):
        config[flag.upper()] = getattr(args, flag)
    return config


def ports(args: argparse.Namespace) -> tuple[int, int | None]:
    """The REST port and the gRPC port (None: no gRPC) the flags name.

    TF Serving's invocation, recognised by ``--rest_api_port``, takes ``--port`` as the
    gRPC port (default 8500). Otherwise ``--port`` is the REST port (default 8501), as it
    always was for ``tfkit serve``, and only ``--grpc-port`` turns gRPC on. ``--grpc-port``
    wins over a TF Serving ``--port``; 0 turns gRPC off. One port for both stops at once.
    """
    rest, grpc_port = args.port or DEFAULT_PORT, args.grpc_port
    if args.rest_api_port is not None:
        rest = args.rest_api_port
        if grpc_port is None:
            grpc_port = args.port if args.port is not None else DEFAULT_GRPC_PORT
    if grpc_port and grpc_port == rest:
        raise SystemExit(f"tfkit serve: REST and gRPC cannot share port {rest}; give gRPC "
                         "another (--grpc-port, or --port with --rest_api_port)")
    return rest, grpc_port or None


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def run_serve(args: argparse.Namespace) -> int:
    """Runs the server until SIGTERM/SIGINT.

    Args:
        args: Parsed flags from ``add_serve_arguments``.

    Returns:
        The process exit code.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # TensorFlow's own INFO lines ("Restoring parameters from ...") repeat serving's.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    logger.info("Serving %s", _check_model_source(args))
    port, grpc_port = ports(args)
    app_config: dict[str, Any] = {
        "FILE_SYSTEM_POLL_WAIT_SECONDS": args.file_system_poll_wait_seconds,
        "MAX_CONTENT_LENGTH": int(args.max_request_mb * 1024 * 1024),
    }
    app_config.update(batching_config(args))
    if args.models:
        app_config["MODELS"] = args.models
    if args.model_base_path:
        app_config["MODEL_BASE_PATH"] = args.model_base_path
        app_config["MODEL_NAME"] = args.model_name or "default"
    if args.model_config_file:
        app_config["MODEL_CONFIG_FILE"] = args.model_config_file
    app_config.update(_access_config(args))
    if grpc_port:
        app_config.update(GRPC_HOST=args.host, GRPC_PORT=grpc_port,
                          GRPC_MAX_THREADS=args.grpc_max_threads,
                          GRPC_REUSE_PORT=args.workers > 1)
    # With a socket per worker (below) the master binds nothing itself, and gRPC is bound by
    # the workers only: a port taken would fail each worker. Checked before anything is made.
    if args.workers > 1:
        _check_address_free(args.host, port)
    if grpc_port:
        _check_address_free(args.host, grpc_port)
    metrics_dir = None
    if args.workers > 1:
        # Private (mode 0700): the workers' metric snapshots, see serving/metric_snapshots.py.
        metrics_dir = tempfile.mkdtemp(prefix="tfkit-metrics-")
        app_config["METRICS_DIR"] = metrics_dir
        from serving import metric_snapshots  # no prometheus_client here: the workers import it

        metric_snapshots.share_with_workers(metrics_dir)  # before gunicorn forks them
    options = {
        "bind": f"{args.host}:{port}",
        "workers": args.workers,
        # Several workers: each listens on its own SO_REUSEPORT socket and the kernel
        # spreads connections over them. On one shared socket the first idle worker
        # accepts, so a burst of keep-alive connections (a load balancer's pool) can
        # all land on one worker: 16 connections did so in 1 of 4 runs here.
        "reuse_port": args.workers > 1,
        "worker_class": "gthread",
        "threads": args.rest_api_num_threads,
        # Loading many models happens before the worker's first heartbeat.
        "timeout": 600,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "worker_exit": _worker_exit,
        "post_fork": _listen_later,
        "post_worker_init": _listen_now,
        # Gunicorn's control socket sits at one path per user; two servers would collide.
        "control_socket_disable": True,
    }
    if grpc_port and "GRPC_EXPERIMENTS" not in os.environ:
        options["raw_env"] = [f"GRPC_EXPERIMENTS={GRPC_EXPERIMENTS}"]  # set for the workers
    logger.info("Serving on http://%s", options["bind"])
    master = os.getpid()
    try:
        _GunicornServer(options, app_config).run()
    finally:
        # Workers are forked inside run() and leave through here too: only the master cleans up.
        if metrics_dir and os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


_EXPORT_HINT = (
    "export a model first, e.g. `tfkit train --data penguins --target species --export "
    "models` (writes models/penguins/1/), then `tfkit serve --models models`"
)


def _check_model_source(args: argparse.Namespace) -> str:
    """Stops at once, naming the flag and folder, when the models to serve are not there.

    Checked in gunicorn's master, before any worker starts: a worker would otherwise
    serve nothing and poll a missing folder forever. The flags (or their ``TFKIT_``
    variables) are read in the app's order: config file, then base path, then
    repository folder. A configured model whose base path is missing is only
    logged (by the repository), as TF Serving does: it may appear later.

    Returns:
        What will be served, for the start-up log line.
    """
    config_file = args.model_config_file or os.environ.get("TFKIT_MODEL_CONFIG_FILE")
    if config_file:
        from serving.model_config import load_model_config  # pure Python: no TensorFlow

        try:
            sources = load_model_config(config_file)
        except FileNotFoundError:
            raise SystemExit(
                f"tfkit serve: --model_config_file {config_file}: no such file. Give a TF "
                "Serving model config (model_config_list { config { name: ... base_path: "
                "... } }), or pass --models DIR to serve every model in a folder"
            ) from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise SystemExit(f"tfkit serve: --model_config_file {config_file}: {exc}") from None
        if not sources:
            raise SystemExit(
                f"tfkit serve: --model_config_file {config_file} configures no model: add "
                "model_config_list { config { name: ... base_path: ... } }"
            )
        return f"the models configured in {config_file}"
    base_path = args.model_base_path or os.environ.get("TFKIT_MODEL_BASE_PATH")
    if base_path:
        if not os.path.isdir(base_path):
            raise SystemExit(
                f"tfkit serve: --model_base_path {base_path}: no such folder. Give the folder "
                "holding one model's numbered version folders (e.g. models/penguins, with "
                f"models/penguins/1/ in it), or pass --models DIR; or {_EXPORT_HINT}"
            )
        return f"{base_path} as model {args.model_name or 'default'}"
    models = args.models or os.environ.get("TFKIT_MODELS") or "models"
    if not os.path.isdir(models):
        named = f"--models {models}" if args.models else f"{models} (the default for --models)"
        what = "not a folder" if os.path.exists(models) else "no such folder"
        raise SystemExit(
            f"tfkit serve: {named}: {what}. Pass --models DIR, a folder with one "
            f"sub-folder per model (DIR/NAME/1/saved_model.pb); or {_EXPORT_HINT}"
        )
    return f"the model repository {models}"


def _access_config(args: argparse.Namespace) -> dict[str, Any]:
    """Limits, token and CORS flags → app config; flags not given leave env/defaults alone."""
    config: dict[str, Any] = {}
    for flag, key in (("max_json_depth", "MAX_JSON_DEPTH"), ("max_batch_rows", "MAX_BATCH_ROWS"),
                      ("auth_token_file", "AUTH_TOKEN_FILE"),
                      ("cors_allowed_origins", "CORS_ALLOWED_ORIGINS")):
        value = getattr(args, flag, None)
        if value is not None:
            config[key] = value
    token_file = config.get("AUTH_TOKEN_FILE")
    if token_file and not (os.path.isfile(token_file) and os.access(token_file, os.R_OK)):
        # Checked here too, so the command fails at once rather than in gunicorn's worker.
        raise ValueError(f"--auth-token-file {token_file}: not a readable file")
    token = bool(config.get("AUTH_TOKEN_FILE") or os.environ.get("TFKIT_AUTH_TOKEN"))
    if not token and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "Binding %s without a token: anyone who can reach this port can query the models. "
            "Set TFKIT_AUTH_TOKEN or --auth-token-file, or put a reverse proxy in front.",
            args.host,
        )
    return config


def _check_address_free(host: str, port: int) -> None:
    """Stops at once if the port is taken.

    With a socket per worker the master binds nothing itself, and gunicorn would
    go on replacing workers that cannot bind.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise SystemExit(f"tfkit serve: cannot listen on {host}:{port}: {exc.strerror}") from None


def _listen_later(server: Any, worker: Any) -> None:
    """With a socket per worker, closes the one gunicorn just opened for this worker.

    The kernel sends connections to every listening ``SO_REUSEPORT`` socket, so a
    worker still importing TensorFlow and loading models would hold its share of
    new connections for seconds (a replaced worker too). It listens from
    ``_listen_now`` on, once the app is loaded.
    """
    if server.cfg.reuse_port:
        for listener in worker.sockets:
            listener.close()
        worker.sockets = []


def _listen_now(worker: Any) -> None:
    if worker.cfg.reuse_port and not worker.sockets:
        from gunicorn import sock, util
        from gunicorn.arbiter import Arbiter

        try:
            worker.sockets = sock.create_sockets(worker.cfg, worker.log)
        except SystemExit:  # the port is taken: stop the server rather than respawn forever
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        for listener in worker.sockets:
            util.close_on_exec(listener)
        worker.wait_fds = [*worker.sockets, worker.PIPE[0]]
    from serving import grpc_server

    grpc_server.start_in_worker(worker.wsgi)  # once the models are loaded, as REST listens


def _worker_exit(server: Any, worker: Any) -> None:
    from serving import grpc_server, metric_snapshots  # in the worker
    from serving.views import tf_serving

    app = getattr(worker, "wsgi", None)
    grpc_server.stop(app, GRPC_GRACE_SECONDS)  # first: its calls in flight need the models
    extensions = getattr(app, "extensions", {})
    core = extensions.get(tf_serving.EXTENSION)
    if core is not None:
        core.repository.stop()
    snapshots = extensions.get(metric_snapshots.EXTENSION)
    if snapshots is not None:
        snapshots.stop()  # the final numbers, for the workers still running


class _GunicornServer(BaseApplication):
    """Runs ``create_app`` inside gunicorn's worker process."""

    def __init__(self, options: dict[str, Any], app_config: dict[str, Any]) -> None:
        self._options = options
        self._app_config = app_config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # control_socket_disable exists from gunicorn 25.1
                self.cfg.set(key, value)

    def load(self) -> Any:
        from tfkit import _quiet

        _quiet.install()  # before TensorFlow starts: without its start-up lines
        _quiet.own_process()  # what is alive once TensorFlow started is frozen, models not
        from serving import _compat

        _compat.start_tensorflow_without_keras()  # in the worker: TensorFlow starts here
        from serving.app import create_app

        return create_app(self._app_config)
