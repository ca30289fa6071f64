"""`tfkit.train()`: data → model → the custom loop under a strategy → logs → export."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit import _compat, adapt, checkpoints, console, distribute, loop, memory
from tfkit import data as data_lib
from tfkit.checkpoints import Checkpointer, NonFiniteLossError
from tfkit.config import TrainConfig
from tfkit.export import export_model
from tfkit.interrupts import StopRequests
from tfkit.monitor import Monitor
from tfkit.schedules import CosineDecay
from tfkit.steps import Steps
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)

MULTI_WORKER_STEPS_PER_CALL = 32


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
        stats: per-epoch figures that are not metrics: `samples_per_second`,
            `learning_rate`, `grad_norm` (also in TensorBoard).
    """

    history: dict[str, list[float]]
    model: keras.Model
    export_path: str | None
    logdir: str | None
    spec: data_lib.DataSpec
    config: TrainConfig
    strategy: tf.distribute.Strategy
    stats: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def predict(self, features: Any, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs for raw features, one row of outputs per input row.

        A table's cells are read as the training table's were (`'2,100'` is a
        number, `'?'` a missing cell). A row with a missing cell is filled as
        training filled it when the run used `missing="impute"`; under
        `missing="drop"` the model never learned such rows, so they are refused
        rather than answered with NaN.

        Args:
            features: for a table, a DataFrame or a dict of column values
                (extra columns, such as the target, are ignored); otherwise an
                array of examples.
            batch_size: rows per model call.

        Returns:
            An array with one row per input row: probabilities for a
            classifier, values in the target's units for a regressor.

        Raises:
            ValueError: a column the model needs is lacking, or (with
                `missing="drop"`) rows have missing cells; the message names
                the rows and columns.

        Example:
            >>> result.predict(tfkit.datasets.load("penguins").dropna().head(3))  # doctest: +SKIP
        """
        if self.spec.kind == "table":
            inputs = data_lib.read_features(features, self.spec, missing=self.config.missing)
        else:
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
        >>> sorted(result.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
    """
    config = _make_config(data, config, options)
    # The strategy first: "cpu:N" must split the CPU before anything starts TensorFlow.
    strategy = distribute.resolve(config.strategy)
    with _op_determinism(config):
        return _train(config, strategy, callbacks)


def _train(config: TrainConfig, strategy, callbacks) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    loaded = adapt.load(config.model)  # a .keras path, as the command line gives one
    if loaded is not config.model:
        config = dataclasses.replace(config, model=loaded)
    if config.export and distribute.cluster_workers() == 1:
        _check_writable(config.export)  # before training, not after it
    prepared = data_lib.prepare(
        config.data, target=config.target, task=config.task,
        validation_split=config.validation_split, seed=config.seed, missing=config.missing,
        window=config.window, column_types=config.column_types,
        validation_data=config.validation_data, sample_weight=config.sample_weight,
        class_weight=config.class_weight,
    )
    for line in prepared.spec.notes:  # the DataWarnings have shown themselves
        console.say(line, config.verbose)
    note = adapt.scale_note(config.model, prepared.spec)
    if note:
        console.say(note, config.verbose)
    run = _Run.build(config, strategy, prepared)
    try:
        history = run.fit(callbacks)
    finally:
        run.close()
    note = adapt.copy_back(run.model, config.model)
    if note:
        console.say(note, config.verbose)
    result = TrainResult(
        history=history, model=run.model, export_path=None, logdir=run.writer.path,
        spec=prepared.spec, config=config, strategy=strategy, stats=run.state.get("stats", {}),
    )
    result.export_path = run.state.get("export_path")
    if config.export and run.chief and not _exported_to(result.export_path, config.export):
        try:
            result.export_path = _export(result, prepared, config.export)
        except Exception as err:
            raise ExportError(
                f"training finished but export to {config.export!r} failed: {err}. Nothing "
                "is lost: export the trained model with tfkit.export(err.result, PATH)"
                + (f", or re-run this train() call with run_name={run.name!r} and another "
                   "export= (it resumes the finished run and only exports)"
                   if run.checkpointer else ""),
                result,
            ) from err
        run.record_export(result.export_path)
    return result


class ExportError(RuntimeError):
    """Training finished but the export failed; `result` holds the trained model."""

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


def export(
    source: TrainResult | keras.Model, path: str | os.PathLike = "models", **options: Any
) -> str:
    """Export a trained run (or any keras.Model) as a versioned SavedModel.

    Args:
        source: a `TrainResult` (exported with its data's column names, task
            and class names to `path/<name>/<version>`), or a keras.Model
            (exported to `path/<version>`, with `options` passed to
            `tfkit.export.export_model`: task, class_names, version, example).
        path: the model repository for a result; the model's own folder for a
            keras.Model.

    Returns:
        The version folder written.

    Example:
        >>> tfkit.export(result, "models")  # doctest: +SKIP
        'models/penguins/1'
    """
    if isinstance(source, TrainResult):
        prepared = data_lib.PreparedData(source.spec, None, None, None)
        return _export(source, prepared, path, **options)
    return str(export_model(source, path, **options))


def _export(result: TrainResult, prepared: data_lib.PreparedData, repository, **options) -> str:
    spec = prepared.spec
    base_path = os.path.join(repository, result.config.model_name or spec.name)
    if spec.kind == "text":  # a language model: prompt and length in, text out
        from tfkit.export import export_language_model

        return str(export_language_model(
            result.model, base_path, vocabulary=spec.info["vocabulary"],
            context=spec.info["context"], **options,
        ))
    example = prepared.validation_arrays[0] if prepared.validation_arrays else spec.sample
    return str(export_model(
        result.model, base_path, task=spec.task, class_names=spec.class_names,
        example=_first_rows(example), **options,
    ))


def _exported_to(export_path: str | None, repository: str) -> bool:
    """Whether a finished run already has an export in this repository."""
    if not export_path or not os.path.isdir(export_path):
        return False
    return os.path.commonpath([os.path.abspath(export_path), os.path.abspath(repository)]) == (
        os.path.abspath(repository))


def _check_writable(repository: str) -> None:
    """Fail before training when the export could not be written; creates nothing."""
    path = os.path.abspath(repository)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    problem = None
    if not os.path.isdir(existing):
        problem = f"{existing} is a file, not a folder"
    else:
        try:  # a folder made and removed: permission bits alone do not tell (root, /proc)
            os.rmdir(tempfile.mkdtemp(prefix=".tfkit-write-check-", dir=existing))
        except OSError as err:
            problem = f"{existing} is not writable ({err.strerror or err})"
    if problem:
        raise ValueError(
            f"export={repository!r} cannot be written: {problem}; pass a writable folder, "
            "or export=None to skip the export"
        )


@dataclasses.dataclass
class _Run:
    """Everything one run is made of, built in the right order under the strategy."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    prepared: data_lib.PreparedData
    model: keras.Model
    steps: Steps
    global_batch: int
    steps_per_epoch: int
    chief: bool
    writer: RunWriter
    estimate: memory.MemoryEstimate
    checkpointer: Checkpointer | None
    state: dict[str, Any]
    name: str = ""
    schedule: CosineDecay | None = None  # set by fit; a rollback lowers its base

    @classmethod
    def build(cls, config: TrainConfig, strategy, prepared: data_lib.PreparedData) -> _Run:
        spec = prepared.spec
        replicas = strategy.num_replicas_in_sync
        global_batch = _global_batch(config.batch_size, spec.n_train, replicas)
        loss, metrics = adapt.loss_and_metrics(config.model, config.loss, config.metrics)
        if metrics is not None:
            adapt.check_metrics(metrics, spec.task, spec.output_units)
        defaults = TrainConfig()
        optimizer_given = (config.optimizer, config.learning_rate) != (
            defaults.optimizer, defaults.learning_rate)
        with strategy.scope(), _dtype_policy(config.mixed_precision):
            model = adapt.build(config.model, spec, config.model_kwargs,
                                config.standardize_target)
            optimizer = adapt.compiled_optimizer(config.model, optimizer_given)
            if optimizer is not None:
                console.say(f"optimizer: the compiled model's {type(optimizer).__name__} "
                            f"(learning rate {_learning_rate(optimizer):g}); pass "
                            "optimizer= or learning_rate= to choose another", config.verbose)
            else:
                optimizer = make_optimizer(config.optimizer, config.learning_rate)
            if config.mixed_precision == "mixed_float16":
                # float16 gradients underflow: scale the loss up, the gradients back down.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)  # before the first traced step
            metric_pair = None
            if metrics is not None:
                metric_pair = (adapt.metric_objects(metrics, spec.task),
                               adapt.metric_objects(metrics, spec.task))
        scaled = config.standardize_target and spec.target_scale is not None
        steps = Steps(
            model=model, optimizer=optimizer, task=spec.task, strategy=strategy,
            global_batch_size=global_batch, clip_norm=config.clip_norm,
            jit_compile=config.jit_compile,
            keep_gradients=bool(config.logdir and config.histogram_every_steps),
            loss=loss, metrics=metric_pair, target_scale=spec.target_scale if scaled else None,
        )
        run_name = config.run_name or _default_run_name(spec.name, model.name)
        chief = distribute.is_chief(strategy)
        checkpointer = _checkpointer(
            config, run_name, model, optimizer, chief,
            data_lib.steps_per_epoch(spec.n_train, global_batch),
        )
        state = (checkpointer.restore() if checkpointer else None) or {"step": 0}
        estimate = memory.estimate_memory(model, global_batch // replicas, config.optimizer,
                                          sequence_length=spec.info.get("context"))
        run = cls(
            config=config, strategy=strategy, prepared=prepared, model=model, steps=steps,
            global_batch=global_batch,
            steps_per_epoch=data_lib.steps_per_epoch(spec.n_train, global_batch), chief=chief,
            writer=RunWriter(config.logdir, run_name, chief=chief), estimate=estimate,
            checkpointer=checkpointer, state=state, name=run_name,
        )
        run.describe()
        return run

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    @property
    def already_finished(self) -> bool:
        return bool(self.state.get("history")) and self.state["step"] >= self.total_steps

    def describe(self) -> None:
        spec, config = self.prepared.spec, self.config
        if self.state["step"]:
            console.say(f"resumed from step {self.state['step']} of epoch "
                        f"{self.state['step'] // self.steps_per_epoch + 1} (checkpoint in "
                        f"{self.checkpointer.directory})", config.verbose)
        self.writer.config(config.to_dict())
        self.writer.model_summary(self.model)
        self.writer.hparams({**config.to_dict(), "task": spec.task,
                             "replicas": self.strategy.num_replicas_in_sync})
        log.info(self.estimate.describe())
        console.say(
            f"training {self.model.name} ({self.model.count_params():,} parameters) on "
            f"{spec.name}: {spec.n_train} train / {spec.n_val} validation rows, "
            f"{self.strategy.num_replicas_in_sync} replica(s), global batch {self.global_batch}, "
            f"{self.steps_per_epoch} steps per epoch", config.verbose,
        )
        hint = distribute.onednn_hint(self.model, self.strategy)
        if hint:
            log.info(hint)

    def fit(self, callbacks: list | None) -> dict[str, list[float]]:
        """The loop, from the restored step; rolls back on NaN when asked to."""
        if self.already_finished:
            console.say(f"run {self.name!r} already finished ({self.state['step']} steps); raise "
                        "epochs or pass resume=False to train again", self.config.verbose)
            return loop.Position.from_state(self.state).history
        if self.config.lr_schedule == "cosine":
            self.schedule = CosineDecay(self.steps.optimizer, self.config.learning_rate,
                                        self.config.epochs)
        reset_metrics = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.steps.reset_metrics())
        callback_list = keras.callbacks.CallbackList(
            [reset_metrics] + _callbacks(self.config, callbacks)
            + ([self.schedule] if self.schedule else []),
            add_history=False, add_progbar=False,
            model=self.model, epochs=self.config.epochs, steps=self.steps_per_epoch,
        )
        monitor = Monitor(self.writer, self.steps, log_every_steps=self.config.log_every_steps,
                          histogram_every_steps=self.config.histogram_every_steps,
                          steps_per_epoch=self.steps_per_epoch,
                          synchronized=self.workers > 1)
        restores = 0
        while True:
            position = loop.Position.from_state(self.state)
            try:
                with StopRequests() as stop:
                    history = loop.run(
                        steps=self.steps, iterator=self._iterator(position.step),
                        validation=self._validation(), steps_per_epoch=self.steps_per_epoch,
                        epochs=self.config.epochs, position=position,
                        hooks=loop.Hooks(monitor, callback_list, self.writer,
                                         self.checkpointer, stop),
                        steps_per_execution=self._steps_per_execution(),
                        profile=self.config.profile, verbose=self.config.verbose,
                    )
                self.state["stats"] = position.stats
                return history
            except tf.errors.ResourceExhaustedError as err:
                raise memory.OutOfMemoryError(
                    memory.out_of_memory_message(self.estimate, err)
                ) from None
            except NonFiniteLossError:
                if self.config.on_nan != "restore" or restores >= self.config.max_nan_restores:
                    raise
                restores += 1
                self._roll_back(restores)

    @property
    def workers(self) -> int:
        return distribute.workers(self.strategy)

    def _steps_per_execution(self) -> int | None:
        if self.config.steps_per_execution or self.workers == 1:
            return self.config.steps_per_execution
        # Workers cannot each size their calls by their own clock: every call must
        # line up with its peers'. A fixed size, as Keras's steps_per_execution.
        return min(self.steps_per_epoch, MULTI_WORKER_STEPS_PER_CALL)

    def _roll_back(self, restores: int) -> None:
        """Each retry goes one checkpoint further back at half the previous learning rate;
        the last retry starts over from the initial weights."""
        last_try = restores == self.config.max_nan_restores
        back = None if last_try else restores - 1
        restored = self.checkpointer.restore(back=back) if self.checkpointer else None
        if restored is None:
            raise NonFiniteLossError("the loss became non-finite and there is no checkpoint "
                                     "to roll back to (set logdir or checkpoint_dir)")
        self.state = restored
        lr = self.config.learning_rate / 2**restores
        self.steps.optimizer.learning_rate.assign(lr)
        if self.schedule:
            self.schedule.base = lr
        log.warning("non-finite loss: rolled back to step %d with learning rate %g "
                    "(restore %d of %d)", restored["step"], lr, restores,
                    self.config.max_nan_restores)

    def _iterator(self, start_step: int) -> Any:
        spec, tensors = self.prepared.spec, self.prepared.train_tensors
        in_memory = None if tensors is None else functools.partial(
            data_lib.GatheredBatches, tensors, n_train=spec.n_train,
            global_batch_size=self.global_batch, seed=self.config.seed, start_step=start_step,
        )
        return distribute.iterate(data_lib.train_input_fn(
            self.prepared.train, n_train=spec.n_train, global_batch_size=self.global_batch,
            seed=self.config.seed, epochs=self.config.epochs, start_step=start_step,
            tensors=tensors,
        ), self.strategy, in_memory)

    def _validation(self) -> Any:
        if self.prepared.validation is None:
            return None
        return self.strategy.distribute_datasets_from_function(
            data_lib.eval_input_fn(self.prepared.validation, global_batch_size=self.global_batch)
        )

    def record_export(self, path: str) -> None:
        """Remember the export beside the last checkpoint, so a re-run can report it."""
        if self.checkpointer and self.chief:
            self.checkpointer.annotate({"export_path": path})

    def close(self) -> None:
        self.writer.close()
        if self.checkpointer:
            self.checkpointer.close()


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name: adam, adamw, sgd (momentum 0.9) or rmsprop."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
            "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)


@contextlib.contextmanager
def _dtype_policy(name: str | None):
    """Build layers under a mixed-precision policy, then put the old one back."""
    previous = keras.config.dtype_policy()
    if name:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def _op_determinism(config: TrainConfig):
    """Op determinism for the run (by default on a CPU), then the process's own setting back.

    The setting is process-wide: left on after the run, it would go on forcing
    every later tf.data pipeline and model of the process to be deterministic,
    which the user did not ask for.
    """
    deterministic = config.deterministic
    if deterministic is None:  # exact resume and repeatable runs cost little on a CPU
        deterministic = not tf.config.list_physical_devices("GPU")
    already = _compat.op_determinism_enabled()
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if deterministic and not already:
            _compat.disable_op_determinism()


def _checkpointer(
    config, run_name, model, optimizer, chief, steps_per_epoch
) -> Checkpointer | None:
    directory = config.checkpoint_dir
    if directory is None and config.logdir:
        directory = os.path.join(config.logdir, run_name, "checkpoints")
    if directory is None:
        return None
    if not config.resume and chief:
        checkpoints.clear(directory)
    single = distribute.cluster_workers() == 1
    every_steps = config.checkpoint_every_steps
    if every_steps is None:
        every_steps = float("inf") if single else steps_per_epoch
    return Checkpointer(
        directory, model=model, optimizer=optimizer, chief=chief, every_steps=every_steps,
        # Workers must save at the same steps: a clock would not agree across machines.
        every_seconds=config.checkpoint_every_seconds if single else float("inf"),
        keep=config.keep_checkpoints, keep_initial=config.on_nan == "restore",
    )


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


def _callbacks(config: TrainConfig, callbacks) -> list[keras.callbacks.Callback]:
    out = list(callbacks or [])
    if config.early_stopping_patience:
        out.append(keras.callbacks.EarlyStopping(
            monitor="val_loss" if config.validation_split else "loss",
            patience=config.early_stopping_patience, restore_best_weights=True,
        ))
    return out


def _default_run_name(dataset: str, model: str) -> str:
    if distribute.cluster_workers() > 1:
        # Every worker must name the same run (they share its checkpoints), and a
        # restarted job should resume it: no timestamp.
        return f"{dataset}-{model}"
    return f"{dataset}-{model}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _first_rows(example: Any, n: int = 8) -> Any:
    if example is None:
        return None
    if isinstance(example, dict):
        return {k: v[:n] for k, v in example.items()}
    return example[:n]
