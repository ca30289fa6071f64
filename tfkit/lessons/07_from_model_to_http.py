"""From model to HTTP: export a SavedModel, serve it, and ask it for predictions.

A trained model is useful when other programs can ask it questions. This
lesson trains a penguin classifier, exports it as a versioned SavedModel
(models/penguins/<version>/), starts tfkit's model server on it — the same as
running `tfkit serve --models models` — and asks for a prediction over HTTP,
printing each request as a `curl` command and sending it with Python's
`requests`:

    - in TensorFlow Serving's REST format (/v1/models/...), rows or columns;
    - in KServe's V2 format, the Open Inference Protocol (/v2/models/...).

Any TF Serving or KServe client works against the server unchanged, and the
same export can be handed to TF Serving or KServe themselves.

Run:  tfkit tutorial 7 [--fast]
  or  python tfkit/lessons/07_from_model_to_http.py [--fast] [--workdir DIR]
"""

import argparse
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

MODEL = "penguins"
SERVER_START_SECONDS = 180  # the server imports TensorFlow and loads the model first
# One bird, as its raw measurements: the exported model does its own preprocessing.
PENGUIN = {
    "island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8,
    "flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "female", "year": 2009.0,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer epochs")
    parser.add_argument("--workdir", default=".",
                        help="tensorboard_logs/ and models/ are written here")
    return parser.parse_args()


def train_and_export(workdir: str, epochs: int) -> str:
    models = os.path.join(workdir, "models")
    result = tfkit.train(
        "penguins", model="mlp", epochs=epochs, strategy="cpu", verbose=False,
        logdir=os.path.join(workdir, "tensorboard_logs"), run_name="07_from_model_to_http",
        resume=False, export=models, model_name=MODEL,
    )
    print(f"1. trained: validation accuracy {result.history['val_accuracy'][-1]:.3f} "
          f"after {epochs} epochs")
    print(f"2. exported to {result.export_path}/ — a new numbered folder per export, so a "
          "server can move to the new version without stopping")
    for name in sorted(os.listdir(result.export_path)):
        print(f"     {name}")
    return result.export_path


def show_signature(base: str) -> None:
    """What a client must send and gets back: the model's signature, from TF Serving's
    metadata request (`saved_model_cli show --dir <export> --all` shows it offline)."""
    print(f"   $ curl -s {base}/v1/models/{MODEL}/metadata")
    metadata = requests.get(f"{base}/v1/models/{MODEL}/metadata", timeout=30).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    print("   its 'serving_default' signature, what a request holds and an answer brings:")
    for direction in ("inputs", "outputs"):
        for name, tensor in sorted(signature[direction].items()):
            dims = [int(d.get("size", -1)) for d in tensor.get("tensor_shape", {}).get("dim", [])]
            print(f"     {direction[:-1]:<7} {name:<18} {tensor.get('dtype', '?'):<10} "
                  f"shape {dims} (-1: any number of rows)")


def start_server(models: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "serving", "--models", models,
               "--rest_api_port", str(port), "--host", "127.0.0.1"]
    print(f"\n3. starting the server: python {shlex.join(command[1:])}")
    print(f"   (from a shell: tfkit serve --models {models} --port {port})")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def wait_until_ready(server: subprocess.Popen, base: str) -> None:
    """Poll the model's status until its version is AVAILABLE, for a bounded time."""
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


def post(base: str, path: str, body: dict) -> dict:
    """Print the request as a curl command, send it with requests, print the answer."""
    url = base + path
    print(f"\n   $ curl -s -X POST {url} \\\n       -d {shlex.quote(json.dumps(body))}")
    answer = requests.post(url, json=body, timeout=30)
    print(f"   requests.post(...) → HTTP {answer.status_code}")
    answer.raise_for_status()
    print(f"   {json.dumps(answer.json())}")
    return answer.json()


def ask_tf_serving(base: str) -> dict:
    print("\n4. TensorFlow Serving's REST format")
    print("   Row format: a list of instances, each a dict of named inputs.")
    rows = post(base, f"/v1/models/{MODEL}:predict", {"instances": [PENGUIN]})
    print("   Column format: each input once, holding a list of values for every row.")
    columns = {name: [value] for name, value in PENGUIN.items()}
    post(base, f"/v1/models/{MODEL}:predict", {"inputs": columns})
    prediction = rows["predictions"][0]
    print(f"\n   The answer: {prediction['classes']} — probabilities "
          f"{[round(p, 3) for p in prediction['probabilities']]}")
    return prediction


def ask_kserve_v2(base: str) -> bool:
    print("\n5. KServe V2 (the Open Inference Protocol)")
    print(f"   $ curl -s {base}/v2/health/ready")
    ready = requests.get(f"{base}/v2/health/ready", timeout=10)
    if ready.status_code == 404:
        print("   skipped: this server does not speak KServe V2 yet "
              "(/v2/health/ready answered 404)")
        return False
    print(f"   requests.get(...) → HTTP {ready.status_code}")
    print("   Each input is a named tensor: its shape, its datatype and its values, flat.")
    inputs = [
        {"name": name, "shape": [1],
         "datatype": "BYTES" if isinstance(value, str) else "FP32", "data": [value]}
        for name, value in PENGUIN.items()
    ]
    answer = post(base, f"/v2/models/{MODEL}/infer", {"inputs": inputs})
    for output in answer.get("outputs", []):
        print(f"   output {output['name']!r}: {output['datatype']} {output['shape']} "
              f"{output['data']}")
    return True


def stop(server: subprocess.Popen) -> None:
    server.terminate()  # SIGTERM: the server finishes its requests and exits
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # port 0: the system picks a free one
        return sock.getsockname()[1]


def main() -> int:
    args = parse_args()
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("ERROR")  # TensorFlow's notices about its own deprecations
    export_path = train_and_export(args.workdir, epochs=5 if args.fast else 40)
    models = os.path.join(args.workdir, "models")
    server, base = start_server(models)
    try:
        wait_until_ready(server, base)
        show_signature(base)
        ask_tf_serving(base)
        ask_kserve_v2(base)
    finally:
        stop(server)
    print("\n6. server stopped")
    print(f"\nWrote: {export_path}")
    print(f"Wrote: {os.path.join(args.workdir, 'tensorboard_logs', '07_from_model_to_http')}")
    print(f"Look at: tensorboard --logdir {os.path.join(args.workdir, 'tensorboard_logs')}")
    print(f"Serve it yourself: tfkit serve --models {models}   (then the curl lines above "
          "work against port 8501)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
