"""Metrics shared by several worker processes through one snapshot file per worker.

With ``--workers N`` (N > 1), ``tfkit serve``'s master process makes a private
temporary folder and gives it to every worker as ``METRICS_DIR``. Each worker
keeps recording in memory, as with one worker, and a daemon thread writes the
worker's numbers to ``<dir>/<pid>.json`` about once a second (``SNAPSHOT_SECONDS``)
and once more when the worker exits. A scrape answers this worker's live numbers
plus every other worker's latest file, so other workers' numbers are at most
about a second old. Files of workers that have exited stay, so totals never go
down when gunicorn replaces a worker; a worker killed without a clean exit loses
at most its last second. The master removes the folder when it stops.

Files are written to a temporary name and renamed into place, so a scrape never
reads half a file.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
import time

from flask import Flask

from serving.metrics import Metrics, State

logger = logging.getLogger(__name__)

EXTENSION = "tfkit_metric_snapshots"
SNAPSHOT_SECONDS = 1.0


class MetricSnapshots:
    """One worker's side: writes its metrics' state, reads the other workers'.

    Example:
        >>> import tempfile
        >>> metrics = Metrics()
        >>> snapshots = MetricSnapshots(metrics, tempfile.mkdtemp())
        >>> snapshots.write()
        >>> snapshots.others()  # only this worker's file so far, which is skipped
        []
    """

    def __init__(self, metrics: Metrics, directory: str | os.PathLike[str],
                 interval: float = SNAPSHOT_SECONDS) -> None:
        self._metrics = metrics
        self._directory = pathlib.Path(directory)
        self._interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._path = self._directory / f"{self._pid}.json"

    def start(self) -> None:
        """Writes a first snapshot now, then one every ``interval`` seconds in a daemon thread."""
        if self._path.exists():
            # An exited worker had this pid: keep its numbers under another name.
            self._path.replace(self._directory / f"{self._pid}-{time.time_ns()}.json")
        self.write()
        self._thread = threading.Thread(target=self._run, name="metric-snapshots", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and writes the final numbers (at worker exit)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()

    def write(self) -> None:
        """Saves this worker's metrics state to ``<dir>/<pid>.json``, atomically."""
        staging = self._directory / f".{self._pid}.json.tmp"
        staging.write_text(json.dumps(self._metrics.state()))
        os.replace(staging, self._path)

    def others(self) -> list[State]:
        """The latest state of every other worker, exited ones included."""
        states = []
        for entry in os.scandir(self._directory):
            if not entry.name.endswith(".json") or entry.name == self._path.name:
                continue
            try:
                with open(entry.path, encoding="utf-8") as file:
                    states.append(json.load(file))
            except FileNotFoundError:  # the master is removing the folder
                continue
            except (OSError, ValueError) as exc:
                logger.warning("Skipping metrics snapshot %s: %s", entry.path, exc)
        return states

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.write()
            except OSError as exc:  # e.g. a full disk; the next round tries again
                logger.warning("Could not write metrics snapshot %s: %s", self._path, exc)


def install(app: Flask, metrics: Metrics) -> None:
    """Shares ``metrics`` with the other workers when ``app.config["METRICS_DIR"]`` is set.

    Without it (one worker, tests), nothing is written and no thread starts.
    """
    directory = app.config.get("METRICS_DIR")
    if not directory:
        return
    snapshots = MetricSnapshots(metrics, directory)
    metrics.add_peers(snapshots.others)
    snapshots.start()
    app.extensions[EXTENSION] = snapshots
