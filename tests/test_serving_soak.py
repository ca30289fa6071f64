"""Soak: 60 s at 32 connections against `tfkit serve` while versions come and go.

Two new versions are dropped in (the second answers differently, so the swap
shows in the answers) and then a broken one; no request may fail, and the
worker's memory at the end stays within 20 % of its memory after warm-up.
"""

import pathlib
import shutil
import threading
import time

import pytest
import requests
from conftest import TESTDATA, TFKIT_SERVE

SOAK_SECONDS = 60
CONNECTIONS = 32
WARMUP_SECONDS = 8
# Seconds into the soak at which each version folder appears: (version, source folder).
DROPS = [
    (15, 124, TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"),  # y = x/2 + 2
    (30, 125, TESTDATA / "saved_model_half_plus_three" / "00000123"),  # y = x/2 + 3
    (45, 126, TESTDATA / "bad_half_plus_two" / "00000123"),  # fails to load
]
MEMORY_TOLERANCE = 0.20
TIMEOUT = 30
MODEL = "/v1/models/soak"


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("soak")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", repo / "soak")
    return repo


@pytest.fixture(scope="module")
def server(repository, start_server):
    return start_server(
        # One worker, whose memory and version swaps the test follows.
        ["--models", str(repository), "--file_system_poll_wait_seconds", "0.5", "--workers", "1"],
        MODEL,
        command=TFKIT_SERVE,
    )


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def drop_in(base: pathlib.Path, version: int, source: pathlib.Path) -> None:
    """A version appears the way an export writes it: copied aside, renamed into place."""
    staging = base / f".tmp-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


def states(server) -> dict[str, str]:
    response = requests.get(server.url + MODEL, timeout=TIMEOUT)
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


class Load:
    """CONNECTIONS keep-alive clients, each posting its own x and checking the answer."""

    def __init__(self, url: str) -> None:
        self.url = url + MODEL + ":predict"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.failures: list[tuple] = []
        self.offsets: list[tuple[float, float]] = []  # (time, y - x/2) of each answer
        self.threads = [threading.Thread(target=self._client, args=(float(i + 1),))
                        for i in range(CONNECTIONS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT + 10)

    def _client(self, x: float) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                outcome = None
                try:
                    r = session.post(self.url, json={"instances": [x]}, timeout=TIMEOUT)
                    offset = r.json()["predictions"][0] - x / 2 if r.status_code == 200 else None
                    if offset not in (2.0, 3.0):
                        outcome = (r.status_code, r.text[:200])
                except (requests.RequestException, ValueError, KeyError) as exc:
                    offset, outcome = None, (0, repr(exc))
                with self.lock:
                    self.count += 1
                    if outcome is not None:
                        self.failures.append(outcome)
                    else:
                        self.offsets.append((time.monotonic(), offset))


def test_soak_with_new_and_broken_versions(server, repository):
    worker = server.worker_pid()
    base = repository / "soak"
    load = Load(server.url)
    started = time.monotonic()
    load.start()
    try:
        time.sleep(WARMUP_SECONDS)
        rss_warm = rss_bytes(worker)
        loaded_at = {}
        for at, version, source in DROPS:
            time.sleep(max(0.0, started + at - time.monotonic()))
            drop_in(base, version, source)
            deadline = time.monotonic() + 20
            while str(version) not in states(server) and time.monotonic() < deadline:
                time.sleep(0.2)
            loaded_at[version] = time.monotonic()
        time.sleep(max(0.0, started + SOAK_SECONDS - time.monotonic()))
    finally:
        load.finish()
    rss_end = rss_bytes(worker)
    elapsed = time.monotonic() - started

    print(f"\nsoak: {load.count} requests in {elapsed:.0f} s at {CONNECTIONS} connections, "
          f"{len(load.failures)} failed; worker RSS after warm-up {rss_warm / 2**20:.1f} MiB, "
          f"at the end {rss_end / 2**20:.1f} MiB ({rss_end / rss_warm - 1:+.1%})")
    assert load.failures == []
    assert load.count > 20 * SOAK_SECONDS  # the load was real
    assert server.worker_pid() == worker  # the worker never died or restarted
    assert states(server) == {"125": "AVAILABLE", "126": "END"}
    # Version 125 answers +3; after it loaded (and the few requests already inside
    # version 124 finished), nothing answers +2 again.
    settle = loaded_at[125] + 1.0
    assert {offset for t, offset in load.offsets if t > settle} == {3.0}
    assert 2.0 in {offset for t, offset in load.offsets if t < loaded_at[125]}
    assert rss_end <= rss_warm * (1 + MEMORY_TOLERANCE)
