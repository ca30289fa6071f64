"""Fault tolerance: exact resume after SIGKILL or SIGTERM, a NaN guard, repeatable runs."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ChildLines

import tfkit

CHILD = os.path.join(os.path.dirname(__file__), "helpers", "train_child.py")
CHILD_SECONDS = 240
# A test runs up to three children, each allowed CHILD_SECONDS.
pytestmark = pytest.mark.timeout(4 * CHILD_SECONDS)
STEPS_PER_EPOCH = 16  # penguins: 266 training rows in batches of 16


def _child(tmp, run, *extra):
    return [sys.executable, CHILD, "--logdir", str(tmp / "logs"), "--run", run,
            "--out", str(tmp / f"{run}.npz"), *extra]


def _run_to_end(tmp, run, *extra):
    done = subprocess.run(_child(tmp, run, *extra), capture_output=True, text=True,
                          timeout=CHILD_SECONDS)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return dict(np.load(tmp / f"{run}.npz")), done.stderr + done.stdout


def _start_and_signal(tmp, run, calls, signum, *extra):
    """Start a run, send `signum` after it reports `calls` calls; returns its exit code and
    its output (stdout and the log on stderr)."""
    proc = subprocess.Popen(_child(tmp, run, "--sleep", "0.03", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, seen, deadline = ChildLines(proc.stdout), 0, time.monotonic() + CHILD_SECONDS
    try:
        while seen < calls:
            line = lines.next(deadline)
            assert line is not None, "the child ended before that call:\n" + "".join(lines.seen)
            seen += line.startswith("batch ")
        proc.send_signal(signum)
        out = lines.rest(time.monotonic() + CHILD_SECONDS)
        return proc.wait(timeout=CHILD_SECONDS), out
    finally:
        if proc.poll() is None:
            proc.kill()


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(child_baselines):
    return child_baselines["cpu"][0]


def test_sigterm_then_sigkill_of_the_resumed_run_then_resume_matches_uninterrupted(
        tmp_path, uninterrupted):
    # SIGTERM after 13 calls of 2 steps: the run saves where it stopped, mid-epoch 2, and
    # exits with 128 + SIGTERM.
    code, out = _start_and_signal(tmp_path, "stopped", 13, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out
    step = int(out.split("checkpoint saved at step ")[1].split(";")[0])
    assert step % STEPS_PER_EPOCH  # stopped mid-epoch, and saved right there
    checkpoints = tmp_path / "logs" / "stopped" / "checkpoints"
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith(f"ckpt-{step}")
    # The second run resumes exactly there; killed at step 40, it leaves only its last
    # periodic checkpoint (one every 2 calls), mid-epoch 3 of 4 (steps 33-47). A second run
    # that had started over would have stopped in epoch 1 instead.
    code, out = _start_and_signal(tmp_path, "stopped", (40 - step) // 2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert f"resumed from step {step} of epoch {step // STEPS_PER_EPOCH + 1}" in out, out
    weights, log = _run_to_end(tmp_path, "stopped")
    resumed = re.search(r"resumed from step (\d+) of epoch 3", log)
    assert resumed, log[-2000:]
    assert 2 * STEPS_PER_EPOCH < int(resumed.group(1)) < 3 * STEPS_PER_EPOCH
    assert _max_difference(weights, uninterrupted) <= 1e-6


def test_resume_with_two_replicas(tmp_path, child_baselines):
    baseline = child_baselines["cpu:2"][0]
    code, _ = _start_and_signal(tmp_path, "two-killed", 19, signal.SIGKILL, "--strategy", "cpu:2")
    assert code == -signal.SIGKILL
    weights, log = _run_to_end(tmp_path, "two-killed", "--strategy", "cpu:2")
    assert "resumed from step" in log
    assert _max_difference(weights, baseline) <= 1e-6


def _checkpoint_values(directory):
    for prefix in tf.train.get_checkpoint_state(directory).all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
                yield name, value


def test_divergence_stops_with_where_and_keeps_only_finite_checkpoints(tmp_path):
    with pytest.raises(tfkit.NonFiniteLossError) as info:
        tfkit.train("auto_mpg", optimizer="sgd", learning_rate=0.3, epochs=3,
                    standardize_target=False, steps_per_execution=1, checkpoint_every_steps=1,
                    histogram_every_steps=0,
                    logdir=str(tmp_path), run_name="diverge", export=None, verbose=False)
    message = str(info.value)
    assert re.search(r"at step (\d) \(epoch 1, step \1 of 9\)", message), message
    assert "the last finite loss was" in message
    values = list(_checkpoint_values(str(tmp_path / "diverge" / "checkpoints")))
    assert values
    assert all(np.all(np.isfinite(v)) for _, v in values)


def test_on_nan_restore_rolls_back_a_bounded_number_of_times(tmp_path, caplog):
    """SGD on raw miles-per-gallon diverges at any of these rates: every retry is used."""
    caplog.set_level("WARNING")
    with pytest.raises(tfkit.NonFiniteLossError):
        tfkit.train("auto_mpg", optimizer="sgd", learning_rate=0.3, epochs=2,
                    standardize_target=False, steps_per_execution=1, checkpoint_every_steps=1,
                    histogram_every_steps=0,
                    on_nan="restore", max_nan_restores=3, logdir=str(tmp_path),
                    run_name="restore", export=None, verbose=False)
    rolled = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(rolled) == 3
    for message, rate in zip(rolled, ("0.15 ", "0.075 ", "0.0375 "), strict=True):
        assert f"learning rate {rate}" in message
    assert "rolled back to step 0 " in rolled[-1]  # the last try starts from the initial weights
    values = list(_checkpoint_values(str(tmp_path / "restore" / "checkpoints")))
    assert values and all(np.all(np.isfinite(v)) for _, v in values)


@pytest.mark.parametrize(("on_nan", "kept"), [("stop", False), ("restore", True)])
def test_initial_weights_are_kept_only_for_a_rollback(tmp_path, on_nan, kept):
    tfkit.train("penguins", epochs=1, on_nan=on_nan, logdir=str(tmp_path), run_name="run",
                export=None, verbose=False)
    initial = tmp_path / "run" / "checkpoints" / "initial.index"
    assert initial.exists() is kept
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))  # the final one


@pytest.mark.parametrize(("seed_a", "seed_b", "same"), [(7, 7, True), (7, 8, False)])
def test_same_seed_same_weights(seed_a, seed_b, same):
    options = dict(epochs=2, logdir=None, export=None, verbose=False)
    a = tfkit.train("penguins", seed=seed_a, **options).model.get_weights()
    b = tfkit.train("penguins", seed=seed_b, **options).model.get_weights()
    equal = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert equal is same


def test_finished_run_does_not_train_again_unless_asked(tmp_path, caplog):
    caplog.set_level("INFO")
    options = dict(logdir=str(tmp_path), run_name="once", export=None, verbose=False)
    first = tfkit.train("penguins", epochs=2, **options)
    again = tfkit.train("penguins", epochs=2, **options)
    assert any("already finished" in r.getMessage() for r in caplog.records)
    assert again.history == first.history
    np.testing.assert_array_equal(again.model.get_weights()[0], first.model.get_weights()[0])
    more = tfkit.train("penguins", epochs=3, **options)
    assert len(more.history["loss"]) == 3
    assert more.history["loss"][:2] == first.history["loss"]
    fresh = tfkit.train("penguins", epochs=1, resume=False, **options)
    assert len(fresh.history["loss"]) == 1
