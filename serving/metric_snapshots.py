"""Metrics shared by several worker processes: prometheus_client's multiprocess mode.

With ``--workers N`` (N > 1), ``tfkit serve``'s master process makes a private
temporary folder, gives it to every worker as ``METRICS_DIR`` and, through
``share_with_workers``, as ``PROMETHEUS_MULTIPROC_DIR`` in the environment the
workers inherit. prometheus_client then keeps each worker's numbers in
memory-mapped files of its own in that folder (``counter_<pid>.db``,
``histogram_<pid>.db``), written as they change, and a scrape on any worker sums
every file (``serving.metrics.Metrics.render``): all workers' requests, up to the
moment of the scrape. Files of workers that have exited stay, so totals never go
down when gunicorn replaces a worker; a new worker that gets an old pid goes on
counting in its file. At exit a worker calls prometheus_client's
``mark_process_dead``. The master removes the folder when it stops.

Nothing here imports prometheus_client at import time: the master imports this
module before forking, and prometheus_client picks in-memory or per-process file
storage once, when it is first imported.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for their names only: serving.metrics imports prometheus_client
    from flask import Flask

    from serving.metrics import Metrics

EXTENSION = "tfkit_metric_snapshots"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name for the folder


def share_with_workers(directory: str | os.PathLike[str]) -> None:
    """Makes the processes started from this one from now on keep their metrics in ``directory``.

    Called by the process that forks the workers, before anything in it imports
    prometheus_client.

    Args:
        directory: An existing private folder, empty or holding earlier workers' files.

    Raises:
        RuntimeError: prometheus_client is already imported here, so processes forked from
            this one would keep their numbers to themselves.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            f"prometheus_client was imported before {MULTIPROCESS_DIR} was set: worker "
            "processes forked from here would not share their metrics"
        )
    os.environ[MULTIPROCESS_DIR] = os.fspath(directory)


class WorkerMetrics:
    """One worker's side of the shared folder; ``stop`` at worker exit."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def stop(self) -> None:
        """Tells prometheus_client this worker is gone (its live gauges, if any, go)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), self.directory)


def install(app: Flask, metrics: Metrics) -> None:
    """Checks the worker's metrics go to ``app.config["METRICS_DIR"]``, when it is set.

    Without it (one worker, tests) nothing is shared and nothing is written.

    Raises:
        RuntimeError: ``METRICS_DIR`` is set but ``metrics`` does not keep its numbers
            there: ``share_with_workers`` was not called before the worker started.
    """
    directory = app.config.get("METRICS_DIR")
    if not directory:
        return
    shared = metrics.directory
    if shared is None or os.path.realpath(shared) != os.path.realpath(directory):
        raise RuntimeError(
            f"METRICS_DIR is {directory} but {MULTIPROCESS_DIR} is {shared}: call "
            "serving.metric_snapshots.share_with_workers(METRICS_DIR) before the workers start"
        )
    app.extensions[EXTENSION] = WorkerMetrics(directory)
