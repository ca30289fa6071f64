"""Metrics shared by worker processes: snapshot files, exited workers, `tfkit serve --workers 2`."""

import concurrent.futures
import json
import os
import pathlib
import shutil
import signal
import threading
import time

import flask
import pytest
import requests
from conftest import TESTDATA, TFKIT_SERVE

from serving.metric_snapshots import MetricSnapshots, install
from serving.metrics import REQUEST_COUNT, Metrics

SENT = 40
WAIT = 10  # seconds; well above the one-second snapshot interval


def _ok_count(state, only: str | None = None) -> int:
    return sum(n for model, status, (n,) in state.get(REQUEST_COUNT, [])
               if status == "OK" and only in (None, model))


def test_snapshot_written_and_read_back(tmp_path):
    metrics = Metrics()
    metrics.observe("m", "predict", "OK", 0.01)
    snapshots = MetricSnapshots(metrics, tmp_path)
    snapshots.write()
    assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}.json"]  # no staging left
    assert snapshots.others() == []  # a worker's own file is not read back on top of it

    (tmp_path / f"{os.getpid()}.json").rename(tmp_path / "12345.json")  # as another worker's
    assert snapshots.others() == [json.loads(json.dumps(metrics.state()))]


def test_exited_workers_files_still_count(tmp_path):
    gone = Metrics()
    for _ in range(3):
        gone.observe("m", "predict", "OK", 0.01)
    (tmp_path / "999999999.json").write_text(json.dumps(gone.state()))  # no such process
    live = Metrics()
    live.observe("m", "predict", "OK", 0.01)
    snapshots = MetricSnapshots(live, tmp_path)
    live.add_peers(snapshots.others)
    assert f'{REQUEST_COUNT}{{model_name="m",status="OK"}} 4\n' in live.render()


def test_a_reused_pid_keeps_the_exited_workers_numbers(tmp_path):
    old = Metrics()
    old.observe("m", "predict", "OK", 0.01)
    MetricSnapshots(old, tmp_path).write()  # a worker that had this pid, then exited
    new = MetricSnapshots(Metrics(), tmp_path, interval=60)
    new.start()
    new.stop()
    assert [_ok_count(s) for s in new.others()] == [1]


def test_thread_writes_every_interval(tmp_path):
    metrics = Metrics()
    snapshots = MetricSnapshots(metrics, tmp_path, interval=0.05)
    snapshots.start()
    own = tmp_path / f"{os.getpid()}.json"
    assert _ok_count(json.loads(own.read_text())) == 0  # written at start
    metrics.observe("m", "predict", "OK", 0.01)
    deadline = time.monotonic() + WAIT
    while _ok_count(json.loads(own.read_text())) != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    snapshots.stop()
    assert _ok_count(json.loads(own.read_text())) == 1


def test_stop_writes_the_final_numbers(tmp_path):
    metrics = Metrics()
    snapshots = MetricSnapshots(metrics, tmp_path, interval=60)  # the thread never writes
    snapshots.start()
    metrics.observe("m", "predict", "OK", 0.01)
    snapshots.stop()  # as at worker exit
    assert _ok_count(json.loads((tmp_path / f"{os.getpid()}.json").read_text())) == 1


def _running_snapshot_threads() -> int:
    return sum(t.name == "metric-snapshots" for t in threading.enumerate())


def test_install_shares_only_with_a_metrics_dir(tmp_path):
    before = _running_snapshot_threads()
    alone = flask.Flask(__name__)
    alone.config["METRICS_DIR"] = None
    install(alone, Metrics())
    assert "tfkit_metric_snapshots" not in alone.extensions
    assert _running_snapshot_threads() == before
    assert list(tmp_path.iterdir()) == []

    shared = flask.Flask(__name__)
    shared.config["METRICS_DIR"] = str(tmp_path)
    install(shared, Metrics())
    try:
        assert _running_snapshot_threads() == before + 1
        assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}.json"]
    finally:
        shared.extensions["tfkit_metric_snapshots"].stop()


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
    """Each worker's OK requests (for model ``only``), from its snapshot file."""
    return {int(p.stem): _ok_count(json.loads(p.read_text()), only) for p in folder.glob("*.json")}


def _start_two_workers(tmp_path_factory, start_server):
    """`tfkit serve --workers 2`, once both workers wrote a snapshot; (server, metrics dir)."""
    repo = tmp_path_factory.mktemp("workers-models")
    for name in ("ready", "half"):  # readiness polls go to "ready", so "half" counts only ours
        shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", repo / name)
    tmp = tmp_path_factory.mktemp("workers-tmp")
    server = start_server(
        ["--models", str(repo), "--workers", "2", "--file_system_poll_wait_seconds", "0"],
        "/v1/models/ready", command=TFKIT_SERVE, env={"TMPDIR": str(tmp)},
    )
    (folder,) = tmp.glob("tfkit-metrics-*")
    deadline = time.monotonic() + 120
    while len(_worker_counts(folder)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the second worker writes its first snapshot once its models loaded
    assert len(_worker_counts(folder)) == 2
    return server, folder


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory, start_server):
    return _start_two_workers(tmp_path_factory, start_server)


def _counted(folder: pathlib.Path, total: int) -> dict[int, int]:
    """The workers' request counts, once their snapshots add up to ``total`` (or WAIT passed)."""
    deadline = time.monotonic() + WAIT
    while True:
        counts = _worker_counts(folder, only="half")
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def test_two_workers_scrape_shows_every_workers_requests(workers_server):
    server, folder = workers_server

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


def test_master_removes_the_metrics_dir_at_shutdown(tmp_path_factory, start_server):
    server, folder = _start_two_workers(tmp_path_factory, start_server)  # its own: stopped here
    assert folder.is_dir()
    assert server.stop() == 0
    assert not folder.exists()
