"""Soak: 32 connections against `tfkit serve` while versions come and go.

The default run soaks for a few seconds; ``-m slow`` also runs the 60 s soak.
Two new versions are dropped in (the second answers differently, so the swap
shows in the answers) and then a broken one; no request may fail, and the
worker's memory at the end comes back within 20 % of its memory after warm-up.
Nothing here is a throughput figure (those are in benchmarks/).
"""

import pathlib
import shutil
import threading
import time

import pytest
import requests
from conftest import TESTDATA, TFKIT_SERVE, put_version, wait_for

CONNECTIONS = 32
WARMUP_ANSWERS = 20  # per connection before the memory baseline is read
# Each version folder appears a quarter of the soak after the one before: (version, source).
DROPS = [
    (124, TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"),  # y = x/2 + 2
    (125, TESTDATA / "saved_model_half_plus_three" / "00000123"),  # y = x/2 + 3
    (126, TESTDATA / "bad_half_plus_two" / "00000123"),  # fails to load
]
MEMORY_TOLERANCE = 0.20
TIMEOUT = 30
MODEL = "/v1/models/soak"


@pytest.fixture()
def repository(tmp_path) -> pathlib.Path:
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", tmp_path / "soak")
    return tmp_path


@pytest.fixture()
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


def states(server) -> dict[str, str]:
    response = requests.get(server.url + MODEL, timeout=TIMEOUT)
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


class Load:
    """CONNECTIONS keep-alive clients, each posting its own x and checking the answer."""

    def __init__(self, url: str) -> None:
        self.url = url + MODEL + ":predict"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[tuple] = []
        # y - x/2 of each answer, per connection, in the order the answers came.
        self.offsets: list[list[float]] = [[] for _ in range(CONNECTIONS)]
        self.threads = [threading.Thread(target=self._client, args=(i,))
                        for i in range(CONNECTIONS)]

    @property
    def count(self) -> int:
        return sum(map(len, self.offsets)) + len(self.failures)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=TIMEOUT + 10)

    def _client(self, i: int) -> None:
        x = float(i + 1)
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
                    if outcome is not None:
                        self.failures.append(outcome)
                    else:
                        self.offsets[i].append(offset)


def _wait_for(condition, seconds: float) -> bool:
    return wait_for(condition, seconds, poll=0.2)


@pytest.mark.parametrize("soak_seconds", [
    8,  # each version serves a couple of seconds, at a few hundred requests
    pytest.param(60, marks=pytest.mark.slow),
])
def test_soak_with_new_and_broken_versions(server, repository, soak_seconds):
    worker = server.worker_pid()
    base = repository / "soak"
    load = Load(server.url)
    load.start()
    try:
        assert _wait_for(lambda: min(map(len, load.offsets)) >= WARMUP_ANSWERS, 120), \
            f"answers per connection during warm-up: {list(map(len, load.offsets))}"
        rss_warm = rss_bytes(worker)
        started = time.monotonic()  # the soak's clock starts once every connection is warm
        answered_before = {}
        for n, (version, source) in enumerate(DROPS, start=1):
            time.sleep(max(0.0, started + n * soak_seconds / 4 - time.monotonic()))
            answered_before[version] = list(map(len, load.offsets))
            put_version(source, base / str(version))
            # Settled (served, or given up on) before the next one comes.
            _wait_for(lambda v=version: states(server).get(str(v)) in ("AVAILABLE", "END"), 20)
        time.sleep(max(0.0, started + soak_seconds - time.monotonic()))
        # Still answering after the broken version: every connection, once more at least.
        assert _wait_for(lambda: all(
            len(o) > n for o, n in zip(load.offsets, answered_before[126], strict=True)), 60)
    finally:
        load.finish()
    elapsed = time.monotonic() - started

    print(f"\nsoak: {load.count} requests in {elapsed:.0f} s at {CONNECTIONS} connections, "
          f"{len(load.failures)} failed; worker RSS after warm-up {rss_warm / 2**20:.1f} MiB, "
          f"at the end {rss_bytes(worker) / 2**20:.1f} MiB")
    assert load.failures == []
    assert server.worker_pid() == worker  # the worker never died or restarted
    assert states(server) == {"125": "AVAILABLE", "126": "END"}
    # Each connection asks again only after its answer came: its answers are +2 (versions
    # 123 and 124) until version 125 answers it, then +3 for good.
    for offsets in load.offsets:
        assert 3.0 in offsets, offsets
        switch = offsets.index(3.0)
        assert set(offsets[:switch]) == {2.0} and set(offsets[switch:]) == {3.0}, offsets
    # Memory comes back near where it was after warm-up (the allocator may take a moment).
    assert _wait_for(lambda: rss_bytes(worker) <= rss_warm * (1 + MEMORY_TOLERANCE), 30), \
        f"worker RSS {rss_bytes(worker) / 2**20:.1f} MiB, {rss_warm / 2**20:.1f} after warm-up"
