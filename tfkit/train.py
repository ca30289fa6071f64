"""`tfkit.train()`: data → model → the custom loop under a strategy → logs → export."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit import data as data_lib
from tfkit import distribute, loop, memory, models
from tfkit.config import TrainConfig
from tfkit.monitor import Monitor
from tfkit.steps import Steps
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        history: per-epoch lists, Keras-style keys (`loss`, `val_loss`,
            `accuracy`/`val_accuracy` or `mae`/`val_mae`, ...).
        model: the trained keras.Model.
        export_path: the SavedModel folder, or None when export was skipped.
        logdir: the run's TensorBoard folder, or None.
        spec: what the data looked like (task, columns, class names).
        config: the run's configuration.
    """

    history: dict[str, list[float]]
    model: keras.Model
    export_path: str | None
    logdir: str | None
    spec: data_lib.DataSpec
    config: TrainConfig
    strategy: tf.distribute.Strategy

    def predict(self, features: Any, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs for raw features: an array, or a DataFrame/dict of columns.

        Example:
            >>> result.predict(tfkit.datasets.load("penguins").head(3))  # doctest: +SKIP
        """
        inputs = data_lib.model_inputs(features, self.spec)
        batches = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
        return np.concatenate([self.model(b, training=False).numpy() for b in batches])


def train(
    data: Any = "penguins",
    *,
    config: TrainConfig | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model with tfkit's own GradientTape loop under a tf.distribute strategy.

    Args:
        data: a bundled dataset name ("penguins", "auto_mpg", "digits"), a
            pandas DataFrame, a CSV path, an `(X, y)` tuple or a
            `tf.data.Dataset` of `(features, label)` pairs.
        config: a ready `TrainConfig`; when given, `options` must be empty.
        callbacks: Keras callbacks, driven at each call and epoch.
        **options: any `TrainConfig` field: target, model, epochs, batch_size,
            learning_rate, optimizer, validation_split, seed, strategy,
            logdir, run_name, export, ...

    Returns:
        A TrainResult with history, model, export_path and logdir.

    Raises:
        ValueError: bad input, named with what would be valid, before training.

    Example:
        >>> result = train("penguins", target="species", epochs=2, export=None, logdir=None)
        >>> sorted(result.history)[:2]
        ['accuracy', 'grad_norm']
    """
    config = _make_config(data, config, options)
    # The strategy first: "cpu:N" must split the CPU before anything starts TensorFlow.
    strategy = distribute.resolve(config.strategy)
    keras.utils.set_random_seed(config.seed)
    prepared = data_lib.prepare(
        config.data, target=config.target, task=config.task,
        validation_split=config.validation_split, seed=config.seed, missing=config.missing,
    )
    spec = prepared.spec
    global_batch = _global_batch(config.batch_size, spec.n_train, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = _build_model(config, spec, strategy)
        optimizer = make_optimizer(config.optimizer, config.learning_rate)
        optimizer.build(model.trainable_variables)  # before the first traced step
    steps = Steps(
        model=model, optimizer=optimizer, task=spec.task, strategy=strategy,
        global_batch_size=global_batch, clip_norm=config.clip_norm,
        jit_compile=config.jit_compile,
        keep_gradients=bool(config.logdir and config.histogram_every_steps),
    )
    per_epoch = data_lib.steps_per_epoch(spec.n_train, global_batch)
    train_iterator = iter(strategy.distribute_datasets_from_function(
        data_lib.train_input_fn(
            prepared.train, n_train=spec.n_train, global_batch_size=global_batch,
            seed=config.seed, first_epoch=0, epochs=config.epochs,
        )
    ))
    validation = None
    if prepared.validation is not None:
        validation = strategy.distribute_datasets_from_function(
            data_lib.eval_input_fn(prepared.validation, global_batch_size=global_batch)
        )
    run_name = config.run_name or _default_run_name(spec.name, model.name)
    chief = distribute.is_chief(strategy)
    writer = RunWriter(config.logdir, run_name, chief=chief)
    writer.config(config.to_dict())
    writer.model_summary(model)
    writer.hparams({**config.to_dict(), "task": spec.task,
                    "replicas": strategy.num_replicas_in_sync})
    estimate = memory.estimate_memory(
        model, global_batch // strategy.num_replicas_in_sync, config.optimizer
    )
    log.info(estimate.describe())
    log.info(
        "training %s (%d parameters) on %s: %d train / %d validation rows, task %s, "
        "%d replica(s), global batch %d, %d steps per epoch",
        model.name, model.count_params(), spec.name, spec.n_train, spec.n_val, spec.task,
        strategy.num_replicas_in_sync, global_batch, per_epoch,
    )
    callback_list = keras.callbacks.CallbackList(
        _callbacks(config, callbacks), add_history=False, add_progbar=False, model=model,
        epochs=config.epochs, steps=per_epoch,
    )
    monitor = Monitor(writer, steps, log_every_steps=config.log_every_steps,
                      histogram_every_steps=config.histogram_every_steps)
    try:
        history = loop.run(
            steps=steps, train_iterator=train_iterator, validation=validation,
            steps_per_epoch=per_epoch, epochs=config.epochs, monitor=monitor,
            steps_per_execution=config.steps_per_execution, callbacks=callback_list,
            writer=writer, profile=config.profile, verbose=config.verbose,
        )
    except tf.errors.ResourceExhaustedError as err:
        raise memory.OutOfMemoryError(memory.out_of_memory_message(estimate, err)) from None
    finally:
        writer.close()
    export_path = None
    if config.export and chief:
        from tfkit.export import export_model

        example = prepared.validation_arrays[0] if prepared.validation_arrays else None
        export_path = str(export_model(
            model, os.path.join(config.export, config.model_name or spec.name),
            task=spec.task, class_names=spec.class_names, example=_first_rows(example),
        ))
    return TrainResult(
        history=history, model=model, export_path=export_path,
        logdir=writer.path, spec=spec, config=config, strategy=strategy,
    )


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name: adam, adamw, sgd (momentum 0.9) or rmsprop."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)


def _make_config(data: Any, config: TrainConfig | None, options: dict) -> TrainConfig:
    if config is not None:
        if options:
            raise ValueError(f"pass either config= or keyword options, not both: {sorted(options)}")
        return config
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(fields))}"
        )
    return TrainConfig(data=data, **options)


