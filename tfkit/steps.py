"""The step functions: lesson 2's learning step, and the compiled calls that run it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfkit import distribute, optimizers
from tfkit.options import StepOptions, compiled

SUM = tf.distribute.ReduceOp.SUM
_LATEST = ("grad_norm", "last_loss")  # per-call values that are the last step's, not sums
_BOOKKEEPING = ("count", "steps", "last_loss")  # totals that are not metrics
# A Keras metric object keeps its own running result: its value is read, never summed.
KERAS_METRIC = "keras_metric:"


def loss_for(task: str) -> keras.losses.Loss:
    """A per-example loss (no reduction): tfkit averages over the global batch itself.

    Keras losses with their default reduction divide by the number of replicas
    under a strategy; `reduction=None` plus `tf.nn.compute_average_loss` is
    exact on any number of replicas.
    """
    if task == "multiclass":
        return keras.losses.SparseCategoricalCrossentropy(reduction=None)
    if task == "binary":
        return keras.losses.BinaryCrossentropy(reduction=None)
    return keras.losses.MeanSquaredError(reduction=None)


def per_example_loss(loss: Any, task: str) -> Callable[[Any, Any], tf.Tensor]:
    """A Keras loss name, object or function as a per-example loss; None: the task's.

    A `keras.losses.Loss` object's `call` is its unreduced form: the reduction
    it was made with (which would divide by the replicas) is never applied.

    Example:
        >>> float(per_example_loss("mae", "regression")(tf.ones([2, 1]), tf.zeros([2, 1]))[0])
        1.0
    """
    if loss is None:
        return loss_for(task)
    try:
        resolved = keras.losses.get(loss)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"loss {loss!r} is not a Keras loss: use a name such as 'mse', 'mae', 'huber', "
            f"'binary_crossentropy', 'sparse_categorical_crossentropy', a keras.losses.Loss "
            f"or a function(y_true, y_pred) ({err})"
        ) from None
    if isinstance(resolved, keras.losses.Loss):
        return resolved.call
    if callable(resolved):
        return resolved
    raise ValueError(f"loss {loss!r} is not a Keras loss name, object or function")


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss_fn: Callable,
               global_batch_size: int, x: Any, y: tf.Tensor,
               weights: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """One replica's learning step, as lesson 2 writes it: the reference every option keeps.

    Returns the predictions and each example's loss (for the run's figures).
    """
    with tf.GradientTape() as tape:
        predictions = model(x, training=True)  # 1. forward: the model's guess
        per_example = loss_fn(y, predictions)  # 2. loss: how wrong each guess is ...
        loss = tf.nn.compute_average_loss(  # ... averaged over the global batch, not the replica's
            per_example, sample_weight=weights, global_batch_size=global_batch_size)
        if model.losses:  # weight penalties, shared out over the replicas
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        loss = optimizer.scale_loss(loss)  # float16: keeps small gradients alive; else as is
    gradients = tape.gradient(loss, model.trainable_variables)  # 3. backward: each weight's share
    optimizer.apply_gradients(  # 4. update: the optimizer's own rule (Adam's by default)
        zip(gradients, model.trainable_variables, strict=True))
    return predictions, per_example


class Steps:
    """Compiled train/eval functions for one model, optimizer and strategy.

    `train(iterator, n)` runs `train_step` n times in one `tf.function` call,
    under the `StepOptions` (tfkit/options.py); the only host sync is the
    totals it returns. The optimizer is the run's (tfkit/optimizers.py): it
    measures, clips and keeps the gradient summed over replicas.
    """

    def __init__(
        self,
        *,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        task: str,
        strategy: tf.distribute.Strategy,
        global_batch_size: int,
        clip_norm: float | None = None,
        options: StepOptions | None = None,
        loss: Any = None,
        metrics: tuple[list, list] | None = None,
        target_scale: tuple[float, float] | None = None,
    ) -> None:
        self.model, self.task, self.strategy = model, task, strategy
        self.global_batch_size = global_batch_size
        self.options = options = options or StepOptions()
        with strategy.scope():
            self.optimizer = optimizers.for_training(
                optimizer, strategy=strategy, variables=model.trainable_variables,
                clip_norm=clip_norm, keep_gradients=options.keep_gradients,
                fused=options.fused_update)
        self.measure = self.optimizer.tfkit_measure
        self.loss_fn = per_example_loss(loss, task)
        # Keras metric objects (train, validation), made in the strategy's scope;
        # None: the task's own accuracy or mae, kept as exact sums.
        self.metrics, self.val_metrics = metrics or (None, None)
        self.target_scale = target_scale
        users_code = (self.loss_fn, *(self.metrics or ()), *(self.val_metrics or ()))
        self._replica_step = compiled(traced(self._replica_train_step, users_code),
                                      options.jit_compile)
        self._replica_eval = traced(self._replica_eval_step, users_code)
        self._train = tf.function(self._train_many)
        self._iterator: Any = None
        self.evaluate = tf.function(self._evaluate)

    @property
    def kept_gradients(self) -> list[tf.Variable]:
        """The last step's gradient, summed over replicas ([] unless kept)."""
        return self.measure.gradients

    def train(self, iterator: Any, n: tf.Tensor) -> tuple[dict[str, tf.Tensor], list]:
        """Up to n steps in one call: the summed stats, and the kept gradient (or [])."""
        self._iterator = iterator
        return self._train(iterator, n), self.kept_gradients

    def traced_graph(self, iterator: Any = None) -> tf.Graph:
        """The graph of `train` as already traced for `iterator` (default: the last one used),
        looked up, not traced again."""
        iterator = self._iterator if iterator is None else iterator
        return self._train.get_concrete_function(iterator, tf.TensorSpec([], tf.int32)).graph

    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _replica_train_step(self, x: Any, y: tf.Tensor, weights: tf.Tensor | None) -> dict:
        predictions, per_example = train_step(self.model, self.optimizer, self._loss,
                                              self.global_batch_size, x, y, weights)
        weighted = per_example if weights is None else per_example * weights
        return self._stats(y, predictions, weighted, self.metrics)

    def _loss(self, y: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
        return example_losses(self.loss_fn, y, predictions, self.task, self.target_scale)

    def _replica_eval_step(self, x: Any, y: tf.Tensor) -> dict[str, tf.Tensor]:
        predictions = self.model(x, training=False)
        return self._stats(y, predictions, self._loss(y, predictions), self.val_metrics)

    def _stats(self, y, predictions, per_example, metrics) -> dict[str, tf.Tensor]:
        """Sums (not means), so replicas and partial batches add up exactly.

        Keras metric objects keep their own state; they are updated here and
        read once per call.
        """
        stats = {
            "loss": tf.reduce_sum(per_example),
            "count": tf.cast(tf.shape(per_example)[0], tf.float32),
        }
        if metrics is not None:
            labels = labels_for(y, predictions, self.task)
            for metric in metrics:
                metric.update_state(labels, predictions)
            return stats
        if self.task == "multiclass":
            hits = tf.equal(tf.argmax(predictions, axis=-1), tf.cast(y, tf.int64))
            stats["accuracy"] = tf.reduce_sum(per_example_mean(tf.cast(hits, tf.float32)))
        elif self.task == "binary":
            guesses = tf.cast(tf.reshape(predictions, [-1]) > 0.5, tf.float32)
            stats["accuracy"] = tf.reduce_sum(tf.cast(tf.equal(guesses, y), tf.float32))
        else:
            error = tf.abs(tf.reshape(predictions, [-1]) - tf.cast(y, predictions.dtype))
            stats["mae"] = tf.reduce_sum(error)
        return stats

    def _train_many(self, iterator: Any, n: tf.Tensor) -> dict[str, tf.Tensor]:
        """Up to n steps; stops early at a non-finite loss (`steps` < n tells)."""
        totals = self._zeros(train=True)
        for i in tf.range(n):
            # (x, y) or (x, y, per-example weights), each replica its share
            x, y, *weights = distribute.for_replicas(next(iterator), self.strategy)
            self.measure.last.assign(tf.equal(i, n - 1))
            step = self._reduce(self.strategy.run(
                self._replica_step, args=(x, y, weights[0] if weights else None)))
            if not tf.math.is_finite(step["loss"]):
                break
            step = {**step, "steps": tf.constant(1.0), "last_loss": step["loss"] / step["count"]}
            totals = {k: step[k] if k in _LATEST else totals[k] + step[k] for k in totals}
        return {**totals, "grad_norm": self.measure.grad_norm.read_value(),
                **_results(self.metrics)}

    def _evaluate(self, dataset: Any) -> dict[str, tf.Tensor]:
        for metric in self.val_metrics or ():
            metric.reset_state()
        totals = self._zeros(train=False)
        for batch in dataset:  # (x, y) pairs: validation is never weighted
            x, y = distribute.for_replicas(batch[:2], self.strategy)
            step = self._reduce(self.strategy.run(self._replica_eval, args=(x, y)))
            totals = {k: totals[k] + step[k] for k in totals}
        return {**totals, **_results(self.val_metrics)}

    def reset_metrics(self) -> None:
        """Start the training metrics' running results afresh (at each epoch)."""
        for metric in self.metrics or ():
            metric.reset_state()

    def _reduce(self, per_replica: dict[str, Any]) -> dict[str, tf.Tensor]:
        return {k: self.strategy.reduce(SUM, v, axis=None) for k, v in per_replica.items()}

    def _zeros(self, train: bool) -> dict[str, tf.Tensor]:
        keys = ["loss", "count"]
        if self.metrics is None:
            keys.append("accuracy" if self.task != "regression" else "mae")
        if train:
            keys += ["steps", "last_loss"]
        return {k: tf.constant(0.0) for k in keys}


def traced(step: Callable, called: tuple) -> Callable:
    """A replica step as `tf.function` traces it: as written when the losses and metrics it
    calls are Keras's or tfkit's own, else through AutoGraph's rewriting.

    AutoGraph turns Python loops and conditions on tensors into graph ops, parsing and
    rewriting the source of every function a step calls on its first trace. tfkit's loops
    over steps and batches need it; the replica steps use `tf.cond` where a tensor decides,
    so they are traced as written, as Keras's own fit traces its step (benchmarks/
    first_trace.py). A user's own loss function or metric keeps the rewriting: a Python `if`
    on a tensor works in it.
    """
    modules = [(getattr(c, "__module__", None) or "").partition(".")[0] for c in called]
    if all(module in ("keras", "tfkit") for module in modules):
        return tf.autograph.experimental.do_not_convert(step)
    return step


def labels_for(y: tf.Tensor, predictions: tf.Tensor, task: str) -> tf.Tensor:
    """The labels shaped as the model answers: class ids as they are, else [N, 1] or [N]."""
    if task == "multiclass":
        return y
    return tf.reshape(y, (-1, 1) if predictions.shape.rank != 1 else (-1,))


def example_losses(loss_fn: Callable, y: tf.Tensor, predictions: tf.Tensor, task: str,
                   target_scale: tuple[float, float] | None = None) -> tf.Tensor:
    """The loss of each example; a regression target is measured in standard units.

    With `target_scale` (mean, std) the model answers in the target's own units
    (its last layer scales back) and both sides are standardized here, so a
    price in dollars and a rate in percent train at the same learning rate.
    """
    labels = labels_for(y, predictions, task)
    if target_scale is not None:
        mean, std = target_scale
        labels = (tf.cast(labels, tf.float32) - mean) / std
        predictions = (tf.cast(predictions, tf.float32) - mean) / std
    values = loss_fn(labels, predictions)
    if values.shape.rank == 0:  # a loss function that averaged the batch itself
        values = tf.fill(tf.shape(predictions)[:1], values)
    return per_example_mean(values)  # [N, T] per position -> [N]


def per_example_mean(values: tf.Tensor) -> tf.Tensor:
    """One value per example: per-position values [N, T] (a language model's) average to [N].

    Every example has the same T, so the mean over examples of these is the
    mean over all positions, and an example still counts once in the batch.
    """
    rank = values.shape.rank
    return tf.reduce_mean(values, axis=list(range(1, rank))) if rank and rank > 1 else values


def _results(metrics: list | None) -> dict[str, tf.Tensor]:
    return {KERAS_METRIC + m.name: tf.cast(m.result(), tf.float32) for m in metrics or ()}


def _latest(key: str) -> bool:
    return key in _LATEST or key.startswith(KERAS_METRIC)


def accumulate(into: dict[str, float], call: dict[str, float]) -> None:
    """Add one call's totals to running totals (the last step's values replace)."""
    for key, value in call.items():
        into[key] = value if _latest(key) else into.get(key, 0.0) + value


def summarize(totals: dict[str, Any]) -> dict[str, float]:
    """Turn summed stats into per-example means (Keras-style names)."""
    count = max(float(totals["count"]), 1.0)
    out = {
        k: float(v) / count for k, v in totals.items()
        if k not in _BOOKKEEPING and not _latest(k)
    }
    out.update({k[len(KERAS_METRIC):]: float(v) for k, v in totals.items()
                if k.startswith(KERAS_METRIC)})
    if "grad_norm" in totals:
        out["grad_norm"] = float(totals["grad_norm"])
    return out
