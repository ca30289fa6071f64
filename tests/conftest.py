"""Shared fixtures: two logical CPU devices, so MirroredStrategy runs on every test run."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import base64
import contextlib
import fcntl
import pathlib
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import requests

if TYPE_CHECKING:
    import keras

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTDATA = pathlib.Path(__file__).resolve().parent / "data" / "tfserving_testdata"
# Served name → folder in tests/data/tfserving_testdata.
REFERENCE_MODELS = {
    "half_plus_two": "saved_model_half_plus_two_cpu",
    "half_plus_three": "saved_model_half_plus_three",
    "half_plus_two_tf2": "saved_model_half_plus_two_tf2_cpu",
    "two_versions": "saved_model_half_plus_two_2_versions",
    "bad_half_plus_two": "bad_half_plus_two",
}
PENGUIN_CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
PENGUIN_ROWS = {
    "island": np.array(["Torgersen", "Dream", "Biscoe", "Atlantis"], dtype=object),
    "bill_length_mm": np.array([39.1, 48.7, 46.5, 41.0], dtype=np.float32),
    "body_mass_g": np.array([3750.0, 3500.0, 5200.0, 4100.0], dtype=np.float32),
}
SERVER_START_SECONDS = 120
PORT_RETRIES = 3  # free_port() hands on a port it closed: another process may bind it first


def b64(data: bytes) -> dict[str, str]:
    """TF Serving's JSON form of binary data."""
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    return TESTDATA


@pytest.fixture(scope="session")
def table_classifier() -> keras.Model:
    """A penguin-like classifier on raw columns: a StringLookup and two Normalizations."""
    import keras

    keras.utils.set_random_seed(0)
    island = keras.Input(shape=(1,), name="island", dtype="string")
    bill = keras.Input(shape=(1,), name="bill_length_mm", dtype="float32")
    mass = keras.Input(shape=(1,), name="body_mass_g", dtype="float32")
    lookup = keras.layers.StringLookup(
        vocabulary=["Torgersen", "Biscoe", "Dream"], output_mode="one_hot"
    )
    features = keras.layers.Concatenate()([
        lookup(island),
        keras.layers.Normalization(mean=44.0, variance=30.0)(bill),
        keras.layers.Normalization(mean=4200.0, variance=640000.0)(mass),
    ])
    hidden = keras.layers.Dense(8, activation="relu")(features)
    probabilities = keras.layers.Dense(3, activation="softmax")(hidden)
    return keras.Model({"island": island, "bill_length_mm": bill, "body_mass_g": mass},
                       probabilities)


@pytest.fixture(scope="session")
def regressor() -> keras.Model:
    """A tensor-input regressor, 4 features → 1 value."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


@pytest.fixture(scope="session")
def image_classifier() -> keras.Model:
    """A tensor-input 8x8x1 image classifier with 10 classes."""
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input(shape=(8, 8, 1))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))


def copy_reference_models(repo: pathlib.Path) -> None:
    for name, folder in REFERENCE_MODELS.items():
        shutil.copytree(TESTDATA / folder, repo / name)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory, table_classifier, regressor) -> pathlib.Path:
    """A repository with TF Serving's reference models and two exported Keras models."""
    from tfkit.export import export_model

    repo = tmp_path_factory.mktemp("models")
    copy_reference_models(repo)
    export_model(table_classifier, repo / "penguins", task="multiclass",
                 class_names=PENGUIN_CLASSES)
    export_model(regressor, repo / "mpg", task="regression")
    return repo


@pytest.fixture(scope="session")
def model_config_file(model_repo) -> pathlib.Path:
    """TF Serving text-proto config: every model, two_versions with both versions and labels."""
    entries = []
    for name in [*REFERENCE_MODELS, "penguins", "mpg"]:
        extra = ""
        if name == "two_versions":
            extra = """
    model_version_policy { specific { versions: 123 versions: 124 } }
    version_labels { key: "stable" value: 123 }
    version_labels { key: "canary" value: 124 }"""
        entries.append(f"""  config {{
    name: "{name}"
    base_path: "{model_repo / name}"
    model_platform: "tensorflow"{extra}
  }}""")
    path = model_repo.parent / "models.config"
    path.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return path


@pytest.fixture(scope="session")
def app(model_config_file):
    from serving import create_app

    return create_app({
        "MODEL_CONFIG_FILE": str(model_config_file),
        "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
        "TESTING": True,
    })


@pytest.fixture()
def client(app):
    return app.test_client()


# pytest-xdist (--dist loadgroup) gives a worker whole groups: a test file is a group, but
# files that share a session's server processes are one, so the servers start on one worker
# only. Groups are handed out in this order, the costliest first (CPU seconds measured on
# 2 cores), so the two workers finish close together; the others follow in file order.
SHARED_GROUPS = {stem: "tfkit_servers" for stem in (
    "test_http_encoding", "test_http_methods", "test_serving_fuzz", "test_serving_hardening")}
