"""Watch it learn: a real TensorBoard reads back what a run wrote."""

import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import requests
from conftest import ChildLines

import tfkit

TENSORBOARD_START_SECONDS = 90


class WeightsAroundCalls(keras.callbacks.Callback):
    """The weights before and after each training call, by global step (an inspection is a
    call of one step)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[int, tuple[int, dict, dict]] = {}  # step after: (step before, w, w')
        self._epoch, self._before = 0, None

    def _weights(self) -> dict[str, np.ndarray]:
        return {v.path: np.array(v.numpy()) for v in self.model.trainable_variables}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._before = (batch, self._weights())

    def on_train_batch_end(self, batch, logs=None):
        spe = self.params["steps"]
        first, before = self._before
        self.calls[self._epoch * spe + batch + 1] = (self._epoch * spe + first, before,
                                                      self._weights())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def run_logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    weights, records = WeightsAroundCalls(), Records()
    logger = logging.getLogger("tfkit")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        result = tfkit.train(
            "penguins", epochs=6, batch_size=16, log_every_steps=4, histogram_every_steps=10,
            logdir=str(root), run_name="penguins-run", export=None, verbose=False,
            callbacks=[weights],
        )
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    result.weights_around_calls = weights.calls
    result.log_messages = records.messages
    return root, result


@pytest.fixture(scope="module")
def tensorboard(run_logdir):
    root, _ = run_logdir
    exe = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or "tensorboard"
    # Port 0: TensorBoard binds a free port itself and names it, so no other process can
    # take the port between choosing and binding it.
    proc = subprocess.Popen(
        [exe, "--logdir", str(root), "--host", "127.0.0.1", "--port", "0",
         "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines = ChildLines(proc.stderr)
    deadline = time.monotonic() + TENSORBOARD_START_SECONDS
    try:
        bound = None
        while bound is None:
            line = lines.next(deadline)
            if line is None:
                pytest.fail("TensorBoard exited:\n" + "".join(lines.seen[-20:]))
            bound = re.search(r" at (http://127\.0\.0\.1:\d+)/", line)
        base = bound.group(1)
        while True:
            try:
                runs = requests.get(f"{base}/data/runs", timeout=5).json()
                if "penguins-run/train" in runs and "penguins-run/validation" in runs:
                    tags = requests.get(f"{base}/data/plugin/scalars/tags", timeout=5).json()
                    if "epoch_loss" in tags.get("penguins-run/validation", {}):
                        break
            except (requests.ConnectionError, requests.Timeout):  # up, or busy loading the run
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


def test_update_ratio_is_how_far_one_step_moved_each_layer(tensorboard, run_logdir):
    """Each logged update_ratio/<layer> is ||w_after - w_before|| / ||w_before|| over the
    layer's weights, for the one step it was logged at (weights read around that call)."""
    calls = run_logdir[1].weights_around_calls
    tags = [t for t in _get(tensorboard, "/data/plugin/scalars/tags")["penguins-run/train"]
            if t.startswith("update_ratio/")]
    layers = {t.split("/", 1)[1] for t in tags}
    assert any("dense_0" in layer for layer in layers), sorted(layers)
    checked = 0
    for tag in tags:
        layer = tag.split("/", 1)[1]
        points = _get(tensorboard, "/data/plugin/scalars/scalars", run="penguins-run/train",
                      tag=tag)
        assert len(points) >= 2, points  # at least once an epoch
        for _, step, logged in points:
            first, before, after = calls[step]
            assert first == step - 1  # an inspection is a call of exactly one step
            names = [n for n in before if n.rsplit("/", 1)[0] == layer]
            assert names, f"no weights of {layer} in {sorted(before)}"
            moved = sum(np.sum((after[n] - before[n]) ** 2) for n in names)
            size = sum(np.sum(before[n] ** 2) for n in names)
            assert logged == pytest.approx(np.sqrt(moved / size), rel=1e-3)
            assert logged > 0
            checked += 1
    assert checked >= 2 * len(layers)


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
    model = result.model
    replicas = result.strategy.num_replicas_in_sync
    estimate = tfkit.estimate_memory(model, 16 // replicas, "adam")
    logged = [m for m in result.log_messages if m.startswith("memory estimate")]
    assert logged == [estimate.describe()], result.log_messages
    assert f"memory estimate at batch {16 // replicas}:" in logged[0]
    # Sized from the model itself: 4 bytes a float32 weight, Adam's two slots per weight.
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables) * 4
    assert estimate.parameters == model.count_params() * 4
    assert estimate.gradients == trainable
    assert estimate.optimizer_state == 2 * trainable
    assert estimate.workspace == 2 * max(int(np.prod(v.shape)) * 4 for v in model.weights)
    # Activations: at least each Dense layer's outputs, and in proportion to the batch.
    dense_floats = sum(layer.units for layer in model.layers
                       if isinstance(layer, keras.layers.Dense))
    one = tfkit.estimate_memory(model, 1, "adam")
    assert one.activations >= 4 * dense_floats
    assert estimate.activations == (16 // replicas) * one.activations
    assert estimate.total == (estimate.parameters + estimate.gradients
                              + estimate.optimizer_state + estimate.workspace
                              + estimate.activations)


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
    """The device's memory is made small and the step's allocation failure faked (a real one
    would take the machine's memory); the advice is then checked against fresh estimates."""
    import re

    import tensorflow as tf

    from tfkit import steps as steps_lib

    def exhausted(self, iterator, n):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(steps_lib.Steps, "_train_many", exhausted)
    spec = tfkit.data.prepare("penguins").spec
    model = tfkit.models.build("mlp", spec, hidden=(128,))
    at_64 = tfkit.estimate_memory(model, 64)
    budget = (at_64.fixed + at_64.total) // 2  # somewhere between no batch and batch 64
    monkeypatch.setattr("tfkit.memory.device_memory_limit", lambda: budget)
    with pytest.raises(tfkit.OutOfMemoryError) as info:
        tfkit.train("penguins", epochs=1, batch_size=64, strategy="cpu",
                    histogram_every_steps=0, model_kwargs={"hidden": (128,)}, logdir=None,
                    export=None, verbose=False)
    message = str(info.value)
    assert "OOM when allocating tensor" in message
    parts = {"parameters": at_64.parameters, "gradients": at_64.gradients,
             "optimizer state": at_64.optimizer_state, "activations": at_64.activations}
    assert f"The largest part is {max(parts, key=parts.get)};" in message
    fits = int(re.search(r"Try batch_size=(\d+) or smaller", message).group(1))
    assert 0 < fits < 64
    # The largest batch whose estimate fits the device: the next one up does not.
    assert tfkit.estimate_memory(model, fits).total <= budget
    assert tfkit.estimate_memory(model, fits + 1).total > budget


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


def test_a_writing_error_reaches_the_caller_and_the_file_is_still_closed(tmp_path):
    from tfkit.summaries import RunWriter

    writer = RunWriter(str(tmp_path), "run")
    writer.scalars("train", step=1, values=lambda: {"loss": 1 / 0})
    with pytest.raises(ZeroDivisionError):
        writer.close()
    (written,) = (tmp_path / "run" / "train").glob("events.out.tfevents.*")
    fds = pathlib.Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd here to list this process's open files")
    opened = {os.path.realpath(fd) for fd in fds.iterdir()}
    assert str(written.resolve()) not in opened


def test_a_file_that_cannot_be_made_is_an_error_for_the_caller(tmp_path):
    from tfkit.summaries import RunWriter

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train").write_text("a file where the run's folder should be")
    writer = RunWriter(str(tmp_path), "run")
    # The folder is made with the split's first event; a writer that made it on its own
    # thread would raise the error from a later call, or from close.
    with pytest.raises(Exception, match="train"):
        writer.scalars("train", step=1, values={"loss": 1.0})
        writer.scalars("train", step=2, values={"loss": 0.5})
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