def _global_batch(batch_size: int, n_train: int, replicas: int) -> int:
    if batch_size % replicas:
        raise ValueError(
            f"batch_size {batch_size} must divide evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )
    if n_train < replicas:
        raise ValueError(f"only {n_train} training rows for {replicas} replicas; need more data")
    if batch_size > n_train:
        smaller = n_train - n_train % replicas
        log.warning("batch_size %d is more than the %d training rows; using %d",
                    batch_size, n_train, smaller)
        return smaller
    return batch_size


def _build_model(config: TrainConfig, spec: data_lib.DataSpec, strategy) -> keras.Model:
    model = models.build(config.model, spec, **config.model_kwargs)
    if isinstance(config.model, keras.Model) and strategy.num_replicas_in_sync > 1:
        # A model made outside the scope holds plain variables; mirror a copy of it.
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    return model


def _callbacks(config: TrainConfig, callbacks) -> list[keras.callbacks.Callback]:
    out = list(callbacks or [])
    if config.early_stopping_patience:
        out.append(keras.callbacks.EarlyStopping(
            monitor="val_loss" if config.validation_split else "loss",
            patience=config.early_stopping_patience, restore_best_weights=True,
        ))
    return out


def _default_run_name(dataset: str, model: str) -> str:
    return f"{dataset}-{model}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _first_rows(example: Any, n: int = 8) -> Any:
    if example is None:
        return None
    if isinstance(example, dict):
        return {k: v[:n] for k, v in example.items()}
    return example[:n]