COSTLIEST_FIRST = ("test_tutorials", "test_checkpoints", "test_own_data", "test_commands",
                   "test_multiworker", "test_grpc", "test_schemathesis", "test_zoo",
                   "tfkit_servers", "test_train", "test_cli")


def compile_sources() -> None:
    """Writes the .pyc files of tfkit's and serving's modules that are missing or stale
    (``__pycache__/``, git-ignored)."""
    import compileall

    for package in ("tfkit", "serving"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)


def _group(item: pytest.Item) -> str:
    return SHARED_GROUPS.get(item.path.stem, item.path.stem)


def pytest_configure(config):
    """Two logical CPU devices, before TensorFlow initialises them (test modules import it
    later, at collection). pytest-xdist's controller runs no test: it leaves TensorFlow be.

    First, tfkit's and serving's modules are byte-compiled, as pip compiles an installed
    package. An editable install leaves that to the first import, which writes nothing under
    PYTHONDONTWRITEBYTECODE; then each of the suite's 130-odd Python processes (servers,
    kernels, commands, training children) compiles them again: 0.2 s of CPU per server
    (master and worker), 0.3 s per training command.
    """
    controller = os.environ.get("PYTEST_XDIST_WORKER") is None
    if controller:
        compile_sources()
    if controller and config.getoption("numprocesses", 0):
        return
    # The test runner is tfkit's own as a command is: TensorFlow starts with the garbage
    # collector paused and what it made frozen (tfkit/_quiet.py); the tests' objects are not.
    from tfkit import _quiet

    _quiet.own_process()
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_collection_modifyitems(items):
    # pytest-xdist reads a test's group from the end of its node id ("...@group"); it sets
    # that suffix on a private attribute pytest 9 no longer reads, so it is set here.
    # schemathesis gives every operation's item its test function's node id (xdist would run
    # one operation of them all): each gets the id pytest gives any parametrized item.
    for item in items:
        item._id = item.parent.id.child(f"{item.name}@{_group(item)}")
    rank = {group: i for i, group in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: file order kept


def triton_http_client(server, timeout: float):
    """tritonclient's HTTP client for a ServerProcess; the test is skipped without tritonclient.

    Yields the client and closes it after (use it as a fixture's body: ``yield from``).
    """
    http = pytest.importorskip(
        "tritonclient.http",
        reason="tritonclient is not installed (pip install 'tritonclient[http]')",
    )
    client = http.InferenceServerClient(
        server.url.removeprefix("http://"), connection_timeout=timeout, network_timeout=timeout
    )
    yield client
    client.close()


def put_version(source: pathlib.Path, version: pathlib.Path) -> None:
    """A model version put in place at once, as an export writes it: copied beside under a
    name that is no version number, then renamed. A server polling the folder never sees it
    half-copied (it would try to load it, and fail)."""
    staging = version.parent / f".{version.name}.tmp"
    shutil.copytree(source, staging)
    staging.rename(version)


def wait_for(condition, seconds: float, poll: float = 0.05) -> bool:
    """Poll `condition` until it holds (True) or `seconds` pass (False): no fixed sleeps."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def save_slow_model(path: pathlib.Path, started: pathlib.Path | None = None) -> None:
    """A SavedModel answering y = x after sleeping x[0] milliseconds: a call's length is the
    caller's to choose, and it uses no CPU while it waits. With ``started``, each call first
    appends a line to that file."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import testing

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            marks = [tf.print("call", output_stream=f"file://{started}")] if started else []
            with tf.control_dependencies(marks):
                wait = tf.cast(x[0] * 1000.0, tf.int64)  # microseconds
            # tf.data's sleep, once: it waits before each element (take(1) asks for one only).
            slept = tf.data.Dataset.range(1).apply(testing.sleep(wait)).take(1).reduce(
                tf.constant(0, tf.int64), lambda total, i: total + i)
            with tf.control_dependencies([slept]):
                return {"y": tf.identity(x)}

    slow = Slow()
    tf.saved_model.save(slow, str(path), signatures={"serving_default": slow.serve})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What the `tfkit` console script runs, from this checkout.
TFKIT_SERVE = ["-m", "tfkit.cli", "serve"]


class ServerProcess:
    """``python -m serving`` (or ``command``) in a child process, with its log in a file.

    ``host=None`` passes no ``--host``; ``default_port`` (the port the server binds with
    no port flag) passes no port flag: such a server cannot move when its port is taken.
    Without ``--workers`` in ``args`` the server gets ``--workers 1``: each worker starts
    TensorFlow (seconds of CPU), and the tests of several workers ask for them
    (``workers=None`` keeps the server's own default, one per core).
    """

    def __init__(self, args: list[str], log_path: pathlib.Path, port_flag: str = "--port",
                 command: list[str] | None = None, env: dict[str, str] | None = None,
                 host: str | None = "127.0.0.1", default_port: int | None = None,
                 workers: int | None = 1) -> None:
        self.log_path = log_path
        self._env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2",
                         **(env or {}))
        self._host = host or "127.0.0.1"
        if workers is not None and "--workers" not in args:
            args = [*args, "--workers", str(workers)]
        self._argv = [sys.executable, *(command or ["-m", "serving"]), *args,
                      *(["--host", host] if host else [])]
        self._port_flag = None if default_port else port_flag
        self._default_port = default_port
        self._retries = PORT_RETRIES
        self._log = None
        self._launch()

    def _launch(self) -> None:
        """Starts the child on a port just found free (another process may take it first:
        ``restarted_on_a_free_port`` then starts it again on another)."""
        self.port = self._default_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        port_args = [self._port_flag, str(self.port)] if self._port_flag else []
        self.process = subprocess.Popen(
            [*self._argv, *port_args], cwd=REPO_ROOT, env=self._env, stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def restarted_on_a_free_port(self) -> bool:
        """If the child exited because another process took its port first, starts it again
        on another port and says so (a few times at most)."""
        if (self.process.poll() is None or not self._retries or self._default_port
                or not self._port_was_taken()):
            return False
        self._retries -= 1
        self._launch()
        return True

    def worker_pid(self) -> int:
        """The gunicorn worker: the serve process's one child, where the models live."""
        children = pathlib.Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        assert len(pids) == 1, f"expected one worker, found {pids}"
        return pids[0]

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self.restarted_on_a_free_port():
                    continue
                pytest.fail(f"server exited early:\n{self.log()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # connected before the worker is up
                pass
            time.sleep(0.25)
        pytest.fail(f"server not ready after {SERVER_START_SECONDS}s:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def _port_was_taken(self) -> bool:
        log = self.log()
        return (f"cannot listen on {self._host}:{self.port}" in log
                or "Address already in use" in log)


@pytest.fixture(scope="module")
def start_server(tmp_path_factory):
    """Starts server processes; stops whatever is still running after the module's tests."""
    servers = []
    logs = tmp_path_factory.mktemp("server-logs")

    def start(args: list[str], ready_path: str, port_flag: str = "--port",
              **kwargs) -> ServerProcess:
        server = ServerProcess(args, logs / f"server-{len(servers)}.log", port_flag, **kwargs)
        servers.append(server)
        server.wait_ready(ready_path)
        return server

    yield start
    for server in servers:
        server.stop()


HARDENING_TOKEN = "k7-Qz3.t0ken_for~tests"
HARDENING_SECRET = "SECRET-7f3a9c-do-not-serve"
HARDENING_READY_PATH = "/v1/models/half_plus_two"


@pytest.fixture(scope="session")
def secret_repo(tmp_path_factory, regressor, table_classifier) -> pathlib.Path:
    """``<root>/models`` is served; ``<root>/secret.txt`` and a loadable model in
    ``<root>/secret_model`` sit beside it, where a path traversal would land."""
    from tfkit.export import export_model

    root = tmp_path_factory.mktemp("hardening")
    repo = root / "models"
    repo.mkdir()
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", repo / "half_plus_two")
    shutil.copytree(TESTDATA / "bad_half_plus_two", repo / "bad_half_plus_two")
    export_model(regressor, repo / "mpg", task="regression")
    export_model(table_classifier, repo / "penguins", task="multiclass",
                 class_names=PENGUIN_CLASSES)
    (root / "secret.txt").write_text(HARDENING_SECRET)
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", root / "secret_model")
    (root / "secret_model" / "00000123" / "assets").mkdir(exist_ok=True)
    (root / "secret_model" / "00000123" / "assets" / "secret.txt").write_text(HARDENING_SECRET)
    (root / "token").write_text(HARDENING_TOKEN + "\n")
    small = root / "small"
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", small / "half_plus_two")
    return root


@pytest.fixture(scope="session")
def tfkit_servers(secret_repo, tmp_path_factory):
    """Three servers over ``secret_repo``, started side by side (TensorFlow's start-up
    dominates): `tfkit serve` with the token off (the default); ``python -m serving`` (the
    same server, without `tfkit`'s imports in gunicorn's master) with the token on, from a
    file; and a small one for a test that stops it with SIGTERM."""
    logs = tmp_path_factory.mktemp("hardening-logs")
    models = ["--models", str(secret_repo / "models")]
    specs = {
        "open": (models, TFKIT_SERVE),
        "token": ([*models, "--auth-token-file", str(secret_repo / "token")], None),
        "sigterm": (["--models", str(secret_repo / "small")], None),
    }
    started: dict[str, ServerProcess] = {}
    try:
        for name, (args, command) in specs.items():
            started[name] = ServerProcess(args, logs / f"{name}.log", command=command)
        for server in started.values():
            server.wait_ready(HARDENING_READY_PATH)
        yield started
    finally:
        for server in started.values():
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)  # all at once: they stop in parallel
        for server in started.values():
            server.stop()


TRAIN_CHILD = pathlib.Path(__file__).resolve().parent / "helpers" / "train_child.py"
CHILD_SECONDS = 240


@contextlib.contextmanager
def _made_once_per_run(tmp_path_factory, name: str):
    """A folder every pytest-xdist worker of this run shares, held under a lock: what one
    worker makes there, the others find made instead of making it again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' own temporary folders sit side by side in it
    folder = root / name
    folder.mkdir(exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


@pytest.fixture(scope="session")
def child_baselines(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """``helpers/train_child.py`` run to the end with its defaults on "cpu" and on "cpu:2":
    ``{strategy: (weights, history)}``, the references that resumed and multi-worker runs
    must match. Started side by side (each child spends seconds starting TensorFlow), once
    per run even under pytest-xdist."""
    import json

    names = {"cpu": "cpu", "cpu:2": "cpu_2"}
    with _made_once_per_run(tmp_path_factory, "child-baselines") as tmp:
        runs = {}
        for strategy, name in names.items():
            if not (tmp / f"{name}.json").exists():
                shutil.rmtree(tmp / "logs" / name, ignore_errors=True)  # no resume: from 0
                argv = [sys.executable, str(TRAIN_CHILD), "--strategy", strategy, "--logdir",
                        str(tmp / "logs"), "--run", name, "--out", str(tmp / f"{name}.npz")]
                runs[strategy] = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True)
        try:
            for process in runs.values():
                out, _ = process.communicate(timeout=CHILD_SECONDS)
                assert process.returncode == 0, out[-4000:]
        finally:
            for process in runs.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        baselines = {}
        for strategy, name in names.items():
            with open(tmp / f"{name}.json") as history:
                baselines[strategy] = (dict(np.load(tmp / f"{name}.npz")), json.load(history))
    return baselines


def _start_lesson(number: int, tmp_path_factory) -> tuple:
    """`tfkit tutorial N --fast --workdir W`, as a user runs it, from an empty folder of its
    own beside W (named ``W-cwd``: it must stay empty)."""
    workdir = tmp_path_factory.mktemp(f"lesson{number:02d}")
    here = workdir.parent / f"{workdir.name}-cwd"
    here.mkdir()
    log = (workdir.parent / f"{workdir.name}.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "tfkit.cli", "tutorial", str(number), "--fast",
         "--workdir", str(workdir)], cwd=here, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        start_new_session=True,  # the command and the lesson it starts stop together
    )
    return process, workdir, log


@pytest.fixture(scope="session")
def lesson_runs(tmp_path_factory):
    """``lesson_runs(number)`` starts that lesson as a script on first use, in a fresh folder,
    and is its (process, workdir, log). (tests/test_tutorials.py runs every lesson's notebook;
    one run of a script through the command is enough besides.)
    """
    runs = {}

    def run(number: int) -> tuple:
        if number not in runs:
            runs[number] = _start_lesson(number, tmp_path_factory)
        return runs[number]

    yield run
    for process, _, log in runs.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


MLP_CLASSES = ["no", "yes"]


@pytest.fixture(scope="session")
def mlp() -> keras.Model:
    """A tensor-input classifier, 32 features → 8 → 2 classes (the benchmark's shape, smaller)."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(32,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))


@pytest.fixture(scope="session")
def v2_repo(tmp_path_factory, mlp) -> pathlib.Path:
    """A repository for the Open Inference Protocol tests: half_plus_two and the mlp."""
    from tfkit.export import export_model

    repo = tmp_path_factory.mktemp("v2-models")
    shutil.copytree(TESTDATA / REFERENCE_MODELS["half_plus_two"], repo / "half_plus_two")
    export_model(mlp, repo / "mlp", task="multiclass", class_names=MLP_CLASSES)
    return repo


class ChildLines:
    """A child process's output, read on a thread: waiting for a line has a deadline even
    when the child goes quiet (``for line in proc.stdout`` would block until it speaks)."""

    def __init__(self, stream) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def next(self, deadline: float) -> str | None:
        """The next line, or None at the end of the output; fails the test at ``deadline``
        (a ``time.monotonic()`` value)."""
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail("no output from the child before the deadline:\n"
                        + "".join(self.seen[-40:]))
        if line is not None:
            self.seen.append(line)
        return line

    def rest(self, deadline: float) -> str:
        """Everything until the end of the output (or the deadline), with what was seen."""
        while self.next(deadline) is not None:
            pass
        return "".join(self.seen)
