"""Serving speed: `tfkit serve` against a KServe model server and a model-less Flask ceiling.

One SavedModel (a 32 → 128 → 2 MLP, exported by tfkit) is served several ways on
127.0.0.1, and `wrk` (a C load generator) sends the same TF Serving-format
request to each, `{"instances": [[32 floats]]}`:

- tfkit: `tfkit serve --models DIR` with its defaults (also its /v2 infer route);
- tfkit-flask: the same with `TFKIT_DIRECT_INFERENCE=false`, every request through
  Flask's dispatch (what the short path of serving/direct.py saves);
- kserve: a KServe Python `ModelServer` (its defaults) with a custom `kserve.Model`
  that loads the same SavedModel with `tf.saved_model.load`, answering the same
  JSON on KServe's own `/v1/models/{name}:predict`;
- ceiling: a Flask app with no model that parses the JSON body and answers fixed
  bytes, under the same WSGI server, workers and threads as `tfkit serve`: the most
  a model server whose requests go through Flask's dispatch can do here;
- ceiling-wsgi: the same with no framework at all, a bare WSGI function: the most
  any Python model server under this WSGI server can do. (tfkit answers its
  inference routes straight from WSGI, without Flask's dispatch; see
  serving/direct.py. So it is compared with both.)

Each round runs every server at 16 connections (throughput) and at 1 connection
(median latency), interleaved, so load from elsewhere hits all of them alike;
the table shows the median over rounds.

    pip install -e '.[bench]'   # kserve; and wrk: apt-get install wrk
    python benchmarks/serve_speed.py --seconds 10 --rounds 3 --results benchmarks/RESULTS.md

KServe pins its own dependency versions; `--kserve-python` runs it from another
virtual environment (one with kserve and tensorflow) if it cannot share this one.

gRPC against REST on the same `tfkit serve` (`--grpc`; `--grpc-only` runs just this):
the same multi-process Python load generator (16 callers: processes × threads, each
its own keep-alive connection or channel, sending bytes made once) calls TF Serving's
`Predict` with one 32-float row (`tensor_content`) and `:predict` with the same row
as JSON, at 16 callers (throughput) and 1 caller (median latency); then a 1 MiB
float32 tensor, [256, 1024], is sent end to end 20 times each way, with the client's
encoding and decoding timed too: gRPC with `tensor_content`, REST as JSON rows
(`orjson`, the fastest JSON encoder here). On Linux each run also counts the CPU time
and context switches per call of the server's processes and of the callers'.

    python benchmarks/serve_speed.py --grpc-only --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = "mlp"
START_SECONDS = 180
WIDE = "wide"  # a 1024 → 2 model for the 1 MiB request
CALLERS = 16
CALLER_PROCESSES = 4
LARGE_ROUNDS = 20

KSERVE_MODEL = '''
"""A KServe custom model around the benchmark's SavedModel."""
import sys

import kserve
import numpy as np
import tensorflow as tf


class SavedModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        self.signature = tf.saved_model.load(self.path).signatures["serving_default"]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        x = np.asarray(payload["instances"], dtype=np.float32)
        out = self.signature(features=tf.constant(x))
        rows = zip(out["class_ids"].numpy(), out["classes"].numpy(),
                   out["probabilities"].numpy())
        return {"predictions": [
            {"class_ids": int(i), "classes": c.decode(), "probabilities": p.tolist()}
            for i, c, p in rows
        ]}


if __name__ == "__main__":
    name, path, http_port, grpc_port = sys.argv[1:5]
    server = kserve.ModelServer(http_port=int(http_port), grpc_port=int(grpc_port))
    server.start([SavedModel(name, path)])
'''

CEILING_APP = '''
"""The ceiling: a Flask app that parses the request like a model server and answers, no model."""
import orjson
from flask import Flask, Response, request

app = Flask(__name__)
ANSWER = orjson.dumps(
    {"predictions": [{"class_ids": 0, "classes": "no", "probabilities": [0.5, 0.5]}]}
)


