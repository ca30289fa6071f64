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


def _events(folder):
    """Every event in a folder's event files, in the order written."""
    import glob

    import tensorflow as tf

    paths = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    return [event for path in paths for event in tf.compat.v1.train.summary_iterator(path)]


def _tensors(folder):
    """{tag: [(step, array), ...]} of the summaries in a folder."""
    import tensorflow as tf

    out = {}
    for event in _events(folder):
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    return out


def test_event_file_holds_tags_and_values(tmp_path):
    import numpy as np

    from tfkit.summaries import HISTOGRAM_BUCKETS, RunWriter

    writer = RunWriter(str(tmp_path), "run")
    writer.scalars("train", step=3, values={"loss": 0.25, "accuracy": np.float32(0.5)})
    writer.scalars("train", step=7, values=lambda: {"loss": 0.125})
    writer.histograms("train", step=7, values={"weights/w": np.arange(100.0)})
    writer.text("train", "note", "**hello**")
    writer.hparams({"learning_rate": 0.01, "optimizer": "adam", "skipped": [1, 2]})
    writer.close()
    train = _tensors(tmp_path / "run" / "train")
    assert [(step, float(v)) for step, v in train["loss"]] == [(3, 0.25), (7, 0.125)]
    assert [(step, float(v)) for step, v in train["accuracy"]] == [(3, 0.5)]
    (step, buckets), = train["weights/w"]
    assert step == 7 and buckets.shape == (HISTOGRAM_BUCKETS, 3)
    assert buckets[:, 2].sum() == 100 and buckets[0, 0] == 0 and buckets[-1, 1] == 99
    assert train["note"][0][1] == b"**hello**"
    hparams = [v for e in _events(tmp_path / "run") for v in e.summary.value]
    assert hparams[0].metadata.plugin_data.plugin_name == "hparams"
    assert b"learning_rate" in hparams[0].metadata.plugin_data.content


def test_flush_makes_events_readable_before_close(tmp_path):
    from tfkit.summaries import RunWriter

    writer = RunWriter(str(tmp_path), "run")
    writer.scalars("train", step=1, values={"loss": 1.0})
    writer.flush()
    assert "loss" in _tensors(tmp_path / "run" / "train")
    writer.close()


def test_events_are_written_when_the_block_raises(tmp_path):
    from tfkit.summaries import RunWriter

    with pytest.raises(RuntimeError, match="boom"), RunWriter(str(tmp_path), "run") as writer:
        for step in range(200):
            writer.scalars("train", step=step, values={"loss": float(step)})
        raise RuntimeError("boom")
    steps = [step for step, _ in _tensors(tmp_path / "run" / "train")["loss"]]
    assert steps == list(range(200))


def test_nothing_is_lost_when_the_queue_is_full(tmp_path, monkeypatch):
    from tfkit import summaries

    monkeypatch.setattr(summaries, "QUEUE_ITEMS", 2)

    def slow():
        time.sleep(0.002)
        return {"loss": 1.0}

    with summaries.RunWriter(str(tmp_path), "run") as writer:
        for step in range(100):
            writer.scalars("train", step=step, values=slow)
    assert len(_tensors(tmp_path / "run" / "train")["loss"]) == 100


def test_a_writing_error_reaches_the_caller(tmp_path):
    from tfkit.summaries import RunWriter

    writer = RunWriter(str(tmp_path), "run")
    writer.scalars("train", step=1, values=lambda: {"loss": 1 / 0})
    with pytest.raises(ZeroDivisionError):
        writer.close()


def test_training_that_fails_keeps_the_events_logged_so_far(tmp_path):
    import keras

    class FailAtSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("failed in epoch 2")

    with pytest.raises(RuntimeError, match="failed in epoch 2"):
        tfkit.train("penguins", epochs=3, batch_size=16, logdir=str(tmp_path), run_name="f",
                    export=None, verbose=False, callbacks=[FailAtSecondEpoch()])
    train = _tensors(tmp_path / "f" / "train")
    assert len(train["epoch_loss"]) == 1
    assert train["loss"] and any(tag.startswith("gradients/") for tag in train)


def test_graph_is_the_traced_training_call(run_logdir):
    from tensorflow.core.framework import graph_pb2

    root, _ = run_logdir
    graphs = [e.graph_def for e in _events(root / "penguins-run" / "train") if e.graph_def]
    assert len(graphs) == 1
    graph = graph_pb2.GraphDef.FromString(graphs[0])
    assert "While" in {node.op for node in graph.node}  # the loop of steps in one call
    body_ops = {node.op for f in graph.library.function for node in f.node_def}
    assert {"MatMul", "ReluGrad"} <= body_ops  # the forward and the backward pass
