"""`tfkit launch`: run N local workers with the TF_CONFIG a cluster launcher would set.

On a real cluster (Kubeflow's TFJob, a Slurm script, ...) the launcher sets
`TF_CONFIG` on each machine and runs the same command there; this does the
same on one machine, on 127.0.0.1 ports, to try multi-worker training and to
test it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20


def tf_config(ports: Sequence[int], index: int, host: str = "127.0.0.1") -> str:
    """The TF_CONFIG of worker `index` in a cluster of workers on `host`.

    Example:
        >>> json.loads(tf_config([2222, 2223], 1))["task"]
        {'type': 'worker', 'index': 1}
    """
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def launch(command: Sequence[str], workers: int, *, timeout: float | None = None) -> int:
    """Run `command` as `workers` processes, one TF_CONFIG each; wait for all.

    When one worker fails the others are stopped (a collective would wait for
    it forever), and its exit code is returned. SIGTERM/SIGINT to the launcher
    are passed on to every worker, so they checkpoint and stop.

    Args:
        command: the program and its arguments, e.g. ["tfkit", "train", ...].
        workers: how many worker processes (>= 1).
        timeout: seconds before all workers are stopped; None waits.

    Returns:
        0 when every worker succeeded, else the first failing worker's code.

    Raises:
        ValueError: no command, a command that cannot be run, or workers < 1.
    """
    if not command:
        raise ValueError("launch needs a command after '--', e.g. -- tfkit train --data digits")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_runnable(command[0])
    ports = free_ports(workers)
    procs = []
    try:
        for index in range(workers):
            env = {**os.environ, "TF_CONFIG": tf_config(ports, index)}
            proc = subprocess.Popen(
                list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True,
            )
            threading.Thread(target=_relay, args=(proc, index), daemon=True).start()
            procs.append(proc)
    except OSError as err:  # checked above; this is the program vanishing in between
        _stop(procs)
        raise ValueError(f"cannot run {command[0]!r}: {err.strerror}") from None
    log.info("started %d workers on 127.0.0.1 ports %s", workers, ports)
    previous = _forward_signals(procs)
    try:
        return _wait(procs, timeout)
    finally:
        _stop(procs)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_runnable(program: str) -> None:
    """Refuse, before any worker starts, a program the workers could not run."""
    if shutil.which(program):
        return
    if os.sep in program:
        problem = "is not an executable file" if os.path.exists(program) else "does not exist"
        raise ValueError(f"cannot run {program!r}: it {problem}")
    raise ValueError(
        f"command {program!r} was not found on PATH: check its spelling, or activate the "
        "virtual environment it is installed in (. .venv/bin/activate); tfkit itself also "
        f"runs as: {sys.executable} -m tfkit.cli"
    )


def _wait(procs: list[subprocess.Popen], timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            log.error("a worker exited with code %d; stopping the others", failed[0])
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            log.error("workers still running after %.0f s; stopping them", timeout)
            return 124
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _relay(proc: subprocess.Popen, index: int) -> None:
    for line in proc.stdout:
        sys.stdout.write(f"[worker {index}] {line}")
        sys.stdout.flush()


def _forward_signals(procs: list[subprocess.Popen]) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    return {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
