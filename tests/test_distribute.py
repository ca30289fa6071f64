"""Strategy resolution: what 'auto' picks, cpu:N, and refusals."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkit import distribute


@pytest.mark.parametrize(
    ("gpus", "tpu", "workers", "expected"),
    [
        (0, False, 1, "cpu"),
        (1, False, 1, "gpu"),
        (4, False, 1, "mirrored"),
        (0, True, 1, "tpu"),
        (2, True, 1, "tpu"),
        (0, False, 2, "multi_worker"),
        (8, True, 3, "multi_worker"),
    ],
)
def test_auto_choice(gpus, tpu, workers, expected):
    assert distribute.choose(gpus=gpus, tpu=tpu, workers=workers) == expected


def test_cluster_workers_reads_tf_config(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                    "task": {"type": "worker", "index": 0}}),
    )
    assert distribute.cluster_workers() == 2
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.cluster_workers() == 1


def test_cpu_split_gives_two_replicas():
    strategy = distribute.resolve("cpu:2")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert distribute.resolve("cpu:2") is strategy  # one per process: collectives stay apart


def test_cpu_split_beyond_started_devices_is_refused():
    with pytest.raises(ValueError, match="needs 8 logical CPU devices, but TensorFlow already"):
        distribute.resolve("cpu:8")


def _machine_picks() -> str:
    """What 'auto' should pick on this machine, from the devices TensorFlow sees (no
    TF_CONFIG, no TPU: the tests unset the one and this machine has neither)."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "gpu" if gpus == 1 else "cpu"


def test_unknown_strategy_and_missing_hardware(monkeypatch):
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.resolve("quantum")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribute.resolve("multi_worker")


def test_gpu_strategy_follows_the_machine():
    """With a GPU, 'gpu' is one device on it; without one (as on CI), it is refused."""
    if tf.config.list_physical_devices("GPU"):
        strategy = distribute.resolve("gpu")
        assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
        assert strategy.extended.worker_devices[0].upper().endswith("GPU:0")
    else:
        with pytest.raises(ValueError, match="needs a GPU, and none is visible"):
            distribute.resolve("gpu")


def test_single_process_is_chief_and_auto_picks_by_the_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    if distribute.tpu_present():
        pytest.skip("a TPU is attached to this machine (/dev/accel0): 'auto' picks it")
    assert distribute.is_chief(distribute.resolve("cpu"))
    expected = _machine_picks()
    assert distribute.describe()["auto_picks"] == expected
    strategy = distribute.resolve("auto")
    if expected == "cpu":
        assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
        assert strategy.extended.worker_devices[0].upper().endswith("CPU:0")


