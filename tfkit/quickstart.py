"""`tfkit quickstart`: train → TensorBoard logs → SavedModel → a real HTTP prediction."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import tfkit

SERVER_START_SECONDS = 120


def run(*, epochs: int = 20, models: str = "models", logdir: str = "tensorboard_logs") -> int:
    """Train an MLP on the bundled penguins, export it, serve it, and ask it one question.

    Returns:
        The process exit code (0 when the served model answered).
    """
    print(f"1/4 training an MLP on the bundled penguins table for {epochs} epochs ...")
    result = tfkit.train(
        "penguins", target="species", model="mlp", epochs=epochs, export=models, logdir=logdir
    )
    history = result.history
    print(
        f"    final loss {history['loss'][-1]:.4f}, validation accuracy "
        f"{history['val_accuracy'][-1]:.3f} ({len(history['loss'])} epochs)"
    )
    print(f"2/4 TensorBoard run written to {result.logdir}")
    print(f"3/4 SavedModel exported to {result.export_path}")
    row = {
        "island": "Biscoe", "bill_length_mm": 45.2, "bill_depth_mm": 14.8,
        "flipper_length_mm": 212.0, "body_mass_g": 5200.0, "sex": "female", "year": 2009.0,
    }
    port = _free_port()
    name = os.path.basename(os.path.dirname(result.export_path))
    print(f"4/4 serving {models}/ on http://127.0.0.1:{port} and asking for one prediction ...")
    server = subprocess.Popen(
        # One worker is enough for one prediction; the default starts one per CPU core.
        [sys.executable, "-m", "serving", "--models", models, "--rest_api_port", str(port),
         "--host", "127.0.0.1", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        answer = _predict(port, name, row)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"    POST /v1/models/{name}:predict {json.dumps({'instances': [row]})}")
    print(f"    -> {json.dumps(answer)}")
    print(
        "\nLook at the run:    tensorboard --logdir " + logdir + "\n"
        f"Serve the models:   tfkit serve --models {models}\n"
        f"Ask for a prediction: curl -s -X POST http://127.0.0.1:8501/v1/models/{name}:predict "
        f"-d '{json.dumps({'instances': [row]})}'"
    )
    return 0


def _predict(port: int, name: str, row: dict) -> dict:
    url = f"http://127.0.0.1:{port}/v1/models/{name}:predict"
    body = json.dumps({"instances": [row]}).encode()
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            request = urllib.request.Request(url, data=body, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        # a busy machine may accept the connection before the model has loaded: retry
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the model server did not answer within "
                                   f"{SERVER_START_SECONDS}s: {err}") from None
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
