"""Multi-worker training on TensorFlow's own runtime: two local workers with TF_CONFIG."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ChildLines

from tfkit import launch

CHILD = os.path.join(os.path.dirname(__file__), "helpers", "train_child.py")
RUN_SECONDS = 400
# A test waits on up to three runs of RUN_SECONDS (the module's first also on two_workers).
pytestmark = pytest.mark.timeout(4 * RUN_SECONDS)


def _launch(tmp, run, *extra, logdir="logs", out="{index}"):
    return [sys.executable, "-m", "tfkit.cli", "launch", "--workers", "2",
            "--timeout", str(RUN_SECONDS), "--", sys.executable, CHILD,
            "--strategy", "multi_worker", "--logdir", str(tmp / logdir), "--run", run,
            "--out", str(tmp / f"{run}-{out}.npz"), *extra]


def _load(tmp, name):
    weights = dict(np.load(tmp / f"{name}.npz"))
    with open(tmp / f"{name}.json") as f:
        return weights, json.load(f)


def _same(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """An uninterrupted 2-worker run, each worker with its own folders (as on two machines)."""
    tmp = tmp_path_factory.mktemp("mw")
    done = subprocess.run(
        _launch(tmp, "mw", "--export", str(tmp / "models-{index}"), logdir="logs-{index}"),
        capture_output=True, text=True, timeout=RUN_SECONDS + 60,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return tmp


def test_workers_finish_with_identical_weights(two_workers):
    chief, _ = _load(two_workers, "mw-0")
    other, _ = _load(two_workers, "mw-1")
    assert _same(chief, other) == 0.0


def test_only_the_chief_writes_events_checkpoints_and_exports(two_workers):
    chief_files = [f for _, _, fs in os.walk(two_workers / "logs-0") for f in fs]
    assert any(f.startswith("events.out.tfevents") for f in chief_files)
    assert any(f.endswith(".index") for f in chief_files)
    assert (two_workers / "models-0" / "penguins" / "1" / "saved_model.pb").exists()
    worker_files = [f for _, _, fs in os.walk(two_workers / "logs-1") for f in fs]
    assert worker_files == []
    assert not (two_workers / "models-1").exists()


@pytest.mark.parametrize("strategy", ["cpu", "cpu:2"])
def test_two_workers_train_like_one_process_and_like_cpu2(two_workers, child_baselines,
                                                          strategy):
    """The same global batches on every layout: the loss curves agree to float noise."""
    _, multi = _load(two_workers, "mw-0")
    _, single = child_baselines[strategy]
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-5)
    assert multi["val_accuracy"][-1] == pytest.approx(single["val_accuracy"][-1], abs=1e-6)


def test_kill_one_worker_then_restart_both_resumes(two_workers, tmp_path):
    proc = subprocess.Popen(_launch(tmp_path, "kill", "--sleep", "0.05"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, pids, batches = ChildLines(proc.stdout), {}, 0
    deadline = time.monotonic() + RUN_SECONDS
    try:
        while batches < 20:  # calls of 2 steps: past the first epochs, mid-epoch
            line = lines.next(deadline)
            assert line is not None, "the run ended early:\n" + "".join(lines.seen[-40:])
            if "] pid " in line:
                pids[line.split("]")[0] + "]"] = int(line.split("pid ")[1])
            batches += line.startswith("[worker 1] batch")
        os.kill(pids["[worker 1]"], signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # the launcher stops the survivor and fails
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoints = tmp_path / "logs" / "kill" / "checkpoints"
    assert any(p.name.endswith(".index") and p.name != "ckpt-0.index"
               for p in checkpoints.iterdir())
    done = subprocess.run(_launch(tmp_path, "kill"), capture_output=True, text=True,
                          timeout=RUN_SECONDS + 60)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "[worker 0] resumed from step" in done.stdout
    assert "[worker 1] resumed from step" in done.stdout
    resumed, _ = _load(tmp_path, "kill-0")
    uninterrupted, _ = _load(two_workers, "mw-0")
    assert _same(resumed, uninterrupted) <= 1e-6


def test_tf_config_for_each_worker():
    config = json.loads(launch.tf_config([1111, 2222], 1))
    assert config == {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]},
                      "task": {"type": "worker", "index": 1}}
    assert len(set(launch.free_ports(4))) == 4
    with pytest.raises(ValueError, match="needs a command"):
        launch.launch([], 2)
