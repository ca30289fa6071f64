"""Input pipelines for the training loop: epochs of global batches, gathered or streamed."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def untuned(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's model-based autotuning off.

    That tuning runs a thread per iterator that sleeps between rounds, up to a
    minute apart; an iterator dropped while its thread sleeps can hold the
    dropping thread (and with it the training step that collected it) until the
    sleep ends: pauses of 20-90 s on a busy CPU, measured (benchmarks/RESULTS.md).
    `prefetch(AUTOTUNE)` still sizes its buffer with its own tuner, and
    `map(num_parallel_calls=AUTOTUNE)` runs as many calls at once as there are cores.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def row_batches(rows: Any, batch_size: int) -> tf.data.Dataset:
    """In-memory rows (an array, or a dict of columns) in batches, in order, untuned."""
    return untuned(tf.data.Dataset.from_tensor_slices(rows).batch(batch_size))


def steps_per_epoch(n_train: int, global_batch_size: int) -> int:
    """Full global batches per epoch; the remainder rows wait for the next shuffle."""
    return n_train // global_batch_size


def train_input_fn(
    train: tf.data.Dataset, *, n_train: int, global_batch_size: int, seed: int,
    epochs: int, start_step: int = 0, tensors: Any = None,
):
    """A `distribute_datasets_from_function` input function for all epochs in one stream.

    Epoch e is the training set in a seeded order, cut to whole global
    batches. Every input pipeline (one per worker) makes the same stream, cuts
    it into per-replica batches and keeps every k-th: global step s is then
    made of batches s·R … s·R+R-1 on any layout of R replicas, so one device,
    `cpu:2` and two workers train on exactly the same global batches.
    Resuming at `start_step` starts at its epoch and skips the batches already
    used. With the rows in memory (`tensors`), an epoch is one shuffle of the
    row indices and whole batches are gathered, rather than every row passing
    through a shuffle buffer one at a time (measured faster, see
    benchmarks/RESULTS.md); a streamed dataset is shuffled through a buffer.
    """
    per_epoch = steps_per_epoch(n_train, global_batch_size)
    rows = per_epoch * global_batch_size
    first_epoch, steps_done = divmod(start_step, per_epoch)

    def input_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        replicas = global_batch_size // per_replica
        if tensors is not None:
            batches = _gathered(tensors, n_train, rows, per_replica, seed, first_epoch, epochs)
        else:
            epoch = train.shuffle(min(n_train, 100_000), seed=seed, reshuffle_each_iteration=True)
            stream = epoch.take(rows).repeat(epochs).skip(first_epoch * rows)
            batches = stream.batch(per_replica, drop_remainder=True)
        batches = batches.skip(steps_done * replicas)
        if ctx.num_input_pipelines > 1:
            batches = batches.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return untuned(batches.prefetch(tf.data.AUTOTUNE))

    return input_fn


def _gathered(tensors, n_train, rows, per_replica, seed, first_epoch, epochs) -> tf.data.Dataset:
    """Per-replica batches gathered from in-memory rows: `epoch_batches`, through tf.data."""

    def batches(epoch: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(
            epoch_batches(n_train, rows, seed, epoch, per_replica))

    stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(batches)
    return stream.map(lambda index: gather_rows(tensors, index))


def epoch_batches(n_train: int, rows: int, seed: int, epoch: tf.Tensor,
                  batch_size: int) -> tf.Tensor:
    """The row indices of epoch `epoch`, one batch a row: the one rule of in-memory input.

    The epoch is a seeded shuffle of the row indices cut to `rows` (whole
    global batches) and split into batches in order; the input stream and
    `GatheredBatches` both take their batches from here, so they cannot differ.
    """
    seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n_train, dtype=tf.int64), seed=seeds)[:rows]
    return tf.reshape(order, [-1, batch_size])


def gather_rows(tensors: Any, index: tf.Tensor) -> Any:
    """The rows `index` of every in-memory tensor."""
    return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)


class GatheredBatches:
    """Global batches gathered from in-memory rows inside the compiled training loop.

    Batch for batch the same as `train_input_fn`'s in-memory stream (both cut
    `epoch_batches`; global batch s is per-replica batches s·R … s·R+R-1 of the
    same epoch order), but with no input iterator:
    `next()` in the traced loop reads a step variable, slices that step's
    indices from the epoch's order and gathers the rows, a few small ops. On one
    CPU device this replaces the iterator's per-batch hand-off (measured in
    benchmarks/RESULTS.md). A new epoch's order is drawn when the step crosses
    into it, so any number of steps per call works.

    Example:
        >>> x = tf.range(8, dtype=tf.float32)[:, None]
        >>> batches = GatheredBatches((x, tf.range(8)), n_train=8, global_batch_size=4, seed=0)
        >>> [int(n) for n in next(batches)[0].shape]
        [4, 1]
    """

    def __init__(self, tensors: Any, *, n_train: int, global_batch_size: int, seed: int,
                 start_step: int = 0) -> None:
        self._tensors, self._n_train, self._seed = tensors, n_train, seed
        self._per_epoch = steps_per_epoch(n_train, global_batch_size)
        self._rows = self._per_epoch * global_batch_size
        self._batch_size = global_batch_size
        self._step = tf.Variable(start_step, dtype=tf.int64, trainable=False)
        self._epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)  # whose order is held
        self._order = tf.Variable(tf.zeros([self._per_epoch, global_batch_size], tf.int64),
                                  trainable=False)

    def __iter__(self) -> GatheredBatches:
        return self

    def __next__(self) -> Any:
        step = self._step.assign_add(1) - 1
        epoch, index = step // self._per_epoch, step % self._per_epoch
        held = tf.cond(tf.equal(epoch, self._epoch), lambda: tf.identity(self._epoch),
                       lambda: self._draw(epoch))
        with tf.control_dependencies([held]):
            rows = tf.gather(self._order, index)
        return gather_rows(self._tensors, rows)

    def _draw(self, epoch: tf.Tensor) -> tf.Tensor:
        batches = epoch_batches(self._n_train, self._rows, self._seed, epoch, self._batch_size)
        with tf.control_dependencies([self._order.assign(batches)]):
            return self._epoch.assign(epoch)


def eval_input_fn(validation: tf.data.Dataset, *, global_batch_size: int):
    """Input function for the validation pass: every row once, in order."""

    def input_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = validation
        if ctx.num_input_pipelines > 1:
            shard = validation.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        return untuned(shard.batch(per_replica).prefetch(tf.data.AUTOTUNE))

    return input_fn

