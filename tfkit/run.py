"""One run, built in the right order under the strategy: model, optimizer, steps, hooks."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from typing import Any

import keras
import tensorflow as tf

from tfkit import adapt, checkpoints, console, distribute, loop, memory, optimizers, options
from tfkit import data as data_lib
from tfkit.callbacks import CheckpointSaver, EpochReport, NanGuard
from tfkit.checkpoints import Checkpointer, NonFiniteLossError
from tfkit.config import TrainConfig
from tfkit.monitor import Monitor
from tfkit.options import StepOptions
from tfkit.schedules import EpochCosineDecay
from tfkit.state import TrainState
from tfkit.steps import Steps
from tfkit.summaries import RunWriter

log = logging.getLogger(__name__)

MULTI_WORKER_STEPS_PER_CALL = 32


@dataclasses.dataclass
class Run:
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
    state: TrainState
    name: str = ""
    schedule: EpochCosineDecay | None = None  # set by fit; a rollback lowers its base

    @classmethod
    def build(cls, config: TrainConfig, strategy, prepared: data_lib.PreparedData) -> Run:
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
            note = adapt.check_answer(model, config.model, spec, loss)
            if note:
                console.say(note, config.verbose)
            optimizer = adapt.compiled_optimizer(config.model, optimizer_given)
            if optimizer is not None:
                console.say(f"optimizer: the compiled model's {type(optimizer).__name__} "
                            f"(learning rate {_learning_rate(optimizer):g}); pass "
                            "optimizer= or learning_rate= to choose another", config.verbose)
            else:
                optimizer = optimizers.make(config.optimizer, config.learning_rate)
            if config.mixed_precision == "mixed_float16":
                # float16 gradients underflow: scale the loss up, the gradients back down.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            metric_pair = None
            if metrics is not None:
                metric_pair = (adapt.metric_objects(metrics, spec.task),
                               adapt.metric_objects(metrics, spec.task))
        scaled = config.standardize_target and spec.target_scale is not None
        steps = Steps(
            model=model, optimizer=optimizer, task=spec.task, strategy=strategy,
            global_batch_size=global_batch, clip_norm=config.clip_norm,
            options=StepOptions(
                steps_per_call=_steps_per_call(config, strategy, global_batch, spec.n_train),
                in_memory_input=config.in_memory_input,
                keep_gradients=bool(config.logdir and config.histogram_every_steps),
                fused_update=config.fused_update, jit_compile=config.jit_compile),
            loss=loss, metrics=metric_pair, target_scale=spec.target_scale if scaled else None,
        )
        optimizer = steps.optimizer
        run_name = config.run_name or _default_run_name(spec.name, model.name)
        chief = distribute.is_chief(strategy)
        checkpointer = _checkpointer(
            config, run_name, model, optimizer, chief,
            data_lib.steps_per_epoch(spec.n_train, global_batch),
        )
        state = TrainState.from_saved(checkpointer.restore() if checkpointer else None)
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
        return bool(self.state.history) and self.state.step >= self.total_steps

    def describe(self) -> None:
        spec, config = self.prepared.spec, self.config
        if self.state.step:
            console.say(f"resumed from step {self.state.step} of epoch "
                        f"{self.state.step // self.steps_per_epoch + 1} (checkpoint in "
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
            console.say(f"run {self.name!r} already finished ({self.state.step} steps); raise "
                        "epochs or pass resume=False to train again", self.config.verbose)
            return self.state.history
        if self.config.lr_schedule == "cosine":
            self.schedule = EpochCosineDecay(self.steps.optimizer, self.config.learning_rate,
                                             self.config.epochs)
        restores = 0
        while True:
            try:
                return loop.run(
                    steps=self.steps, iterator=self._iterator(self.state.step),
                    validation=self._validation(), state=self.state,
                    callbacks=self._callback_list(callbacks), epochs=self.config.epochs,
                    steps_per_epoch=self.steps_per_epoch,
                    steps_per_call=self.steps.options.steps_per_call,
                )
            except tf.errors.ResourceExhaustedError as err:
                raise memory.OutOfMemoryError(
                    memory.out_of_memory_message(self.estimate, err)
                ) from None
            except NonFiniteLossError:
                if self.config.on_nan != "restore" or restores >= self.config.max_nan_restores:
                    raise
                restores += 1
                self._roll_back(restores)

    def _callback_list(self, given: list | None) -> keras.callbacks.CallbackList:
        """Every hook of the run, in the order they act at each call and epoch."""
        config, state, per_epoch = self.config, self.state, self.steps_per_epoch
        reset_metrics = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self.steps.reset_metrics())
        monitor = Monitor(self.writer, self.steps, state, log_every_steps=config.log_every_steps,
                          histogram_every_steps=config.histogram_every_steps,
                          steps_per_epoch=per_epoch, synchronized=self.workers > 1,
                          profile=config.profile)
        return keras.callbacks.CallbackList(
            [NanGuard(state, steps_per_epoch=per_epoch), reset_metrics,
             *_callbacks(config, given), *([self.schedule] if self.schedule else []), monitor,
             EpochReport(state, epochs=config.epochs, steps_per_epoch=per_epoch,
                         verbose=config.verbose),
             CheckpointSaver(self.checkpointer, state, steps_per_epoch=per_epoch,
                             epochs=config.epochs)],
            add_history=False, add_progbar=False,  # EpochReport is the progress line
            model=self.model, epochs=config.epochs, steps=per_epoch,
        )

    @property
    def workers(self) -> int:
        return distribute.workers(self.strategy)

    def _roll_back(self, restores: int) -> None:
        """Each retry goes one checkpoint further back at half the previous learning rate;
        the last retry starts over from the initial weights."""
        last_try = restores == self.config.max_nan_restores
        back = None if last_try else restores - 1
        restored = self.checkpointer.restore(back=back) if self.checkpointer else None
        if restored is None:
            raise NonFiniteLossError("the loss became non-finite and there is no checkpoint "
                                     "to roll back to (set logdir or checkpoint_dir)")
        self.state = TrainState.from_saved(restored)
        lr = self.config.learning_rate / 2**restores
        self.steps.optimizer.learning_rate.assign(lr)
        if self.schedule:
            self.schedule.base = lr
        log.warning("non-finite loss: rolled back to step %d with learning rate %g "
                    "(restore %d of %d)", self.state.step, lr, restores,
                    self.config.max_nan_restores)

    def _iterator(self, start_step: int) -> Any:
        return options.train_iterator(
            self.prepared, strategy=self.strategy, global_batch=self.global_batch,
            seed=self.config.seed, epochs=self.config.epochs, start_step=start_step,
            in_memory_input=self.config.in_memory_input)

    def _validation(self) -> Any:
        if self.prepared.validation is None:
            return None
        return distribute.batches_for_replicas(data_lib.eval_input_fn(
            self.prepared.validation, global_batch_size=self.global_batch), self.strategy)

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


def _steps_per_call(config: TrainConfig, strategy, global_batch: int, n_train: int) -> int | None:
    if config.steps_per_execution or distribute.workers(strategy) == 1:
        return config.steps_per_execution
    # Workers cannot each size their calls by their own clock: every call must
    # line up with its peers'. A fixed size, as Keras's steps_per_execution.
    return min(data_lib.steps_per_epoch(n_train, global_batch), MULTI_WORKER_STEPS_PER_CALL)
