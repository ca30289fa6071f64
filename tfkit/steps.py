"""The step functions: one replica's learning step, and the compiled multi-step calls."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

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
    totals it returns. With `keep_gradients`, it also returns the last step's
    whole gradient (for histograms), carried through the loop rather than
    computed by a second traced function.
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
    ) -> None:
        self.model, self.optimizer, self.task = model, optimizer, task
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.clip_norm = clip_norm
        self.keep_gradients = keep_gradients
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.loss_fn = loss_for(task)
        step = tf.function(self._replica_train_step, jit_compile=jit_compile)
        self._compiled_replica_step = step if jit_compile else self._replica_train_step
        self.train = tf.function(self._train_many)
        self.evaluate = tf.function(self._evaluate)

    def traced_graph(self, iterator: Any) -> tf.Graph:
        """The graph of `train` as already traced for `iterator` (looked up, not traced again)."""
        return self.train.get_concrete_function(iterator, tf.TensorSpec([], tf.int32)).graph

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
        gradients, total, norm = self._clip(gradients, last)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))  # 4. w -= lr*grad
        stats = {**self._stats(y, predictions, per_example), "grad_norm": norm}
        return {**stats, "gradients": total} if self.keep_gradients else stats

    def _clip(self, gradients: list, last: tf.Tensor) -> tuple[list, list, tf.Tensor]:
        """Gradients clipped by the global norm, the all-reduced gradient, and its norm.

        Each replica holds only its share of the gradient; the optimizer sums
        the shares. The true norm is the norm of that sum, so clipping must see
        the all-reduced gradient (Keras's own clipnorm clips each share).
        Without clipping on one replica the norm is only logged, so only the
        last step of a call (`last`) pays for it; the other steps return 0.
        Several replicas measure every step: an all-reduce inside a condition
        is not allowed under MirroredStrategy.
        """
        gradients = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(gradients, self.model.trainable_variables, strict=True)
        ]

        def measure() -> tuple[list, tf.Tensor]:
            total = gradients
            if self.strategy.num_replicas_in_sync > 1:
                total = tf.distribute.get_replica_context().all_reduce(SUM, gradients)
            norm = tf.linalg.global_norm(total)
            if self.loss_scaled:
                norm = norm / tf.cast(self.optimizer.scale_loss(1.0), norm.dtype)
            return total, norm

        if self.clip_norm is None and self.strategy.num_replicas_in_sync == 1:
            total, norm = tf.cond(last, measure, lambda: (gradients, tf.constant(0.0)))
            return gradients, total, norm
        total, norm = measure()
        if self.clip_norm is None:
            return gradients, total, norm
        scale = tf.minimum(1.0, self.clip_norm / (norm + 1e-12))
        return [g * scale for g in gradients], total, norm

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

    def _train_many(self, iterator: Any, n: tf.Tensor) -> tuple[dict[str, tf.Tensor], list]:
        """Up to n steps; stops early at a non-finite loss (`steps` < n tells)."""
        totals = self._zeros(train=True)
        last = [tf.zeros_like(v) for v in self.model.trainable_variables]
        for i in tf.range(n):
            x, y = next(iterator)
            per_replica = self.strategy.run(
                self._compiled_replica_step, args=(x, y, tf.equal(i, n - 1))
            )
            if self.keep_gradients:
                # The all-reduced gradient is the same on every replica: keep the first.
                gradients = per_replica.pop("gradients")
                last = [self.strategy.experimental_local_results(g)[0] for g in gradients]
            step = self._reduce(per_replica)
            if not tf.math.is_finite(step["loss"]):
                break
            step = {**step, "steps": tf.constant(1.0), "last_loss": step["loss"] / step["count"]}
            totals = {k: step[k] if k in _LATEST else totals[k] + step[k] for k in totals}
        return totals, (last if self.keep_gradients else [])

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
