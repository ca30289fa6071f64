"""Metrics shared by worker processes: prometheus_client's multiprocess folder, exited workers,
`tfkit serve --workers 2`."""

import concurrent.futures
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import flask
import pytest
import requests
from conftest import REPO_ROOT, TESTDATA, TFKIT_SERVE
from prometheus_client.multiprocess import MultiProcessCollector

from serving.metric_snapshots import EXTENSION, MULTIPROCESS_DIR, install, share_with_workers
from serving.metrics import REQUEST_COUNT, Metrics

SENT = 40
WAIT = 10  # seconds, for numbers a scrape should show at once
START = 120  # seconds, for a worker to load TensorFlow and the models
# A worker without TensorFlow: shares the folder as `tfkit serve` does, then counts requests.
WORKER = """
import sys
from serving import metric_snapshots
metric_snapshots.share_with_workers(sys.argv[1])
from serving.batching import BatchMetrics
from serving.metrics import Metrics
metrics, batches = Metrics(), BatchMetrics()
for _ in range(int(sys.argv[2])):
    metrics.observe("m", "predict", "OK", 0.001)
    batches.record("m", (5.0,), rows=1, padding=0)
metric_snapshots.WorkerMetrics(sys.argv[1]).stop()
"""


def _worker(folder: pathlib.Path, requests_ok: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != MULTIPROCESS_DIR}
    subprocess.run([sys.executable, "-c", WORKER, str(folder), str(requests_ok)], check=True,
                   cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)


def _ok_count(path: pathlib.Path, only: str | None = None) -> int:
    """OK requests (for model ``only``) counted in one process's counter file."""
    families = [f for f in MultiProcessCollector.merge([str(path)]) if f.name == REQUEST_COUNT]
    return int(sum(s.value for family in families for s in family.samples
                   if s.labels["status"] == "OK" and only in (None, s.labels["model_name"])))


def test_processes_sharing_a_folder_add_up_after_they_exit(tmp_path):
    _worker(tmp_path, 3)
    _worker(tmp_path, 4)
    files = sorted(p.name.split("_")[0] for p in tmp_path.glob("*.db"))
    assert files == ["counter", "counter", "histogram", "histogram"]  # each process its own

    text = Metrics(directory=tmp_path).render()
    batching = ":tensorflow:serving:batching_session:"
    assert f'{REQUEST_COUNT}{{model_name="m",status="OK"}} 7\n' in text
    assert f'{batching}wrapped_run_count{{model_name="m"}} 7\n' in text
    assert f'{batching}queuing_latency_sum{{model_name="m"}} 35\n' in text
    assert (':tensorflow:serving:request_latency_count{model_name="m",API="predict",'
            'entrypoint="REST"} 7\n') in text


def test_sharing_refuses_once_prometheus_client_is_imported(tmp_path, monkeypatch):
    monkeypatch.delenv(MULTIPROCESS_DIR, raising=False)
    assert "prometheus_client" in sys.modules  # as in a worker; a master never imports it
    with pytest.raises(RuntimeError, match="imported before PROMETHEUS_MULTIPROC_DIR"):
        share_with_workers(tmp_path)
    assert MULTIPROCESS_DIR not in os.environ


def test_install_checks_the_metrics_use_the_workers_folder(tmp_path):
    alone = flask.Flask(__name__)
    alone.config["METRICS_DIR"] = None
    install(alone, Metrics())
    assert EXTENSION not in alone.extensions

    shared = flask.Flask(__name__)
    shared.config["METRICS_DIR"] = str(tmp_path)
    with pytest.raises(RuntimeError, match="share_with_workers"):
        install(shared, Metrics(directory=None))  # the variable was not set: no sharing
    install(shared, Metrics(directory=tmp_path))
    shared.extensions[EXTENSION].stop()  # as at worker exit
    assert list(tmp_path.iterdir()) == []  # this process kept its numbers in memory


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _scrape_until(server, names: list[str], want: float) -> dict[str, float | None]:
    """Scrapes over new connections (any worker) until every sample in ``names`` is ``want``."""
    deadline = time.monotonic() + WAIT
    while True:
        text = requests.get(f"{server.url}/monitoring/prometheus/metrics",
                            headers={"Connection": "close"}, timeout=5).text
        got = {name: _sample(text, name) for name in names}
        if all(v == want for v in got.values()) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _worker_counts(folder: pathlib.Path, only: str | None = None) -> dict[int, int]:
    """Each worker's OK requests (for model ``only``), from its counter file."""
    return {int(p.stem.split("_")[1]): _ok_count(p, only) for p in folder.glob("counter_*.db")}


