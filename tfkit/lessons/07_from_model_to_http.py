# %% [markdown]
# # Lesson 7. From model to HTTP: export a SavedModel, serve it, and ask it for predictions
#
# A trained model is useful when other programs can ask it questions. This lesson trains a
# penguin classifier, exports it as a versioned SavedModel (`models/penguins/<version>/`),
# starts tfkit's model server on it (the same as running `tfkit serve --models models`) and
# asks for a prediction over HTTP, printing each request as a `curl` command and sending it
# with Python's `requests`:
#
# - in TensorFlow Serving's REST format (`/v1/models/...`), rows or columns;
# - in KServe's V2 format, the Open Inference Protocol (`/v2/models/...`);
# - and once over gRPC, with TF Serving's own client stubs (`tensorflow-serving-api`).
#
# Any TF Serving or KServe client works against the server unchanged, and the same export can
# be handed to TF Serving or KServe themselves.
#
# Also a script: `tfkit tutorial 7 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer epochs).

# %%
import atexit
import importlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import requests  # noqa: E402
import tensorflow as tf  # noqa: E402  (only to quiet its logger)

import tfkit  # noqa: E402
from tfkit import tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")  # TensorFlow's notices about its own deprecations
MODEL = "penguins"
SERVER_START_SECONDS = 180  # the server imports TensorFlow and loads the model first
models = os.path.join(WORKDIR, "models")

# %% [markdown]
# ## 1-2. Train and export
#
# `export=` names the model repository: each export is a new numbered folder, so a server can
# move to the new version without stopping.

# %%
epochs = 5 if FAST else 40
result = tfkit.train(
    "penguins", model="mlp", epochs=epochs, strategy="cpu", verbose=False,
    logdir=os.path.join(WORKDIR, "tensorboard_logs"), run_name="07_from_model_to_http",
    resume=False, export=models, model_name=MODEL,
)
print(f"1. trained: validation accuracy {result.history['val_accuracy'][-1]:.3f} "
      f"after {epochs} epochs")
print(f"2. exported to {result.export_path}/")
for name in sorted(os.listdir(result.export_path)):
    print(f"     {name}")

# %% [markdown]
# ## 3. Start the server
#
# On two free ports of 127.0.0.1 (port 0: the system picks one), REST's and gRPC's, in a
# process of its own, with TF Serving's flags: `--port` is gRPC's, `--rest_api_port` REST's.
# One worker process (`--workers 1`) is plenty for one learner's requests; without the flag
# the server starts one per CPU core, each loading TensorFlow and the model.
# Then poll the model's status until its version is `AVAILABLE`, for a bounded time. The
# server stops at the end of the lesson, or when this Python exits.


# %%
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


port, grpc_port = free_port(), free_port()
command = [sys.executable, "-m", "serving", "--models", models, "--port", str(grpc_port),
           "--rest_api_port", str(port), "--host", "127.0.0.1", "--workers", "1"]
print(f"3. starting the server: python {shlex.join(command[1:])}")
print(f"   (from a shell: tfkit serve --models {models} --port {grpc_port} "
      f"--rest_api_port {port})")
server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
base = f"http://127.0.0.1:{port}"


def wait_until_ready() -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            status = requests.get(f"{base}/v1/models/{MODEL}", timeout=5)
            states = [v["state"] for v in status.json().get("model_version_status", [])]
            if status.ok and "AVAILABLE" in states:
                print(f"   ready: GET /v1/models/{MODEL} → {status.json()}")
                return
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass  # not listening yet
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {SERVER_START_SECONDS}s")


def stop() -> None:
    server.terminate()  # SIGTERM: the server finishes its requests and exits
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


atexit.register(stop)  # should a later cell fail, the server still stops with Python
wait_until_ready()

# %% [markdown]
# What a client must send and gets back: the model's `serving_default` signature, from TF
# Serving's metadata request (`saved_model_cli show --dir <export> --all` shows it offline).
# A shape of -1 means any number of rows.

