"""Pick the tf.distribute strategy: the only module that looks at devices."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfkit import _compat
from tfkit.config import CPU_N

log = logging.getLogger(__name__)

_CONV_LAYER = re.compile(r"^(Depthwise|Separable)?Conv[123]D")


def choose(*, gpus: int, tpu: bool, workers: int) -> str:
    """What `strategy="auto"` picks for the hardware found (pure, for testing).

    Example:
        >>> choose(gpus=0, tpu=False, workers=1)
        'cpu'
    """
    if workers > 1:
        return "multi_worker"
    if tpu:
        return "tpu"
    if gpus > 1:
        return "mirrored"
    if gpus == 1:
        return "gpu"
    return "cpu"


def cluster_workers() -> int:
    """How many workers `TF_CONFIG` names (1 when it is absent)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def tpu_present() -> bool:
    """A TPU is named by the environment or attached to this host.

    Asking the TPU resolver directly would wait on a metadata server that does
    not exist off Google Cloud, so only cheap local signs are read.
    """
    return bool(os.environ.get("TPU_NAME")) or os.path.exists("/dev/accel0")


def resolve(strategy: Any = "auto") -> tf.distribute.Strategy:
    """Turn a strategy name (or a ready strategy) into a `tf.distribute.Strategy`.

    Args:
        strategy: "auto", "cpu", "cpu:N", "gpu", "mirrored", "multi_worker",
            "tpu", or a `tf.distribute.Strategy`.

    Returns:
        The strategy to train under.

    Raises:
        ValueError: an unknown name, or hardware the name needs is not there.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "auto":
        strategy = choose(
            gpus=len(tf.config.list_physical_devices("GPU")),
            tpu=tpu_present(),
            workers=cluster_workers(),
        )
        log.info("strategy 'auto' picked %r", strategy)
    match = CPU_N.match(str(strategy))
    if match:
        return _split_cpu(int(match.group(1)))
    if strategy == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if strategy == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise ValueError("strategy 'gpu' needs a GPU, and none is visible; use 'auto' or 'cpu'")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if strategy == "mirrored":
        return _mirrored()
    if strategy == "multi_worker":
        if cluster_workers() < 2:
            raise ValueError(
                "strategy 'multi_worker' needs TF_CONFIG naming the cluster's workers "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}})'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if strategy == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        "strategy must be one of auto, cpu, cpu:N, gpu, mirrored, multi_worker, tpu or a "
        f"tf.distribute.Strategy; got {strategy!r}"
    )


@functools.cache
def _mirrored() -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy()


@functools.cache
def _split_cpu(n: int) -> tf.distribute.Strategy:
    """MirroredStrategy over N logical CPU devices (multi-replica on a laptop).

    One strategy per N for the whole process: two MirroredStrategy objects
    over the same devices reuse collective keys and abort each other's
    all-reduces.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n
        )
    except RuntimeError:
        pass  # TensorFlow already started; use the logical devices it has
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < n:
        raise ValueError(
            f"strategy 'cpu:{n}' needs {n} logical CPU devices, but TensorFlow already started "
            f"with {len(logical)}; choose cpu:N before anything else touches TensorFlow "
            "(e.g. as the first call in a fresh process)"
        )
    if n == 1:
        return tf.distribute.OneDeviceStrategy(logical[0].name)
    return tf.distribute.MirroredStrategy([d.name for d in logical[:n]])


