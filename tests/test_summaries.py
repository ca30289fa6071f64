"""Watch it learn: a real TensorBoard reads back what a run wrote."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import requests

import tfkit

TENSORBOARD_START_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def run_logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    result = tfkit.train(
        "penguins", epochs=6, batch_size=16, log_every_steps=4, histogram_every_steps=10,
        logdir=str(root), run_name="penguins-run", export=None, verbose=False,
    )
    return root, result


@pytest.fixture(scope="module")
def tensorboard(run_logdir):
    root, _ = run_logdir
    port = _free_port()
    exe = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or "tensorboard"
    proc = subprocess.Popen(
        [exe, "--logdir", str(root), "--host", "127.0.0.1", "--port", str(port),
         "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TENSORBOARD_START_SECONDS
    try:
        while True:
            try:
                runs = requests.get(f"{base}/data/runs", timeout=5).json()
                if "penguins-run/train" in runs and "penguins-run/validation" in runs:
                    tags = requests.get(f"{base}/data/plugin/scalars/tags", timeout=5).json()
                    if "epoch_loss" in tags.get("penguins-run/validation", {}):
                        break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("TensorBoard did not serve the run in time")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(base, path, **params):
    response = requests.get(base + path, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def test_train_and_validation_runs(tensorboard):
    runs = _get(tensorboard, "/data/runs")
    assert {"penguins-run/train", "penguins-run/validation"} <= set(runs)


def test_scalar_tags_cover_learning(tensorboard):
    tags = _get(tensorboard, "/data/plugin/scalars/tags")
    train = set(tags["penguins-run/train"])
    for tag in ("loss", "accuracy", "learning_rate", "grad_norm", "samples_per_second",
                "step_time_ms", "memory/host_peak_mb", "epoch_loss", "epoch_accuracy"):
        assert tag in train, f"{tag} missing from {sorted(train)}"
    assert any(t.startswith("update_ratio/") for t in train)
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["penguins-run/validation"])


def test_train_loss_curve_falls(tensorboard):
    points = _get(tensorboard, "/data/plugin/scalars/scalars", run="penguins-run/train",
                  tag="loss")
    assert len(points) >= 5
    losses = [value for _, _, value in points]
    assert losses[-1] < 0.7 * losses[0]
    steps = [step for _, step, _ in points]
    assert steps == sorted(steps)


def test_update_ratios_are_sane(tensorboard):
    tags = _get(tensorboard, "/data/plugin/scalars/tags")["penguins-run/train"]
    tag = next(t for t in tags if t.startswith("update_ratio/") and "dense_0" in t)
    points = _get(tensorboard, "/data/plugin/scalars/scalars", run="penguins-run/train", tag=tag)
    # Adam at lr 1e-3 moves weights by about 1e-3 of their size per step.
    assert all(1e-5 < value < 1e-1 for _, _, value in points)


def test_weight_and_gradient_histograms(tensorboard):
    tags = _get(tensorboard, "/data/plugin/histograms/tags")["penguins-run/train"]
    assert any(t.startswith("weights/") and t.endswith("kernel") for t in tags)
    assert any(t.startswith("gradients/") and t.endswith("kernel") for t in tags)
    tag = next(t for t in tags if t.startswith("gradients/"))
    data = _get(tensorboard, "/data/plugin/histograms/histograms", run="penguins-run/train",
                tag=tag)
    assert len(data) >= 2  # one per inspection interval


def test_hparams_graphs_and_text_plugins_have_data(tensorboard):
    listing = _get(tensorboard, "/data/plugins_listing")
    for plugin in ("scalars", "histograms", "hparams", "graphs", "text"):
        assert listing[plugin]["enabled"], f"{plugin} reports no data"


def test_memory_estimate_is_logged_and_sized(run_logdir):
    _, result = run_logdir
    estimate = tfkit.estimate_memory(result.model, 16, "adam")
    params = result.model.count_params() * 4
    assert estimate.parameters == params
    assert estimate.optimizer_state == 2 * estimate.gradients
    assert estimate.activations > 0


def test_profile_on_request_writes_a_trace(tmp_path):
    tfkit.train("penguins", epochs=2, batch_size=16, steps_per_execution=2, profile=True,
                logdir=str(tmp_path), run_name="p", export=None, verbose=False)
    traces = list((tmp_path / "p" / "train" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


def test_only_the_chief_writes(tmp_path):
    from tfkit.summaries import RunWriter

    writer = RunWriter(str(tmp_path), "worker1", chief=False)
    writer.scalars("train", step=1, values={"loss": 1.0})
    writer.close()
    assert not (tmp_path / "worker1").exists()


def test_out_of_memory_names_the_part_and_a_batch_that_fits(monkeypatch):
    import tensorflow as tf

    from tfkit import steps as steps_lib

    def exhausted(self, iterator, n):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(steps_lib.Steps, "_train_many", exhausted)
    spec = tfkit.data.prepare("penguins").spec
    estimate = tfkit.estimate_memory(tfkit.models.build("mlp", spec, hidden=(128,)), 64)
    per_example = estimate.activations // 64
    budget = estimate.fixed + 20 * per_example  # room for 20 examples' activations
    monkeypatch.setattr("tfkit.memory.device_memory_limit", lambda: budget)
    with pytest.raises(tfkit.OutOfMemoryError) as info:
        tfkit.train("penguins", epochs=1, batch_size=64, histogram_every_steps=0,
                    model_kwargs={"hidden": (128,)}, logdir=None, export=None, verbose=False)
    message = str(info.value)
    assert "OOM when allocating tensor" in message
    assert "The largest part is" in message
    assert "Try batch_size=20 or smaller: it would fit" in message