# %%
print(f"   $ curl -s {base}/v1/models/{MODEL}/metadata")
metadata = requests.get(f"{base}/v1/models/{MODEL}/metadata", timeout=30).json()
signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
for direction in ("inputs", "outputs"):
    for name, tensor in sorted(signature[direction].items()):
        dims = [int(d.get("size", -1)) for d in tensor.get("tensor_shape", {}).get("dim", [])]
        print(f"     {direction[:-1]:<7} {name:<18} {tensor.get('dtype', '?'):<10} shape {dims}")


# %%
def post(path: str, body: dict) -> dict:
    """Print the request as a curl command, send it with requests, print the answer."""
    url = base + path
    print(f"\n   $ curl -s -X POST {url} \\\n       -d {shlex.quote(json.dumps(body))}")
    answer = requests.post(url, json=body, timeout=30)
    print(f"   requests.post(...) → HTTP {answer.status_code}")
    answer.raise_for_status()
    print(f"   {json.dumps(answer.json())}")
    return answer.json()


# %% [markdown]
# ## 4. TensorFlow Serving's REST format
#
# One bird, as its raw measurements: the exported model does its own preprocessing. Row
# format: a list of instances, each a dict of named inputs. Column format: each input once,
# holding a list of values for every row.

# %%
PENGUIN = {
    "island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8,
    "flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "female", "year": 2009.0,
}
rows = post(f"/v1/models/{MODEL}:predict", {"instances": [PENGUIN]})
post(f"/v1/models/{MODEL}:predict", {"inputs": {name: [v] for name, v in PENGUIN.items()}})
prediction = rows["predictions"][0]
print(f"\n   The answer: {prediction['classes']} — probabilities "
      f"{[round(p, 3) for p in prediction['probabilities']]}")

# %% [markdown]
# ## 5. KServe V2, the Open Inference Protocol
#
# Each input is a named tensor: its shape, its datatype and its values, flat.

# %%
print(f"   $ curl -s {base}/v2/health/ready")
ready = requests.get(f"{base}/v2/health/ready", timeout=10)
print(f"   requests.get(...) → HTTP {ready.status_code}")
inputs = [{"name": name, "shape": [1], "datatype": "BYTES" if isinstance(value, str) else "FP32",
           "data": [value]} for name, value in PENGUIN.items()]
answer = post(f"/v2/models/{MODEL}/infer", {"inputs": inputs})
for output in answer.get("outputs", []):
    print(f"   output {output['name']!r}: {output['datatype']} {output['shape']} {output['data']}")

# %% [markdown]
# ## 6. The same question over gRPC
#
# Production TF Serving clients mostly speak gRPC: the request is a `PredictRequest`
# protobuf, each input a `TensorProto` (`tf.make_tensor_proto`), sent with the
# `PredictionService` stub from `tensorflow-serving-api`. The server answers with the same
# model, version and probabilities as over REST.

# %%
import grpc  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

request = predict_pb2.PredictRequest()
request.model_spec.name = MODEL
for name, value in PENGUIN.items():
    dtype = tf.string if isinstance(value, str) else tf.float32
    request.inputs[name].CopyFrom(tf.make_tensor_proto([value], dtype))
with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    grpc.channel_ready_future(channel).result(timeout=60)
    reply = stub.Predict(request, timeout=30)
print(f"   gRPC 127.0.0.1:{grpc_port} tensorflow.serving.PredictionService/Predict "
      f"→ version {reply.model_spec.version.value}")
probabilities = tf.make_ndarray(reply.outputs["probabilities"])[0]
print(f"   probabilities {[round(float(p), 3) for p in probabilities]} "
      f"(REST: {[round(p, 3) for p in prediction['probabilities']]})")

# %% [markdown]
# ## 7. Stop the server
#
# SIGTERM: the server finishes the requests it has and exits. From a shell,
# `tfkit serve --models tfkit_lessons/models` serves the same export on port 8501, and the
# `curl` lines above work against it.

# %%
stop()
print("7. server stopped")
print(f"Wrote: {result.export_path}")
print(f"Wrote: {os.path.join(WORKDIR, 'tensorboard_logs', '07_from_model_to_http')}")
print(f"Look at: tensorboard --logdir {os.path.join(WORKDIR, 'tensorboard_logs')}")