def test_tpu_is_resolved_through_the_cluster_resolver(monkeypatch):
    """No TPU here: the resolution path runs against fakes of TensorFlow's TPU calls."""
    calls = []

    class FakeResolver:
        def __init__(self, tpu):
            calls.append(("resolver", tpu))

    class FakeTPUStrategy:
        def __init__(self, resolver):
            calls.append(("strategy", type(resolver).__name__))

    monkeypatch.setenv("TPU_NAME", "my-tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                        lambda r: calls.append(("connect", type(r).__name__)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system",
                        lambda r: calls.append(("initialize", type(r).__name__)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeTPUStrategy)
    strategy = distribute.resolve("auto")  # TPU_NAME set: auto picks the TPU
    assert isinstance(strategy, FakeTPUStrategy)
    assert calls == [("resolver", "my-tpu"), ("connect", "FakeResolver"),
                     ("initialize", "FakeResolver"), ("strategy", "FakeResolver")]


def test_onednn_kernels_follows_the_variable_read_when_tensorflow_starts():
    probe = "from tfkit import distribute; print(distribute.describe()['onednn_cpu_kernels'])"
    children = {
        value: subprocess.Popen(
            [sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": value, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        for value in ("0", "1")
    }
    seen = {value: child.communicate(timeout=120)[0].split()[-1]
            for value, child in children.items()}
    assert seen == {"0": "False", "1": "True"}


@pytest.mark.parametrize(
    ("layer", "onednn", "noted"),
    [
        (keras.layers.Conv2D(2, 3), False, True),
        (keras.layers.SeparableConv2D(2, 3), False, True),
        (keras.layers.Conv2D(2, 3), True, False),
        (keras.layers.Conv2D(2, 3), None, False),
        (keras.layers.Dense(2), False, False),
    ],
)
def test_onednn_hint_only_for_convolutions_on_cpus_without_onednn(
        monkeypatch, layer, onednn, noted):
    monkeypatch.setattr(distribute, "onednn_kernels", lambda: onednn)
    model = keras.Sequential([keras.Input((6, 6, 1)), layer, keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    hint = distribute.onednn_hint(model, distribute.resolve("cpu"))
    assert (hint is not None) == noted
    if noted:
        assert "TF_ENABLE_ONEDNN_OPTS=1" in hint


def test_for_replicas_cuts_a_global_batch_in_replica_order():
    strategy = distribute.resolve("cpu:2")
    batch = ({"a": tf.reshape(tf.range(8.0), [4, 2])}, tf.constant([0, 1, 2, 3]))
    x, y = distribute.for_replicas(batch, strategy)
    assert [v.numpy().tolist() for v in strategy.experimental_local_results(y)] == [[0, 1], [2, 3]]
    assert [v.device for v in strategy.experimental_local_results(y)] == list(
        strategy.extended.worker_devices)
    short = distribute.for_replicas(tf.constant([7]), strategy)  # a last batch of one row
    assert [v.numpy().tolist() for v in strategy.experimental_local_results(short)] == [[7], []]
    assert distribute.for_replicas(y, strategy) is y  # already distributed: passed on
    assert distribute.for_replicas(batch, distribute.resolve("cpu")) is batch


def test_cpu_replicas_read_untuned_batches_with_no_multi_device_iterator(monkeypatch):
    """On the CPUs of one process every tf.data iterator tfkit makes has tf.data's tuning
    thread off (an iterator dropped while that thread sleeps holds the dropping thread for
    up to a minute), and none goes through the multi-device iterator, whose per-device
    iterators would start that thread again."""
    from tensorflow.python.data.ops import iterator_ops, multi_device_iterator_ops

    import tfkit

    tuned, multi_device = [], []
    made = iterator_ops.OwnedIterator.__init__
    made_multi = multi_device_iterator_ops.OwnedMultiDeviceIterator.__init__

    def record(self, dataset=None, **kwargs):
        if dataset is not None:  # None: rebuilt from its parts, not made anew
            tuned.append(dataset.options().autotune.enabled)
        made(self, dataset=dataset, **kwargs)

    def record_multi(self, *args, **kwargs):
        multi_device.append(args)
        made_multi(self, *args, **kwargs)

    monkeypatch.setattr(iterator_ops.OwnedIterator, "__init__", record)
    monkeypatch.setattr(multi_device_iterator_ops.OwnedMultiDeviceIterator, "__init__",
                        record_multi)
    validations = []
    batches_for_replicas = distribute.batches_for_replicas

    def record_validation(*args):
        validations.append(batches_for_replicas(*args))
        return validations[-1]

    monkeypatch.setattr(distribute, "batches_for_replicas", record_validation)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    for strategy in ("cpu", "cpu:2"):
        for in_memory in (True, False):  # gathered in the loop, or a plain iterator's stream
            result = tfkit.train((x, x.sum(axis=1)), strategy=strategy, epochs=2, batch_size=16,
                                 in_memory_input=in_memory, verbose=False, logdir=None,
                                 export=None)
            result.predict(x[:5])
    # A pipeline of one's own, tuned as its author asked: read untuned all the same.
    own = tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1))).map(
        lambda a, b: (a * 1.0, b), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    tfkit.train(own, strategy="cpu:2", epochs=2, batch_size=16, verbose=False, logdir=None,
                export=None)
    assert multi_device == []
    assert tuned and not any(tuned), tuned  # the streams and predict's batches
    assert len(validations) == 5
    assert all(isinstance(v, tf.data.Dataset) and not v.options().autotune.enabled
               for v in validations)
