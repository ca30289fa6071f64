"""The step functions: one replica's learning step, and the compiled multi-step calls."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfkit.updates import fused_update

SUM = tf.distribute.ReduceOp.SUM
_LATEST = ("grad_norm", "last_loss")  # per-call values that are the last step's, not sums
_BOOKKEEPING = ("count", "steps", "last_loss")  # totals that are not metrics


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
    ) -> None:
        self.model, self.optimizer, self.task = model, optimizer, task
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.clip_norm = clip_norm
        self.keep_gradients = keep_gradients
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.loss_fn = loss_for(task)
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

    def _replica_train_step(self, x: Any, y: tf.Tensor, last: tf.Tensor) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)  # 1. forward: guess
            per_example = self.loss_fn(self._labels(y), predictions)  # 2. measure the error
            per_example = per_example_mean(per_example)  # [N, T] per position -> [N]
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=self.global_batch_size
            )
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            if self.loss_scaled:
                loss = self.optimizer.scale_loss(loss)  # float16: keep small gradients alive
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)  # 3. backward: each weight's share
        summed, shares, norm = self._clip(gradients, last)
        self._update(summed, shares, variables)  # 4. nudge: w -= lr * grad
        return {**self._stats(y, predictions, per_example), "grad_norm": norm}

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
        per_example = per_example_mean(self.loss_fn(self._labels(y), predictions))
        return self._stats(y, predictions, per_example)

    def _labels(self, y: tf.Tensor) -> tf.Tensor:
        return y if self.task == "multiclass" else tf.reshape(y, (-1, 1))

    def _stats(self, y, predictions, per_example) -> dict[str, tf.Tensor]:
        """Sums (not means), so replicas and partial batches add up exactly."""
        stats = {
            "loss": tf.reduce_sum(per_example),
            "count": tf.cast(tf.shape(per_example)[0], tf.float32),
        }
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
            x, y = next(iterator)
            per_replica = self.strategy.run(
                self._compiled_replica_step, args=(x, y, tf.equal(i, n - 1))
            )
            step = self._reduce(per_replica)
            if not tf.math.is_finite(step["loss"]):
                break
            step = {**step, "steps": tf.constant(1.0), "last_loss": step["loss"] / step["count"]}
            totals = {k: step[k] if k in _LATEST else totals[k] + step[k] for k in totals}
        return totals

    def _evaluate(self, dataset: Any) -> dict[str, tf.Tensor]:
        totals = self._zeros(train=False)
        for x, y in dataset:
            step = self._reduce(self.strategy.run(self._replica_eval_step, args=(x, y)))
            totals = {k: totals[k] + step[k] for k in totals}
        return totals

    def _reduce(self, per_replica: dict[str, Any]) -> dict[str, tf.Tensor]:
        out = {}
        for key, value in per_replica.items():
            # Every replica computes the same global norm: take one, do not add them.
            op = tf.distribute.ReduceOp.MEAN if key == "grad_norm" else SUM
            out[key] = self.strategy.reduce(op, value, axis=None)
        return out

    def _zeros(self, train: bool) -> dict[str, tf.Tensor]:
        keys = ["loss", "count", "accuracy" if self.task != "regression" else "mae"]
        if train:
            keys += ["grad_norm", "steps", "last_loss"]
        return {k: tf.constant(0.0) for k in keys}


def per_example_mean(values: tf.Tensor) -> tf.Tensor:
    """One value per example: per-position values [N, T] (a language model's) average to [N].

    Every example has the same T, so the mean over examples of these is the
    mean over all positions, and an example still counts once in the batch.
    """
    rank = values.shape.rank
    return tf.reduce_mean(values, axis=list(range(1, rank))) if rank and rank > 1 else values


def accumulate(into: dict[str, float], call: dict[str, float]) -> None:
    """Add one call's totals to running totals (the last step's values replace)."""
    for key, value in call.items():
        into[key] = value if key in _LATEST else into.get(key, 0.0) + value


def summarize(totals: dict[str, Any]) -> dict[str, float]:
    """Turn summed stats into per-example means (Keras-style names)."""
    count = max(float(totals["count"]), 1.0)
    out = {
        k: float(v) / count for k, v in totals.items()
        if k not in _BOOKKEEPING and k != "grad_norm"
    }
    if "grad_norm" in totals:
        out["grad_norm"] = float(totals["grad_norm"])
    return out