def _start_two_workers(tmp_path_factory, start_server):
    """`tfkit serve --workers 2`, once both workers answered; (server, metrics dir)."""
    repo = tmp_path_factory.mktemp("workers-models")
    for name in ("ready", "half"):  # readiness polls go to "ready", so "half" counts only ours
        shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", repo / name)
    tmp = tmp_path_factory.mktemp("workers-tmp")
    server = start_server(
        ["--models", str(repo), "--workers", "2", "--file_system_poll_wait_seconds", "0"],
        "/v1/models/ready", command=TFKIT_SERVE, env={"TMPDIR": str(tmp)},
    )
    (folder,) = tmp.glob("tfkit-metrics-*")
    deadline = time.monotonic() + START
    while len(_worker_counts(folder)) < 2 and time.monotonic() < deadline:
        # New connections, spread over the workers that listen: the second listens once its
        # models are loaded, and counts its first request in a file of its own.
        requests.get(f"{server.url}/v1/models/ready", headers={"Connection": "close"},
                     timeout=5)
        time.sleep(0.1)
    assert len(_worker_counts(folder)) == 2
    return server, folder


def _counted(folder: pathlib.Path, total: int) -> dict[int, int]:
    """The workers' request counts, once their files add up to ``total`` (or WAIT passed)."""
    deadline = time.monotonic() + WAIT
    while True:
        counts = _worker_counts(folder, only="half")
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def test_two_workers_scrape_shows_every_workers_requests_until_the_master_stops(
        tmp_path_factory, start_server):
    server, folder = _start_two_workers(tmp_path_factory, start_server)

    def predict(i: int) -> float:
        response = requests.post(f"{server.url}/v1/models/half:predict",
                                 json={"instances": [float(i)]},
                                 headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    # Rounds of requests on new connections until each worker has answered some: only then
    # does a scrape (answered by one of them) have the other's numbers to add.
    sent, counts = 0, {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(25):
            batch = range(sent, sent + SENT)
            assert list(pool.map(predict, batch)) == [i / 2 + 2 for i in batch]
            sent += SENT
            counts = _counted(folder, sent)
            if len(counts) == 2 and min(counts.values()) > 0:
                break
    assert sum(counts.values()) == sent
    assert len(counts) == 2 and min(counts.values()) > 0, f"requests per worker: {counts}"

    batching = ":tensorflow:serving:batching_session:"
    names = [f'{REQUEST_COUNT}{{model_name="half",status="OK"}}',
             f'{batching}wrapped_run_count{{model_name="half"}}',
             f'{batching}queuing_latency_count{{model_name="half"}}',
             f'{batching}input_batch_size_sum{{model_name="half"}}']  # one row per request
    # Several scrapes over new connections: whichever worker answers, the totals are both's.
    for _ in range(4):
        assert _scrape_until(server, names, sent) == dict.fromkeys(names, sent)

    # A worker that served requests exits (gunicorn starts another): its numbers stay.
    busy = max(counts.items(), key=lambda item: item[1])[0]
    os.kill(busy, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while pathlib.Path(f"/proc/{busy}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # gone once the master has reaped it
    assert not pathlib.Path(f"/proc/{busy}").exists()
    assert _scrape_until(server, names[:1], sent) == {names[0]: sent}

    # The master removes the workers' folder when it stops.
    assert folder.is_dir()
    assert server.stop() == 0
    assert not folder.exists()