def onednn_kernels() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None: cannot tell).

    TensorFlow decides once, when it is imported: `TF_ENABLE_ONEDNN_OPTS=1` or `0` if
    set, otherwise on only for x86 CPUs with AVX-512 deep-learning extensions or AMX.
    """
    return _compat.onednn_enabled()


def onednn_hint(model: Any, strategy: tf.distribute.Strategy) -> str | None:
    """A note for a convolutional model trained on CPUs without oneDNN kernels, else None."""
    on_cpu = all(":CPU:" in d.upper() for d in strategy.extended.worker_devices)
    if not on_cpu or onednn_kernels() is not False:
        return None
    if not any(_CONV_LAYER.match(type(layer).__name__) for layer in _compat.all_layers(model)):
        return None
    return ("TensorFlow's oneDNN CPU kernels are off in this process; convolutions usually "
            "train faster with them (a small CNN's step 1.3-1.4x faster on a 2-core AVX2 CPU, "
            "though a small MLP took 1.27x as long): set TF_ENABLE_ONEDNN_OPTS=1 before "
            "TensorFlow is imported")


def describe() -> dict[str, Any]:
    """What hardware is here and what `strategy="auto"` would pick (`tfkit devices`)."""
    physical = {
        kind: [d.name for d in tf.config.list_physical_devices(kind)]
        for kind in ("CPU", "GPU", "TPU")
    }
    return {
        "tensorflow": tf.__version__,
        "physical_devices": physical,
        "logical_cpus": len(tf.config.list_logical_devices("CPU")),
        "tf_config_workers": cluster_workers(),
        "tpu_signs": tpu_present(),
        "auto_picks": choose(
            gpus=len(physical["GPU"]), tpu=tpu_present(), workers=cluster_workers()
        ),
        "cpu_cores": os.cpu_count(),
        "onednn_cpu_kernels": onednn_kernels(),
    }


def local_cpus(strategy: tf.distribute.Strategy) -> bool:
    """Whether every replica is a CPU device of this process: one device or `cpu:N`."""
    if not isinstance(strategy, (tf.distribute.OneDeviceStrategy,
                                 tf.distribute.MirroredStrategy)):
        return False
    devices = [tf.DeviceSpec.from_string(d) for d in strategy.extended.worker_devices]
    return all(d.device_type == "CPU" and d.job in (None, "localhost") for d in devices)


def iterate(input_fn: Any, strategy: tf.distribute.Strategy,
            in_memory: Callable[[], Any] | None = None) -> Any:
    """An iterator over `input_fn`'s stream, fed to the strategy's replicas.

    On CPU devices of this process there is nothing to copy: the stream is
    read as global batches by a plain iterator (`in_memory()`: gathered inside
    the training loop, with no iterator at all), and the loop cuts each into
    the replicas' shares (`for_replicas`). Elsewhere (GPUs, TPUs, several
    workers) `distribute_datasets_from_function` feeds the replicas. Measured:
    the multi-device iterator it uses costs a few hundred microseconds per
    batch on one CPU (the stream alone 650-790 µs per batch through it,
    250-280 µs without), and each of its per-device iterators runs a tf.data
    tuning thread that can hold whatever thread drops the iterator for up to a
    minute (`data.untuned`).
    """
    if not local_cpus(strategy):
        return iter(strategy.distribute_datasets_from_function(input_fn))
    with tf.device(strategy.extended.worker_devices[0]):
        return in_memory() if in_memory else iter(input_fn(tf.distribute.InputContext()))


def batches_for_replicas(input_fn: Any, strategy: tf.distribute.Strategy) -> Any:
    """`input_fn`'s batches for a pass over them (validation): a dataset of global batches
    on CPU devices of this process (cut with `for_replicas` in the loop), else distributed."""
    if local_cpus(strategy):
        return input_fn(tf.distribute.InputContext())
    return strategy.distribute_datasets_from_function(input_fn)


def for_replicas(batch: Any, strategy: tf.distribute.Strategy) -> Any:
    """A global batch cut into each replica's rows, in replica order.

    Replica r gets rows r·P … r·P+P-1 of a global batch of R·P rows: the r-th
    per-replica batch, as `distribute_datasets_from_function` hands them out.
    A short last batch is cut in shares of ceil(rows / R), the last ones
    shorter or empty; the summed losses and counts are the same either way. An
    already distributed batch, or one replica, is passed on as it is.
    """
    replicas = strategy.num_replicas_in_sync
    leaves = tf.nest.flatten(batch)
    if replicas == 1 or any(isinstance(v, tf.distribute.DistributedValues) for v in leaves):
        return batch
    rows = leaves[0].shape[0]
    rows = tf.shape(leaves[0])[0] if rows is None else rows  # a short last batch: unknown
    share = -(-rows // replicas)  # ceil: a whole global batch of R·P rows gives P each
    devices = strategy.extended.worker_devices

    def part(ctx: tf.distribute.ValueContext) -> Any:
        r = ctx.replica_id_in_sync_group
        with tf.device(devices[r]):
            return tf.nest.map_structure(lambda t: t[r * share:(r + 1) * share], batch)

    return strategy.experimental_distribute_values_from_function(part)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes logs, checkpoints and exports.

    The chief is the "chief" task, or worker 0 when the cluster names none;
    a single process is always its own chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def workers(strategy: tf.distribute.Strategy) -> int:
    """How many worker processes train together under `strategy` (1 on one machine)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return cluster_workers()
    return 1
