"""README claims about the `tfkit` commands, run as real processes; served answers over HTTP."""

import collections
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
from conftest import (
    PENGUIN_CLASSES,
    PENGUIN_ROWS,
    REFERENCE_MODELS,
    REPO_ROOT,
    TESTDATA,
    TFKIT_SERVE,
    ServerProcess,
    save_slow_model,
)

from tfkit.config import TrainConfig

COMMAND_SECONDS = 300
HTTP_SECONDS = 60
LISTEN_SECONDS = 60
README_PORT = 8501  # "port 8501, bound to 127.0.0.1"
TOKEN = "readme-claims-token"
APP_ORIGIN = "https://app.example.com"
# Each lower than the default, so a server that ignores them answers otherwise.
ENV_SETTINGS = {
    "TFKIT_MAX_JSON_DEPTH": "2",
    "TFKIT_MAX_BATCH_ROWS": "2",
    "TFKIT_CORS_ALLOWED_ORIGINS": APP_ORIGIN,
    "TFKIT_AUTH_TOKEN": TOKEN,
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READY_PATH = "/v1/models/half_plus_two"
# The batching server: one run at a time, at most 4 rows a run, one batch of 4 rows queued.
BATCHING_FLAGS = ["--enable_batching", "--max_batch_size", "4", "--num_batch_threads", "1",
                  "--max_enqueued_batches", "1", "--batch_timeout_micros", "0"]
BURST = 9  # 1 runs, 4 wait and run merged, 4 find the queue full
SLOW_RUN_SECONDS = 3.0  # the burst's requests all arrive well within one run


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)


def _tfkit(*args: str, cwd, env=None, timeout: float = COMMAND_SECONDS):
    return subprocess.run([sys.executable, "-m", "tfkit.cli", *args], cwd=cwd,
                          env=env or _env(), capture_output=True, text=True, timeout=timeout)


class _Serve(ServerProcess):
    """`tfkit serve` with exactly the flags given (no --host unless given), and `--port` a
    free port unless `default_port`."""

    def __init__(self, args: list[str], log_path, env: dict[str, str] | None = None,
                 default_port: bool = False) -> None:
        super().__init__(args, log_path, command=TFKIT_SERVE, env=env, host=None,
                         default_port=README_PORT if default_port else None, workers=None)

    def quick_stop(self) -> None:
        """gunicorn's quick stop (SIGINT): a worker still loading TensorFlow need not finish."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.stop()


def _listeners(port: int) -> list[tuple[str, str]]:
    """(address, socket inode) of each TCP socket listening on `port`, from /proc/net/tcp{,6}."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    words = [bytes.fromhex(address[i:i + 8])[::-1]  # host-order 32-bit words
                             for i in range(0, len(address), 8)]
                    found.append((socket.inet_ntop(family, b"".join(words)), fields[9]))
    return found


def _listening(port: int) -> list[str]:
    return [address for address, _ in _listeners(port)]


def _socket_inodes(pid: int) -> set[str]:
    links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    return {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}


def _poll(condition, what: str, seconds: float = LISTEN_SECONDS, server=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if server is not None and server.process.poll() is not None:
            if server.restarted_on_a_free_port():
                continue
            pytest.fail(f"server exited while waiting for {what}:\n{server.log()}")
        time.sleep(0.1)
    pytest.fail(f"no {what} after {seconds}s" + (f":\n{server.log()}" if server else ""))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as text:
        return [int(child) for child in text.read().split()]


def _post(url: str, body, headers=None, **kwargs) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=HTTP_SECONDS, **kwargs)


# ---- training, tutorial, launch ---------------------------------------------------------


