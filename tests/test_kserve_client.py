"""KServe's own Python client (``InferenceRESTClient``, V2) against real servers.

kserve pins protobuf and pandas versions that TensorFlow's environment does not
have, so the client runs in a virtual environment of its own: made on first use
in pytest's cache folder (``.pytest_cache/d/kserve-client-venv``, about 75 s and
the package index needed), reused after; ``TFKIT_KSERVE_PYTHON`` may name the
Python of one made by hand instead. The client's calls run in
``tests/helpers/kserve_client.py``.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from conftest import REFERENCE_MODELS, TESTDATA

pytestmark = pytest.mark.kserve_client  # opt-in: python -m pytest -m kserve_client

KSERVE = "kserve==0.21.*"
HELPER = pathlib.Path(__file__).resolve().parent / "helpers" / "kserve_client.py"
PIP_SECONDS = 900
CLIENT_SECONDS = 120


def _made(command: list[str], what: str) -> None:
    """Runs a step of making the environment; skips the test, saying why, if it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{what} took over {PIP_SECONDS}s (is the package index reachable?)")
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        pytest.skip(f"{what} failed (exit {done.returncode}): {last}")


@pytest.fixture(scope="module")
def kserve_python(request) -> str:
    """The Python of a virtual environment that has kserve."""
    given = os.environ.get("TFKIT_KSERVE_PYTHON")
    if given:
        return given
    folder = request.config.cache.mkdir("kserve-client-venv")
    python, stamp = folder / "bin" / "python", folder / "installed"
    if stamp.is_file() and stamp.read_text() == KSERVE and python.exists():
        return str(python)
    shutil.rmtree(folder)  # half made, or for another kserve: start again
    _made([sys.executable, "-m", "venv", str(folder)], f"python -m venv {folder}")
    _made([str(python), "-m", "pip", "install", "--quiet", "--timeout", "60", KSERVE],
          f"pip install {KSERVE}")
    stamp.write_text(KSERVE)
    return str(python)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, start_server):
    """A server with half_plus_two, and one with no model at all."""
    served, empty = tmp_path_factory.mktemp("kserve-models"), tmp_path_factory.mktemp("empty")
    shutil.copytree(TESTDATA / REFERENCE_MODELS["half_plus_two"], served / "half_plus_two")
    args = ["--workers", "1", "--file_system_poll_wait_seconds", "0"]
    return (start_server(["--models", str(served), *args], "/v2/health/ready"),
            start_server(["--models", str(empty), *args], "/v2/health/live"))


def test_kserve_rest_client_health_and_infer(kserve_python, servers):
    served, empty = servers
    done = subprocess.run([kserve_python, str(HELPER), served.url, empty.url],
                          capture_output=True, text=True, timeout=CLIENT_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)

    assert results["live"] is True and results["empty_live"] is True
    assert results["ready"] is True
    assert results["model_ready"] is True and results["unknown_model_ready"] is False
    # With no model, the server is not ready: 503, which the client raises.
    assert results["empty_ready"]["raised"] == "HTTPStatusError"
    assert results["empty_ready"]["status"] == 503
    assert results["unknown_model_infer"]["status"] == 404
    assert "Servable not found" in results["unknown_model_infer"]["message"]
    for binary in ("false", "true"):
        assert results[f"infer_binary_{binary}"] == {
            "model_name": "half_plus_two", "id": f"kserve-{binary.title()}", "name": "y",
            "datatype": "FP32", "shape": [3, 1], "data": [2.5, 3.0, 4.5],
        }
