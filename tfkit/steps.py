"""The step functions: one replica's learning step, and the compiled multi-step calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfkit.updates import fused_update

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


class Steps:
    """Compiled train/eval functions for one model, optimizer and strategy.

    The replica step is the lesson in code: forward pass, loss, backward pass,
    update. `train(iterator, n)` runs n of them in one `tf.function` call so a
    small model is not bound by Python overhead; the only host sync is the
    totals it returns. With `keep_gradients`, the last step of each call also
    keeps its whole gradient (for histograms) in variables beside the model,
    so no second traced function is needed. With `fused` (the default), a plain
    Adam or SGD applies its update in one TensorFlow kernel per weight
    (tfkit/updates.py); other optimizers apply their own.
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
        jit_compile: bool = False,
        keep_gradients: bool = False,
        fused: bool = True,
        loss: Any = None,
        metrics: tuple[list, list] | None = None,
        target_scale: tuple[float, float] | None = None,
    ) -> None:
        self.model, self.optimizer, self.task = model, optimizer, task
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.clip_norm = clip_norm
        self.keep_gradients = keep_gradients
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.loss_fn = per_example_loss(loss, task)
        # Keras metric objects (train, validation), made in the strategy's scope;
        # None: the task's own accuracy or mae, kept as exact sums.
        self.metrics, self.val_metrics = metrics or (None, None)
        self.target_scale = target_scale
        self._fused = fused_update(optimizer, strategy) if fused else None
        self.kept_gradients = self._gradient_store() if keep_gradients else []
        step = tf.function(self._replica_train_step, jit_compile=jit_compile)
        self._compiled_replica_step = step if jit_compile else self._replica_train_step
        self._train = tf.function(self._train_many)
        self.evaluate = tf.function(self._evaluate)

    def train(self, iterator: Any, n: tf.Tensor) -> tuple[dict[str, tf.Tensor], list]:
        """Up to n steps in one call: the summed stats, and the kept gradient (or [])."""
        return self._train(iterator, n), self.kept_gradients

    def traced_graph(self, iterator: Any) -> tf.Graph:
        """The graph of `train` as already traced for `iterator` (looked up, not traced again)."""
        return self._train.get_concrete_function(iterator, tf.TensorSpec([], tf.int32)).graph

    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def _replica_train_step(self, x: Any, y: tf.Tensor, weights: tf.Tensor | None,
                            last: tf.Tensor) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)  # 1. forward: guess
            per_example = self._loss(y, predictions)  # 2. measure the error, per example
            loss = tf.nn.compute_average_loss(
                per_example, sample_weight=weights, global_batch_size=self.global_batch_size
            )
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            if self.loss_scaled:
                loss = self.optimizer.scale_loss(loss)  # float16: keep small gradients alive
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)  # 3. backward: each weight's share
        summed, shares, norm = self._clip(gradients, last)
        self._update(summed, shares, variables)  # 4. nudge: the optimizer's rule, e.g. Adam's
        weighted = per_example if weights is None else per_example * weights
        return {**self._stats(y, predictions, weighted, self.metrics), "grad_norm": norm}

    def _loss(self, y: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
        return example_losses(self.loss_fn, y, predictions, self.task, self.target_scale)

    def _clip(self, gradients: list, last: tf.Tensor) -> tuple[list, list, tf.Tensor]:
        """The gradient summed over replicas and each replica's share, clipped, and the norm.

        Each replica holds only its share of the gradient. The true norm is
        the norm of their sum, so clipping must see the all-reduced gradient
        (Keras's own clipnorm clips each share). A fused update applies that
        sum; Keras's apply takes the shares and sums them itself. Without
        clipping on one replica the norm is only logged, so only the last step
        of a call (`last`) pays for it (and for keeping the gradient); the
        other steps return 0. Several replicas sum every step: an all-reduce
        inside a condition is not allowed under MirroredStrategy.
        """
        shares = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(gradients, self.model.trainable_variables, strict=True)
        ]
        total = shares
        if self.strategy.num_replicas_in_sync > 1:
            total = tf.distribute.get_replica_context().all_reduce(SUM, shares)

        def measure() -> tf.Tensor:
            norm = tf.linalg.global_norm(total)
            if self.loss_scaled:
                norm = norm / tf.cast(self.optimizer.scale_loss(1.0), norm.dtype)
            return norm

        if self.clip_norm is None and self.strategy.num_replicas_in_sync == 1:
            norm = tf.cond(last, lambda: self._keep(total, measure()), lambda: 0.0)
            return total, shares, norm
        norm = measure()
        if self.keep_gradients:
            tf.cond(last, lambda: self._keep(total, norm), lambda: norm)
        if self.clip_norm is None:
            return total, shares, norm
        scale = tf.minimum(1.0, self.clip_norm / (norm + 1e-12))
        return [g * scale for g in total], [g * scale for g in shares], norm

    def _update(self, summed: list, shares: list, variables: list) -> None:
        if self._fused:
            self._fused(summed, shares, variables)
        else:
            self.optimizer.apply_gradients(zip(shares, variables, strict=True))

    def _gradient_store(self) -> list[tf.Variable]:
        """One variable per weight for the last step's gradient, outside any checkpoint.

        On read, several replicas' copies (all holding the same all-reduced
        gradient) give the first one's.
        """
        with self.strategy.scope():
            return [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                            synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                for v in self.model.trainable_variables
            ]

    def _keep(self, gradients: list, norm: tf.Tensor) -> tf.Tensor:
        """Store the gradient when asked to; returns `norm` (a condition's output)."""
        if not self.keep_gradients:
            return norm
        with tf.control_dependencies(
            [kept.assign(g) for kept, g in zip(self.kept_gradients, gradients, strict=True)]
        ):
            return tf.identity(norm)

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
            x, y, *weights = next(iterator)  # (x, y) or (x, y, per-example weights)
            per_replica = self.strategy.run(
                self._compiled_replica_step,
                args=(x, y, weights[0] if weights else None, tf.equal(i, n - 1)),
            )
            step = self._reduce(per_replica)
            if not tf.math.is_finite(step["loss"]):
                break
            step = {**step, "steps": tf.constant(1.0), "last_loss": step["loss"] / step["count"]}
            totals = {k: step[k] if k in _LATEST else totals[k] + step[k] for k in totals}
        return {**totals, **_results(self.metrics)}

    def _evaluate(self, dataset: Any) -> dict[str, tf.Tensor]:
        for metric in self.val_metrics or ():
            metric.reset_state()
        totals = self._zeros(train=False)
        for batch in dataset:  # (x, y) pairs: validation is never weighted
            step = self._reduce(self.strategy.run(self._replica_eval_step, args=batch[:2]))
            totals = {k: totals[k] + step[k] for k in totals}
        return {**totals, **_results(self.val_metrics)}

    def reset_metrics(self) -> None:
        """Start the training metrics' running results afresh (at each epoch)."""
        for metric in self.metrics or ():
            metric.reset_state()

    def _reduce(self, per_replica: dict[str, Any]) -> dict[str, tf.Tensor]:
        out = {}
        for key, value in per_replica.items():
            # Every replica computes the same global norm: take one, do not add them.
            op = tf.distribute.ReduceOp.MEAN if key == "grad_norm" else SUM
            out[key] = self.strategy.reduce(op, value, axis=None)
        return out

    def _zeros(self, train: bool) -> dict[str, tf.Tensor]:
        keys = ["loss", "count"]
        if self.metrics is None:
            keys.append("accuracy" if self.task != "regression" else "mae")
        if train:
            keys += ["grad_norm", "steps", "last_loss"]
        return {k: tf.constant(0.0) for k in keys}


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
