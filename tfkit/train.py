"""`tfkit.train()`: data → model → the custom loop under a strategy → logs → export."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit import _compat, adapt, console, distribute
from tfkit import data as data_lib
from tfkit.config import TrainConfig
from tfkit.export import export_model
from tfkit.run import Run

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
            features: for a table, a DataFrame, a dict of column values, a
                list of row dicts (as the server's "instances") or a CSV path
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
        batches = data_lib.row_batches(inputs, batch_size)
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
    run = Run.build(config, strategy, prepared)
    try:
        history = run.fit(callbacks)
    finally:
        run.close()
    note = adapt.copy_back(run.model, config.model)
    if note:
        console.say(note, config.verbose)
    result = TrainResult(
        history=history, model=run.model, logdir=run.writer.path,
        spec=prepared.spec, config=config, strategy=strategy, stats=run.state.stats,
        export_path=run.state.export_path,
    )
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


def _first_rows(example: Any, n: int = 8) -> Any:
    if example is None:
        return None
    if isinstance(example, dict):
        return {k: v[:n] for k, v in example.items()}
    return example[:n]