def test_train_help_has_a_flag_for_every_option(tmp_path):
    done = _tfkit("train", "--help", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    flags = set(re.findall(r"--[a-z][a-z-]*", done.stdout))
    lacking = [f.name for f in dataclasses.fields(TrainConfig)
               if "--" + f.name.replace("_", "-") not in flags]
    assert lacking == []


def test_train_command_follows_its_flags(tmp_path):
    done = _tfkit("train", "--data", "auto_mpg", "--epochs", "2", "--batch-size", "16",
                  "--validation-split", "0.25", "--metrics", "mae,mse",
                  "--model-kwargs", '{"hidden": [8]}', "--logdir", "logs", "--run-name", "small",
                  "--export", "repo", "--model-name", "cars", "--verbose", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[re.search(r"^\{", done.stdout, re.M).start():])
    assert report["logdir"] == os.path.join("logs", "small")
    assert report["export_path"] == os.path.join("repo", "cars", "1")
    assert set(report["final"]) == {"loss", "mae", "mse", "val_loss", "val_mae", "val_mse"}
    assert (tmp_path / "logs" / "small" / "train").is_dir()
    assert "epoch 2/2" in done.stdout and "epoch 3/" not in done.stdout
    train_rows, val_rows = map(int, re.search(r"(\d+) train / (\d+) validation rows, .*global "
                                              r"batch 16,", done.stdout).groups())
    assert val_rows == round(0.25 * (train_rows + val_rows))
    exported = tf.saved_model.load(str(tmp_path / "repo" / "cars" / "1"))
    widths = {v.shape[-1] for v in exported.variables if len(v.shape) == 2}
    assert widths == {8, 1}  # one hidden layer of 8 (the default is 64, 64), one output


def test_tutorial_command_runs_lesson_1_fast(lesson_runs):
    # `tfkit tutorial 1 --fast --workdir W` from an empty folder; test_tutorials checks the rest.
    process, workdir, log = lesson_runs(1)
    process.wait(timeout=COMMAND_SECONDS)
    log.seek(0)
    out = log.read()
    assert process.returncode == 0, out[-3000:]
    m, b = map(float, re.search(r"^learned\s+m = (\S+), b = (\S+)$", out, re.M).groups())
    assert abs(m - 3.0) < 0.05 and abs(b - 2.0) < 0.05  # the truth the lesson prints
    assert any((workdir / "tensorboard_logs" / "01_what_learning_means").iterdir())
    assert list((workdir.parent / f"{workdir.name}-cwd").iterdir()) == []


def test_launch_runs_two_workers_that_train_as_one(tmp_path):
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    done = _tfkit("launch", "--workers", "2", "--timeout", "240", "--", "tfkit", "train",
                  "--data", "penguins", "--epochs", "1", "--export", "none", "--verbose", "2",
                  cwd=tmp_path, env=_env(PATH=path))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    reports = []
    for worker in (0, 1):
        prefix = f"[worker {worker}] "
        lines = "\n".join(line[len(prefix):] for line in done.stdout.splitlines()
                          if line.startswith(prefix))
        assert "2 replica(s)" in lines, done.stdout[-3000:]
        # raw_decode: TensorFlow's own lines may follow the report on the merged output.
        reports.append(json.JSONDecoder().raw_decode(
            lines, re.search(r"^\{", lines, re.M).start())[0])
    assert reports[0]["final"] == reports[1]["final"], done.stdout[-3000:]  # trained together
    assert (tmp_path / reports[0]["logdir"] / "train").is_dir()


def test_launch_names_a_command_it_cannot_find(tmp_path):
    done = _tfkit("launch", "--workers", "2", "--", "notacommand", "train", cwd=tmp_path,
                  timeout=60)
    assert done.returncode != 0
    assert "command 'notacommand' was not found on PATH" in done.stderr
    assert ". .venv/bin/activate" in done.stderr and "-m tfkit.cli" in done.stderr
    assert "Traceback" not in done.stderr


# ---- export and serve -------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, table_classifier):
    """`tfkit export --model birds.keras --name birds` into a repository with half_plus_two."""
    root = tmp_path_factory.mktemp("export-command")
    table_classifier.save(root / "birds.keras")
    shutil.copytree(TESTDATA / REFERENCE_MODELS["half_plus_two"], root / "repo" / "half_plus_two")
    done = _tfkit("export", "--model", "birds.keras", "--name", "birds", "--models", "repo",
                  "--task", "multiclass", "--class-names", ",".join(PENGUIN_CLASSES), cwd=root)
    return done, root / "repo"


@pytest.fixture(scope="module")
def servers(exported, tmp_path_factory):
    """Started side by side (TensorFlow's start-up dominates): `default` with no --host,
    --workers or port default changed, configured by TFKIT_* variables; `plain`, the same
    repository with nothing set; `batching`, a TF Serving model config and batching flags."""
    _, repo = exported
    root = tmp_path_factory.mktemp("served")
    save_slow_model(root / "slow" / "1")
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "halfer" base_path: "{repo / 'half_plus_two'}" model_platform: "tensorflow" }}
  config {{ name: "slow" base_path: "{root / 'slow'}" model_platform: "tensorflow" }}
}}
""")
    started = {
        "default": _Serve(["--models", str(repo)], root / "default.log", env=ENV_SETTINGS),
        "plain": _Serve(["--models", str(repo), "--workers", "1"], root / "plain.log"),
        "batching": _Serve(["--model_config_file", str(config), "--workers", "1",
                            *BATCHING_FLAGS], root / "batching.log"),
    }
    try:
        for name, server in started.items():
            server.wait_ready("/v1/models/halfer" if name == "batching" else READY_PATH)
        yield started
    finally:
        for server in started.values():
            if server.process.poll() is None:  # all at once: they stop in parallel
                server.process.send_signal(signal.SIGINT)
        for server in started.values():
            server.quick_stop()


def test_export_command_writes_a_version_served_like_the_keras_model(exported, servers,
                                                                     table_classifier):
    done, repo = exported
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == os.path.join("repo", "birds", "1")
    assert (repo / "birds" / "1" / "saved_model.pb").is_file()
    instances = [{name: values[i] if name == "island" else float(values[i])
                  for name, values in PENGUIN_ROWS.items()}
                 for i in range(len(PENGUIN_ROWS["island"]))]
    response = _post(servers["plain"].url + "/v1/models/birds:predict", {"instances": instances})
    assert response.status_code == 200, response.text
    expected = table_classifier({name: values.reshape(-1, 1)
                                 for name, values in PENGUIN_ROWS.items()}).numpy()
    served = response.json()["predictions"]
    np.testing.assert_allclose([row["probabilities"] for row in served], expected, atol=1e-5)
    assert [row["classes"] for row in served] == [PENGUIN_CLASSES[i]
                                                 for i in expected.argmax(axis=1)]


@pytest.mark.parametrize("path, body, status", [
    ("/v1/models/birds:predict",
     {"instances": [{"island": "Dream", "bill_length_mm": 48.7, "body_mass_g": 3500.0}]}, 200),
    ("/v2/models/half_plus_two/infer",
     {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 5.0]}]}, 200),
    ("/v1/models/half_plus_two:predict", {"instances": "not a list"}, 400),
], ids=["tf-serving", "kserve-v2", "error"])
def test_chunked_body_is_answered_byte_for_byte_as_a_sized_one(servers, path, body, status):
    url = servers["plain"].url + path
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    sized = requests.post(url, data=data, headers=headers, timeout=HTTP_SECONDS)
    chunked = requests.post(url, data=iter([data[:10], data[10:]]), headers=headers,
                            timeout=HTTP_SECONDS)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in chunked.request.headers
    assert sized.status_code == status, sized.text
    assert (chunked.status_code, chunked.headers["Content-Type"], chunked.content) == (
        sized.status_code, sized.headers["Content-Type"], sized.content)


def test_serve_defaults_to_loopback_and_one_worker_per_core(servers):
    server = servers["default"]
    workers = os.cpu_count()
    _poll(lambda: len(_children(server.process.pid)) == workers, f"{workers} workers",
          server=server)
    # With several workers each listens on its own socket once its models are loaded.
    sockets = workers if workers > 1 else 1  # several workers: one socket each, once loaded
    addresses = _poll(lambda: len(found := _listening(server.port)) == sockets and found,
                      f"{sockets} listening sockets", server=server)
    assert set(addresses) == {"127.0.0.1"}
    assert f"Serving on http://127.0.0.1:{server.port}" in server.log()


def test_default_server_refuses_this_machines_other_address(servers):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect: picks a route, sends nothing
        except OSError:
            pytest.skip("no route off loopback here, so no other local address to try")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has only a loopback address")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, servers["default"].port), timeout=5).close()


def test_serve_listens_on_8501_by_default(tmp_path):
    if _listening(README_PORT):
        pytest.skip(f"port {README_PORT} is already taken on this machine")
    server = _Serve(["--models", str(tmp_path), "--workers", "1"], tmp_path / "serve.log",
                    default_port=True)
    try:
        listeners = _poll(lambda: _listeners(README_PORT), f"socket on port {README_PORT}",
                          server=server)
        assert [address for address, _ in listeners] == ["127.0.0.1"]
        assert listeners[0][1] in _socket_inodes(server.process.pid)  # this server's socket
        assert f"Serving on http://127.0.0.1:{README_PORT}" in server.log()
    finally:
        server.quick_stop()


def test_env_max_json_depth_refuses_deeper_requests(servers):
    deeper = {"inputs": {"x": [1.0, 2.0]}}  # 3 levels; TFKIT_MAX_JSON_DEPTH=2
    path = "/v1/models/half_plus_two:predict"
    refused = _post(servers["default"].url + path, deeper, AUTH)
    assert refused.status_code == 400 and "max_json_depth" in refused.json()["error"]
    assert _post(servers["default"].url + path, {"instances": [1.0, 2.0]}, AUTH).json() == {
        "predictions": [2.5, 3.0]}
    assert _post(servers["plain"].url + path, deeper).json() == {"outputs": [2.5, 3.0]}


def test_env_max_batch_rows_refuses_more_rows(servers):
    three = {"instances": [1.0, 2.0, 5.0]}  # TFKIT_MAX_BATCH_ROWS=2
    path = "/v1/models/half_plus_two:predict"
    refused = _post(servers["default"].url + path, three, AUTH)
    assert refused.status_code == 400 and "max_batch_rows" in refused.json()["error"]
    assert _post(servers["plain"].url + path, three).json() == {"predictions": [2.5, 3.0, 4.5]}


@pytest.mark.parametrize("server, origin, allowed", [
    ("default", APP_ORIGIN, True),
    ("default", "https://elsewhere.example.com", False),
    ("plain", APP_ORIGIN, False),
])
def test_env_cors_origins_are_the_ones_allowed(servers, server, origin, allowed):
    response = requests.get(servers[server].url + READY_PATH, headers={"Origin": origin},
                            timeout=HTTP_SECONDS)
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


@pytest.mark.parametrize("server, headers, status", [
    ("default", {}, 401),
    ("default", {"Authorization": "Bearer wrong"}, 401),
    ("default", AUTH, 200),
    ("plain", {}, 200),
])
def test_env_auth_token_guards_predictions(servers, server, headers, status):
    response = _post(servers[server].url + "/v1/models/half_plus_two:predict",
                     {"instances": [1.0]}, headers)
    assert response.status_code == status, response.text


@pytest.mark.parametrize("env, warned", [({}, True), ({"TFKIT_AUTH_TOKEN": TOKEN}, False)],
                         ids=["no-token", "token"])
def test_all_interfaces_warn_without_a_token(tmp_path, env, warned):
    """The warning comes at start, before any socket opens. So that no test listens beyond
    loopback, the port is held here on 127.0.0.1: the server, asked for 0.0.0.0 on it, warns
    (or not), finds the port taken and stops, leaving nothing behind."""
    models, temp = tmp_path / "models", tmp_path / "temp"  # temp: the server's temporary files
    models.mkdir()
    temp.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        done = _tfkit("serve", "--models", str(models), "--workers", "2", "--host", "0.0.0.0",
                      "--port", str(port), cwd=tmp_path, env=_env(TMPDIR=str(temp), **env),
                      timeout=LISTEN_SECONDS)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"cannot listen on 0.0.0.0:{port}" in done.stderr, done.stderr[-3000:]
    assert ("Binding 0.0.0.0 without a token" in done.stderr) is warned, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # The workers' metrics folder is made only once the port is known to be free.
    assert list(temp.iterdir()) == []


def test_model_config_file_serves_the_models_it_names(servers):
    url = servers["batching"].url
    assert _post(url + "/v1/models/halfer:predict", {"instances": [1.0, 2.0, 5.0]}).json() == {
        "predictions": [2.5, 3.0, 4.5]}
    assert _post(url + "/v1/models/slow:predict", {"instances": [3.0]}).json() == {
        "predictions": [3.0]}
    # The folder's own name is not a model here: the config names what is served.
    assert requests.get(url + "/v1/models/half_plus_two", timeout=HTTP_SECONDS).status_code == 404


def _batching_counts(url: str) -> tuple[float, float]:
    """The slow model's runs so far and the rows they took, from the metrics page."""
    text = requests.get(url + "/monitoring/prometheus/metrics", timeout=HTTP_SECONDS).text
    name = ':tensorflow:serving:batching_session:input_batch_size_{}{{model_name="slow"}} '
    values = {}
    for part in ("count", "sum"):
        line = next(line for line in text.splitlines() if line.startswith(name.format(part)))
        values[part] = float(line.rsplit(" ", 1)[1])
    return values["count"], values["sum"]


def test_full_queue_answers_503_and_waiting_requests_run_merged(servers):
    url = servers["batching"].url + "/v1/models/slow:predict"
    assert _post(url, {"instances": [0.0]}).status_code == 200  # the session is warm
    milliseconds = 1000.0 * SLOW_RUN_SECONDS
    runs_before, rows_before = _batching_counts(servers["batching"].url)
    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(lambda _: _post(url, {"instances": [milliseconds]}),
                                range(BURST)))
    statuses = collections.Counter(a.status_code for a in answers)
    assert statuses == {200: 5, 503: 4}, [a.text for a in answers]
    assert all(a.json() == {"predictions": [milliseconds]} for a in answers
               if a.status_code == 200)
    assert all("queue" in a.json()["error"] and "full" in a.json()["error"] for a in answers
               if a.status_code == 503)
    runs, rows = _batching_counts(servers["batching"].url)
    assert (runs - runs_before, rows - rows_before) == (2, 5)  # alone, then 4 merged