@app.get("/ready")
def ready():
    return ""


@app.post("/v1/models/<target>")
def predict(target):
    orjson.loads(request.get_data(cache=False))
    return Response(ANSWER, mimetype="application/json")
'''

CEILING_WSGI_APP = '''
"""The bare ceiling: a WSGI function that reads and parses the body and answers, no model."""
import orjson

ANSWER = orjson.dumps(
    {"predictions": [{"class_ids": 0, "classes": "no", "probabilities": [0.5, 0.5]}]}
)
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))]


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
    start_response("200 OK", HEADERS)
    return [ANSWER]
'''

WRK_SCRIPT = '''
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/json"
'''


def export_model(base: pathlib.Path) -> pathlib.Path:
    import keras

    from tfkit.export import export_model as export

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(32,), name="features")
    hidden = keras.layers.Dense(128, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    return export(model, base / MODEL, task="multiclass", class_names=["no", "yes"])


def export_wide(base: pathlib.Path) -> pathlib.Path:
    import keras

    from tfkit.export import export_model as export

    inputs = keras.Input(shape=(1024,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    return export(model, base / WIDE, task="regression")


def _caller(kind: str, target: str, body: bytes, seconds: float, threads: int, out) -> None:
    """One load-generator process: ``threads`` callers, each calling until the deadline.
    Also sends back what the process spent: CPU seconds and context switches (all threads)."""
    import http.client
    import resource
    import threading

    counts, latencies = [], []

    def call_loop() -> None:
        if kind == "grpc":
            import grpc

            channel = grpc.insecure_channel(target)
            call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            send = lambda: call(body, timeout=30)  # noqa: E731 - bytes in, bytes out
        else:
            host, path = target.split("/", 1)
            connection = http.client.HTTPConnection(host, timeout=30)
            headers = {"Content-Type": "application/json"}

            def send() -> bytes:
                connection.request("POST", "/" + path, body, headers)
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(data[:200])
                return data

        send()  # connect before the clock starts
        done, mine = 0, []
        deadline = time.perf_counter() + seconds
        while (start := time.perf_counter()) < deadline:
            send()
            mine.append(time.perf_counter() - start)
            done += 1
        counts.append(done)
        latencies.extend(mine)

    before = resource.getrusage(resource.RUSAGE_SELF)
    workers = [threading.Thread(target=call_loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
             after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw)
    out.put((sum(counts), latencies, spent))


def load(kind: str, target: str, body: bytes, callers: int, seconds: float,
         server: Server | None = None) -> dict[str, float]:
    """Calls per second and median latency of ``callers`` concurrent callers (spawned
    processes, so no client shares a GIL with more than a few others).

    With ``server`` (on Linux), also the CPU time and context switches per call of the
    server (all its processes) and of the callers' processes: what the 2 cores do per call.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = min(callers, CALLER_PROCESSES)
    out = context.Queue()
    started = [context.Process(target=_caller,
                               args=(kind, target, body, seconds, callers // processes, out))
               for _ in range(processes)]
    before = server.counters() if server is not None else None
    for process in started:
        process.start()
    results = [out.get(timeout=seconds + 120) for _ in started]
    after = server.counters() if server is not None else None
    for process in started:
        process.join(timeout=30)
    latencies = [x for _, lat, _ in results for x in lat]
    calls = sum(n for n, _, _ in results)
    found = {"rps": calls / seconds, "p50_ms": statistics.median(latencies) * 1e3}
    if before is not None and after is not None and calls:
        # Each caller makes one untimed call (the connection) before the clock starts.
        made = calls + callers
        found.update(
            server_cpu_us=(after[0] - before[0]) / made * 1e6,
            server_switches=(after[1] - before[1]) / made,
            client_cpu_us=sum(s[0] for _, _, s in results) / made * 1e6,
            client_switches=sum(s[1] for _, _, s in results) / made,
        )
    return found


def grpc_comparison(server: Server, grpc_port: int, seconds: float, rounds: int,
                    work: pathlib.Path) -> dict:
    """gRPC ``Predict`` against REST ``:predict`` on one server: small rows and 1 MiB.

    With ``wrk`` installed, REST is also loaded by it (a C client, cheaper per call than
    Python's ``http.client``) at 16 connections, for reference."""
    import grpc
    import numpy as np
    import orjson
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    x = np.array([[round(0.01 * i - 0.15, 4) for i in range(32)]], np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(x))
    small = {"grpc": (f"127.0.0.1:{grpc_port}", request.SerializeToString()),
             "rest": (f"127.0.0.1:{server.port}/v1/models/{MODEL}:predict",
                      orjson.dumps({"instances": x.tolist()}))}
    runs: dict[str, list[dict]] = {f"{k}-c{c}": [] for k in small for c in (CALLERS, 1)}
    script = None
    if shutil.which("wrk"):
        (work / "grpc-rest.json").write_bytes(small["rest"][1])
        script = work / "grpc-rest.lua"
        script.write_text(WRK_SCRIPT.format(body=work / "grpc-rest.json"))
        runs[f"wrk-c{CALLERS}"] = []
    for kind, (target, body) in small.items():  # warm-up, not counted
        load(kind, target, body, 4, 1)
    for round_ in range(rounds):
        for callers in (CALLERS, 1):
            for kind, (target, body) in small.items():
                result = load(kind, target, body, callers, seconds, server)
                runs[f"{kind}-c{callers}"].append(result)
                print(f"round {round_ + 1} {kind} callers={callers:2d} {result['rps']:8.0f} "
                      f"calls/s  p50 {result['p50_ms']:.2f} ms{_per_call(result)}", flush=True)
            if script is not None and callers == CALLERS:
                result = wrk(f"{server.url}/v1/models/{MODEL}:predict", script, CALLERS, seconds)
                runs[f"wrk-c{CALLERS}"].append(result)
                print(f"round {round_ + 1} rest (wrk) connections={CALLERS} "
                      f"{result['rps']:8.0f} calls/s  p50 {result['p50_ms']:.2f} ms", flush=True)

    wide = np.random.default_rng(0).normal(size=(256, 1024)).astype(np.float32)  # 1 MiB
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}",
                                    options=[("grpc.max_receive_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def by_grpc() -> np.ndarray:
        call = predict_pb2.PredictRequest()
        call.model_spec.name = WIDE
        tensor = call.inputs["features"]
        tensor.dtype = tf.float32.as_datatype_enum
        tensor.tensor_shape.dim.add(size=256)
        tensor.tensor_shape.dim.add(size=1024)
        tensor.tensor_content = wide.tobytes()
        return tf.make_ndarray(stub.Predict(call, timeout=60).outputs["predictions"])

    def by_rest() -> np.ndarray:
        import http.client

        connection = http.client.HTTPConnection(f"127.0.0.1:{server.port}", timeout=60)
        body = orjson.dumps({"instances": wide}, option=orjson.OPT_SERIALIZE_NUMPY)
        connection.request("POST", f"/v1/models/{WIDE}:predict", body,
                           {"Content-Type": "application/json"})
        answer = orjson.loads(connection.getresponse().read())
        connection.close()
        return np.asarray(answer["predictions"], np.float32)

    np.testing.assert_allclose(by_grpc(), by_rest(), rtol=1e-4, atol=1e-4)  # and warm-up
    large: dict[str, list[float]] = {"grpc": [], "rest": []}
    for _ in range(LARGE_ROUNDS):
        for kind, send in (("grpc", by_grpc), ("rest", by_rest)):
            start = time.perf_counter()
            send()
            large[kind].append((time.perf_counter() - start) * 1e3)
    channel.close()
    median = {k: statistics.median(v) for k, v in large.items()}
    print(f"1 MiB: grpc {median['grpc']:.1f} ms, rest {median['rest']:.1f} ms", flush=True)
    return {"runs": runs, "large_ms": median, "large_runs": large}


def _per_call(result: dict) -> str:
    if "server_cpu_us" not in result:
        return ""
    return (f"  per call: server {result['server_cpu_us']:.0f} µs CPU, "
            f"{result['server_switches']:.1f} switches; client {result['client_cpu_us']:.0f} µs, "
            f"{result['client_switches']:.1f}")


def grpc_markdown(found: dict, meta: dict) -> str:
    runs = found["runs"]
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms")}
           for k, v in runs.items()}
    rows = ["| transport | calls/s @16 callers | p50 ms @16 | calls/s @1 caller | p50 ms @1 |",
            "|---|---:|---:|---:|---:|"]
    for kind, label in (("grpc", "gRPC `Predict`"), ("rest", "REST `:predict` (JSON)")):
        a, b = med[f"{kind}-c{CALLERS}"], med[f"{kind}-c1"]
        rows.append(f"| {label} | {a['rps']:.0f} | {a['p50_ms']:.2f} | {b['rps']:.0f} "
                    f"| {b['p50_ms']:.2f} |")
    if f"wrk-c{CALLERS}" in med:
        a = med[f"wrk-c{CALLERS}"]
        rows.append(f"| REST `:predict` (JSON), wrk's C client | {a['rps']:.0f} "
                    f"| {a['p50_ms']:.2f} | | |")
    throughput = med[f"grpc-c{CALLERS}"]["rps"] / med[f"rest-c{CALLERS}"]["rps"]
    each = [g["rps"] / r["rps"] for g, r in zip(runs[f"grpc-c{CALLERS}"],
                                                runs[f"rest-c{CALLERS}"], strict=True)]
    latency = med["grpc-c1"]["p50_ms"] / med["rest-c1"]["p50_ms"]
    large = found["large_ms"]["rest"] / found["large_ms"]["grpc"]
    return "\n".join([
        f"Run {meta['date']} on {meta['machine']}; {meta['seconds']} s per run, "
        f"{meta['rounds']} interleaved rounds, median shown; load average before: "
        f"{meta['load']}. Command: `{meta['command']}`",
        "",
        *rows,
        "",
        f"- gRPC / REST throughput, one 32-float row, {CALLERS} callers: **{throughput:.2f}×** "
        f"(goal ≥ 1×: {'met' if throughput >= 1 else 'NOT met'}); each round: "
        + ", ".join(f"{r:.2f}" for r in each),
        *([f"- gRPC (Python client) / REST (wrk) throughput at {CALLERS}: **"
            f"{med[f'grpc-c{CALLERS}']['rps'] / med[f'wrk-c{CALLERS}']['rps']:.2f}×**"]
          if f"wrk-c{CALLERS}" in med else []),
        f"- gRPC / REST median latency, one row, 1 caller: **{latency:.2f}×** "
        f"(goal ≤ 1×: {'met' if latency <= 1 else 'NOT met'}); each round, gRPC "
        + ", ".join(f"{r['p50_ms']:.2f}" for r in runs["grpc-c1"]) + " ms against REST "
        + ", ".join(f"{r['p50_ms']:.2f}" for r in runs["rest-c1"]),
        *_work_per_call(runs),
        f"- 1 MiB float32 [256, 1024], end to end, median of {LARGE_ROUNDS}: gRPC "
        f"`tensor_content` {found['large_ms']['grpc']:.1f} ms, REST JSON "
        f"{found['large_ms']['rest']:.1f} ms: gRPC **{large:.1f}×** faster "
        f"(goal ≥ 5×: {'met' if large >= 5 else 'NOT met'})",
    ])


def _work_per_call(runs: dict) -> list[str]:
    """What one call at 1 caller costs the machine, by transport (median over rounds)."""
    keys = ("server_cpu_us", "server_switches", "client_cpu_us", "client_switches")
    if not all(k in r for kind in ("grpc", "rest") for r in runs[f"{kind}-c1"] for k in keys):
        return []
    g, r = ({k: statistics.median(run[k] for run in runs[f"{kind}-c1"]) for k in keys}
            for kind in ("grpc", "rest"))
    return [f"- per call at 1 caller, median over rounds: gRPC server {g['server_cpu_us']:.0f} µs "
            f"CPU and {g['server_switches']:.1f} context switches (all its processes), client "
            f"{g['client_cpu_us']:.0f} µs and {g['client_switches']:.1f}; REST server "
            f"{r['server_cpu_us']:.0f} µs and {r['server_switches']:.1f}, client "
            f"{r['client_cpu_us']:.0f} µs and {r['client_switches']:.1f}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process in its own process group, with its log in a file."""

    def __init__(self, name: str, args: list[str], port: int, log: pathlib.Path,
                 ready: str, env: dict[str, str] | None = None) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        self._file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, cwd=REPO, stdout=self._file, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                 **(env or {})},
            start_new_session=True,
        )
        self._wait(ready)

    def _wait(self, path: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {START_SECONDS}s")

    def counters(self) -> tuple[float, int] | None:
        """CPU seconds and context switches so far of the server's processes (the master
        and its workers, every thread); None where ``/proc`` does not say."""
        pids, cpu, switches = [self.process.pid], 0.0, 0
        try:
            for pid in pids:
                with open(f"/proc/{pid}/task/{pid}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                for task in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(FileNotFoundError), \
                            open(f"/proc/{pid}/task/{task}/status") as status:
                        switches += sum(int(line.split()[1]) for line in status
                                        if "ctxt_switches:" in line)
        except (OSError, ValueError):
            return None
        return cpu, switches

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._file.close()


def tfkit_defaults() -> dict[str, int]:
    """`tfkit serve`'s thread and worker defaults, so the ceilings run the same way."""
    from serving.cli import add_serve_arguments

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    return {"threads": args.rest_api_num_threads, "workers": getattr(args, "workers", 1)}


def gunicorn_args(defaults: dict[str, int]) -> list[str]:
    """Gunicorn flags for the ceilings: the workers, threads and sockets `tfkit serve` uses."""
    args = ["-k", "gthread", "-w", str(defaults["workers"]), "--threads", str(defaults["threads"]),
            "--keep-alive", "5"]
    return args + (["--reuse-port"] if defaults["workers"] > 1 else [])


def wrk(url: str, script: pathlib.Path, connections: int, seconds: float) -> dict[str, float]:
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)),
        "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)),
        "requests": requests,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def versions(kserve_python: str) -> dict[str, str]:
    from importlib.metadata import version

    found = {name: version(name) for name in ("tensorflow", "flask", "gunicorn", "orjson")}
    found["python"] = platform.python_version()
    found["kserve"] = subprocess.run(
        [kserve_python, "-c", "import kserve, importlib.metadata as m; "
                              "print(m.version('kserve'))"],
        capture_output=True, text=True, timeout=120,
    ).stdout.strip() or "not installed"
    found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return found


def markdown(results: dict, meta: dict, runs: dict | None = None) -> str:
    rows = [
        "| server | route | req/s @16 conns | p50 ms @16 | req/s @1 conn | p50 ms @1 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | `{r['route']}` | {r['c16']['rps']:.0f} | {r['c16']['p50_ms']:.2f} "
            f"| {r['c1']['rps']:.0f} | {r['c1']['p50_ms']:.2f} | {r['non_2xx']} |"
        )
    t, k, c = results.get("tfkit"), results.get("kserve"), results.get("ceiling")
    w = results.get("ceiling-wsgi")
    lines = []
    if t and k:
        ratio = t["c16"]["rps"] / k["c16"]["rps"]
        lines.append(f"- tfkit / KServe throughput at 16 connections: **{ratio:.2f}×** "
                     f"(goal ≥ 3×: {'met' if ratio >= 3 else 'NOT met'})")
        lat = t["c1"]["p50_ms"] / k["c1"]["p50_ms"]
        lines.append(f"- tfkit / KServe median latency at 1 connection: **{lat:.2f}×** "
                     f"(goal ≤ 1×: {'met' if lat <= 1 else 'NOT met'})")
    if t and c:
        ratio = t["c16"]["rps"] / c["c16"]["rps"]
        lines.append(f"- tfkit / model-less Flask ceiling at 16 connections: **{ratio:.2f}×** "
                     f"(goal ≥ 0.75×: {'met' if ratio >= 0.75 else 'NOT met'})")
    if t and w:
        ratio = t["c16"]["rps"] / w["c16"]["rps"]
        lines.append(f"- tfkit / model-less bare WSGI ceiling at 16 connections: **{ratio:.2f}×**")
    for other, label in (("kserve", "KServe"), ("ceiling", "Flask ceiling")):
        if runs and "tfkit" in runs and other in runs:
            ratios = [a["rps"] / b["rps"]
                      for a, b in zip(runs["tfkit"]["c16"], runs[other]["c16"], strict=True)]
            lines.append(f"- tfkit / {label} at 16 connections, each round: "
                         + ", ".join(f"{r:.2f}" for r in ratios)
                         + f" (median {statistics.median(ratios):.2f})")
    bad = sum(r["non_2xx"] + r["socket_errors"] for r in results.values())
    lines.append(f"- non-2xx responses and socket errors, all runs: **{bad}**")
    return "\n".join([
        f"Run {meta['date']} on {meta['machine']}; {meta['seconds']} s per run, "
        f"{meta['rounds']} interleaved rounds, median shown; load average before: "
        f"{meta['load']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        f"Command: `{meta['command']}`",
        "",
        *rows,
        "",
        *lines,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--kserve-python", default=sys.executable,
                        help="interpreter with kserve and tensorflow installed")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["tfkit-v2", "tfkit-flask", "kserve"], help="servers to leave out")
    parser.add_argument("--results", type=pathlib.Path, default=None,
                        help="append the markdown table to this file")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write raw numbers")
    parser.add_argument("--grpc", action="store_true",
                        help="also compare gRPC with REST on tfkit's server")
    parser.add_argument("--grpc-only", action="store_true",
                        help="only the gRPC and REST comparison (no wrk, no other servers)")
    args = parser.parse_args()
    if args.grpc_only:
        args.grpc = True
        args.skip = ["tfkit-v2", "tfkit-flask", "kserve"]
    elif shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")

    work = pathlib.Path(tempfile.mkdtemp(prefix="serve-speed-"))
    servers: dict[str, Server] = {}
    try:
        export_model(work / "models")
        if args.grpc:
            export_wide(work / "models")
        x = [round(0.01 * i - 0.15, 4) for i in range(32)]
        bodies = {
            "v1": {"instances": [x]},
            "v2": {"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32",
                               "data": x}]},
        }
        scripts = {}
        for name, body in bodies.items():
            (work / f"{name}.json").write_text(json.dumps(body))
            scripts[name] = work / f"{name}.lua"
            scripts[name].write_text(WRK_SCRIPT.format(body=work / f"{name}.json"))
        (work / "ceiling.py").write_text(textwrap.dedent(CEILING_APP))
        (work / "ceiling_wsgi.py").write_text(textwrap.dedent(CEILING_WSGI_APP))
        (work / "kserve_model.py").write_text(textwrap.dedent(KSERVE_MODEL))

        port, grpc_port = free_port(), free_port()
        servers["tfkit"] = Server(
            "tfkit", [sys.executable, "-m", "tfkit.cli", "serve", "--models",
                      str(work / "models"), "--port", str(port),
                      *(["--grpc-port", str(grpc_port)] if args.grpc else [])],
            port, work / "tfkit.log", f"/v1/models/{MODEL}",
        )
        meta = {
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "seconds": args.seconds, "rounds": args.rounds,
            "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
            "command": "python benchmarks/serve_speed.py " + " ".join(sys.argv[1:]),
        }
        if args.grpc:
            found = grpc_comparison(servers["tfkit"], grpc_port, args.seconds, args.rounds, work)
            table = grpc_markdown(found, meta)
            print("\n" + table)
            if args.results:
                with open(args.results, "a") as out:
                    out.write("\n" + table + "\n")
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "grpc": found}, indent=2))
            if args.grpc_only:
                return
        if "tfkit-flask" not in args.skip:
            port = free_port()
            servers["tfkit-flask"] = Server(
                "tfkit-flask", [sys.executable, "-m", "tfkit.cli", "serve", "--models",
                                str(work / "models"), "--port", str(port)],
                port, work / "tfkit-flask.log", f"/v1/models/{MODEL}",
                env={"TFKIT_DIRECT_INFERENCE": "false"},
            )
        defaults = tfkit_defaults()
        for name, module in (("ceiling", "ceiling"), ("ceiling-wsgi", "ceiling_wsgi")):
            port = free_port()
            servers[name] = Server(
                name,
                [sys.executable, "-m", "gunicorn", "--chdir", str(work), *gunicorn_args(defaults),
                 "-b", f"127.0.0.1:{port}", f"{module}:app"],
                port, work / f"{module}.log", "/ready",
            )
        if "kserve" not in args.skip:
            port = free_port()
            servers["kserve"] = Server(
                "kserve", [args.kserve_python, str(work / "kserve_model.py"), MODEL,
                           str(work / "models" / MODEL / "1"), str(port), str(free_port())],
                port, work / "kserve.log", f"/v1/models/{MODEL}",
            )
        routes = {
            "tfkit": ("v1", f"/v1/models/{MODEL}:predict", servers["tfkit"]),
            "tfkit-v2": ("v2", f"/v2/models/{MODEL}/infer", servers["tfkit"]),
            "tfkit-flask": ("v1", f"/v1/models/{MODEL}:predict", servers.get("tfkit-flask")),
            "kserve": ("v1", f"/v1/models/{MODEL}:predict", servers.get("kserve")),
            "ceiling": ("v1", f"/v1/models/{MODEL}:predict", servers["ceiling"]),
            "ceiling-wsgi": ("v1", f"/v1/models/{MODEL}:predict", servers["ceiling-wsgi"]),
        }
        routes = {k: v for k, v in routes.items() if k not in args.skip}
        load = os.getloadavg()
        runs: dict[str, dict[str, list[dict]]] = {k: {"c16": [], "c1": []} for k in routes}
        for body, path, server in routes.values():  # warm-up, not counted
            wrk(server.url + path, scripts[body], 4, 2)
        for round_ in range(args.rounds):
            for connections in (16, 1):
                for name, (body, path, server) in routes.items():
                    result = wrk(server.url + path, scripts[body], connections, args.seconds)
                    runs[name][f"c{connections}"].append(result)
                    print(f"round {round_ + 1} {name:9s} c={connections:2d} "
                          f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                          f"non-2xx {result['non_2xx']}", flush=True)
        results = {}
        for name, by_c in runs.items():
            results[name] = {"route": routes[name][1]}
            for c, items in by_c.items():
                results[name][c] = {
                    "rps": statistics.median(r["rps"] for r in items),
                    "p50_ms": statistics.median(r["p50_ms"] for r in items),
                }
            everything = by_c["c16"] + by_c["c1"]
            results[name]["non_2xx"] = sum(r["non_2xx"] for r in everything)
            results[name]["socket_errors"] = sum(r["socket_errors"] for r in everything)
        meta = {
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "seconds": args.seconds, "rounds": args.rounds,
            "load": " ".join(f"{v:.1f}" for v in load),
            "versions": versions(args.kserve_python),
            "command": "python benchmarks/serve_speed.py " + " ".join(sys.argv[1:]),
        }
        table = markdown(results, meta, runs)
        print("\n" + table)
        if args.results:
            with open(args.results, "a") as out:
                out.write("\n" + table + "\n")
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "results": results, "runs": runs},
                                            indent=2))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
