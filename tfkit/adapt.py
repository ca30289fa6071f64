"""Any model the user gives, made ready for the run: in the strategy, on the data, in y's units.

`tfkit.train(model=...)` takes a builder name, a callable(spec) or any ready
`keras.Model` — Sequential, functional or subclassed, built or not, compiled
or not. A model built before `train()` holds variables made outside the
strategy's scope, which a strategy cannot use (its optimizer slots fail with
"colocate_vars_with ... created in scope: None"), so a copy is made inside the
scope and the trained weights are copied back afterwards. A compiled model
brings its loss and metrics when `train()` is given none.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfkit import _compat, models
from tfkit.data import DataSpec

TARGET_UNITS_LAYER = "in_target_units"
PROBE_ROWS = 8  # rows a model of the user's is called on to check what it answers


def load(given: Any) -> Any:
    """A saved Keras model (`model="my_model.keras"`, as from the command line) loaded.

    Anything else is returned as it is.

    Raises:
        ValueError: the file is missing or is not a Keras model.
    """
    if not (isinstance(given, str) and given.endswith(".keras")):
        return given
    if not os.path.isfile(given):
        raise ValueError(f"model {given!r}: no such file (a saved Keras model, model.save(...))")
    try:
        with models.column_keyed_inputs():
            return keras.saving.load_model(given)
    except Exception as err:  # noqa: BLE001 - any failure: the file is not a model we can use
        raise ValueError(f"model {given!r} could not be loaded as a Keras model: {err}") from None


def build(given: Any, spec: DataSpec, model_kwargs: dict, standardize_target: bool) -> keras.Model:
    """The model to train, made under the current strategy's scope.

    Raises:
        ValueError: the model cannot take the data, or cannot be copied into the
            strategy's scope; the message says what to pass instead.
    """
    if isinstance(given, keras.Model):
        if model_kwargs:
            raise ValueError(
                f"model_kwargs {sorted(model_kwargs)} are for a builder name or callable; "
                "a ready keras.Model takes none"
            )
        model = _in_scope(given, spec)
    else:
        model = models.build(given, spec, **model_kwargs)
    model = _on_the_data(model, spec)
    if standardize_target and spec.target_scale is not None:
        model = _in_target_units(model, spec)
    return model


def scale_note(given: Any, spec: DataSpec) -> str | None:
    """A note when a model of the user's gets large raw numbers (the builders normalize)."""
    if not isinstance(given, keras.Model) or spec.kind not in ("table", "tensor"):
        return None
    scaling = (keras.layers.Normalization, keras.layers.Rescaling, keras.layers.BatchNormalization,
               keras.layers.LayerNormalization)
    if any(isinstance(layer, scaling) for layer in _all_layers(given)):
        return None
    if spec.kind == "table":
        columns = {c: np.asarray(spec.sample[c], np.float64) for c in spec.numeric_columns}
    else:
        flat = np.asarray(spec.sample, np.float64).reshape(len(spec.sample), -1)
        columns = {f"feature {i}": flat[:, i] for i in range(flat.shape[1])}
    sizes = {c: float(np.abs(v).mean() + v.std()) for c, v in columns.items() if v.size}
    if not sizes or max(sizes.values()) <= 10:
        return None
    largest = max(sizes, key=sizes.get)
    return (f"note: your model gets the numbers as they are, e.g. {largest!r} around "
            f"{sizes[largest]:,.0f}; tfkit's builders normalize them inside the model, so "
            "give yours a keras.layers.Normalization (or scale the columns) if it learns slowly")


def check_answer(model: keras.Model, given: Any, spec: DataSpec, loss: Any) -> str | None:
    """Checks what a model of the user's answers for a few sample rows, before training.

    Its answer per row must fit the task as tfkit learns and scores it: one
    value for a regression or binary task, one per class (a spare unit would
    train, but has no class name to export). A classifier that answers what
    are not probabilities (no softmax or sigmoid) under tfkit's own loss,
    which takes probabilities, learns little and gets a note. tfkit's
    builders fit the task and are not called again.

    Returns:
        The note for the user, or None.

    Raises:
        ValueError: the answer's width does not fit; the message names the last
            layer the task needs.
    """
    if isinstance(given, str) or spec.task not in ("binary", "multiclass", "regression"):
        return None
    rows = tf.nest.map_structure(lambda values: np.asarray(values)[:PROBE_ROWS], spec.sample)
    answer = model(rows, training=False)
    if not hasattr(answer, "shape") or len(answer.shape) < 2 or answer.shape[-1] is None:
        return None  # several outputs, or one value a row without a last axis: Keras checks those
    if answer.shape[-1] != spec.output_units:
        raise ValueError(_width_error(model, tuple(answer.shape), spec))
    if loss is not None or spec.task == "regression":
        return None
    values = np.asarray(keras.ops.convert_to_numpy(answer), np.float64)
    probabilities = bool(np.all((values >= 0) & (values <= 1)))
    if spec.task == "multiclass":
        probabilities = probabilities and np.allclose(values.sum(axis=-1), 1, atol=1e-3)
    if probabilities:
        return None
    last, loss_name = (("softmax", "SparseCategoricalCrossentropy") if spec.task == "multiclass"
                       else ("sigmoid", "BinaryCrossentropy"))
    return (f"note: model {model.name!r} answers values such as {values[0, 0]:.3g}, which are "
            f"not probabilities; tfkit's loss for a {spec.task} task takes probabilities, so "
            f"end the model with activation={last!r}, or pass "
            f"loss=keras.losses.{loss_name}(from_logits=True)")


def _width_error(model: keras.Model, shape: tuple, spec: DataSpec) -> str:
    if spec.task == "multiclass":
        needs = (f"{spec.output_units} (a final Dense({spec.output_units}, "
                 "activation=\"softmax\"), a probability for each class: "
                 + ", ".join(spec.class_names[:10]) + ")")
    elif spec.task == "binary":
        needs = ("1 (a final Dense(1, activation=\"sigmoid\"): the probability of "
                 f"{spec.class_names[1]!r} against {spec.class_names[0]!r})")
    else:
        needs = "1 (a final Dense(1))"
    other = ('task="multiclass" for two softmax units' if spec.task == "binary"
             and shape[-1] == 2 else "task= if the task was read wrongly")
    return (f"model {model.name!r} answers {shape[-1]} value(s) per row (output shape "
            f"{(None, *shape[1:])}), but the task is {spec.task}, which needs {needs}; "
            f"change its last layer, or pass {other}")


def copy_back(trained: keras.Model, given: Any) -> str | None:
    """Put the trained weights into the user's own model object, as `model.fit` would.

    Returns a note for the user when the object is left as it was: a model
    that learned a standardized target would answer in standard units.
    """
    if not isinstance(given, keras.Model) or trained is given:
        return None
    if _layer(trained, TARGET_UNITS_LAYER) is not None:
        shared = {id(v) for v in given.weights} & {id(v) for v in trained.weights}
        state = ("holds the trained weights but answers in them" if shared
                 else "is left as it was, since it would answer in them")
        return (f"model {given.name!r} learned the target in standard units and {state}; "
                "result.model (which the export holds) scales its answers back to the "
                "target's units: use result.model, or standardize_target=False")
    if not given.weights:
        return None  # never built: nothing of the user's holds weights
    weights = trained.get_weights()
    if [w.shape for w in weights] == [tuple(v.shape) for v in given.weights]:
        given.set_weights(weights)
    return None


def loss_and_metrics(given: Any, loss: Any, metrics: Any) -> tuple[Any, Any]:
    """`loss=`/`metrics=` as given, else a compiled model's, else None (the task's)."""
    if isinstance(given, keras.Model) and given.compiled:
        compiled = given.get_compile_config() or {}
        loss = compiled.get("loss") if loss is None else loss
        metrics = compiled.get("metrics") if metrics is None else metrics
    return loss, metrics


def compiled_optimizer(given: Any, optimizer_given: bool) -> keras.optimizers.Optimizer | None:
    """A fresh copy of a compiled model's optimizer, when `train()` was not told one."""
    if optimizer_given or not (isinstance(given, keras.Model) and given.compiled):
        return None
    config = (given.get_compile_config() or {}).get("optimizer")
    return keras.optimizers.get(config) if config else None


def check_metrics(metrics: Any, task: str, units: int) -> None:
    """Each metric tried once on a made-up batch shaped as this task's, before training.

    Raises:
        ValueError: naming the metric that cannot take this task's labels and outputs.
    """
    labels = np.array([0, 1]) if task == "multiclass" else np.array([[0.0], [1.0]])
    outputs = np.full((2, units), 1.0 / units, np.float32)
    for given, metric in zip(_listed(metrics), metric_objects(metrics, task) or (), strict=True):
        try:
            metric.update_state(labels, outputs)
            metric.result()
        except Exception as err:  # noqa: BLE001 - any failure: this metric does not fit
            kind = {"multiclass": "integer class ids with one probability per class",
                    "binary": "0/1 labels with one probability",
                    "regression": "one number per row"}[task]
            raise ValueError(
                f"metrics: {getattr(given, 'name', given)!r} does not work for this {task} "
                f"task ({kind}): {str(err).splitlines()[0][:200]}"
            ) from None


def _listed(metrics: Any) -> list:
    if isinstance(metrics, (str, dict, keras.metrics.Metric)) or callable(metrics):
        return [metrics]
    return list(metrics)


def metric_objects(metrics: Any, task: str) -> list[keras.metrics.Metric] | None:
    """Fresh Keras metric objects (make them in the strategy's scope); None: the task's own.

    "accuracy" means the task's accuracy (sparse categorical or binary), as in
    `model.compile`; a metric object is copied from its config, so the one
    given is left untouched and training and validation keep separate states.

    Example:
        >>> [m.name for m in metric_objects(["mae", "mse"], "regression")]
        ['mae', 'mse']
    """
    if metrics is None:
        return None
    return [_metric(m, task) for m in _listed(metrics)]


def _metric(given: Any, task: str) -> keras.metrics.Metric:
    if given in ("accuracy", "acc"):
        if task == "regression":
            raise ValueError("metrics: 'accuracy' needs classes, but the task is regression; "
                             "use e.g. 'mae', 'mse' or 'root_mean_squared_error'")
        kind = (keras.metrics.SparseCategoricalAccuracy if task == "multiclass"
                else keras.metrics.BinaryAccuracy)
        return kind(name=given)
    if isinstance(given, keras.metrics.Metric):
        return given.__class__.from_config(given.get_config())
    try:
        found = keras.metrics.get(given)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"metrics: {given!r} is not a Keras metric; use a name such as 'accuracy', 'mae', "
            f"'mse', 'auc', a keras.metrics.Metric or a function(y_true, y_pred) ({err})"
        ) from None
    name = given if isinstance(given, str) else getattr(found, "name", None)
    if isinstance(found, keras.metrics.Metric):
        return found.__class__.from_config({**found.get_config(), "name": name or found.name})
    return keras.metrics.MeanMetricWrapper(found, name=name or found.__name__)


def _in_scope(model: keras.Model, spec: DataSpec) -> keras.Model:
    """The model itself when it has no variables yet, else a copy made in this scope."""
    if not model.weights:
        return model  # unbuilt: its variables are made in this scope when it is built
    try:
        copy = _clone(model)
        if not copy.weights:
            _build(copy, spec)
        copy.set_weights(model.get_weights())
        for layer in _all_layers(copy):
            if hasattr(layer, "finalize_state"):  # e.g. an adapted Normalization's mean
                layer.finalize_state()
    except Exception as err:  # noqa: BLE001 - any failure means the same advice
        raise ValueError(
            f"model {model.name!r} was built before train(), so its variables live outside "
            f"the training strategy, and it could not be copied into it ({err}). Pass it "
            "unbuilt (before calling it on data), or pass a function that builds it: "
            "model=lambda spec: MyModel()"
        ) from None
    return copy


def _clone(model: keras.Model) -> keras.Model:
    """A copy of `model`, its lookup layers holding the vocabularies they adapted.

    A vocabulary (StringLookup, IntegerLookup, TextVectorization) is a table,
    not a weight: `set_weights` cannot carry it, and a one-hot lookup's output
    width depends on it, so it goes into each layer's config as it is made.
    """
    if isinstance(model, keras.Sequential) or _compat.is_functional(model):
        copy = keras.models.clone_model(model, clone_function=_with_vocabulary, recursive=True)
    else:
        # Subclassed: made from its config as clone_model makes it, but left unbuilt, so
        # that each lookup takes its vocabulary before its first call.
        config = keras.saving.serialize_keras_object(model)
        config.pop("build_config", None)
        copy = keras.saving.deserialize_keras_object(
            config, custom_objects={type(model).__name__: type(model)})
        for given, made in zip(_all_layers(model), _all_layers(copy), strict=False):
            if _is_lookup(given) and _is_lookup(made) and _vocabulary(given):
                made.set_vocabulary(_vocabulary(given))
    given, made = ([_vocabulary(layer) for layer in _compat.all_layers(m) if _is_lookup(layer)]
                   for m in (model, copy))
    if given != made:  # a lookup the walk above cannot reach (inside a layer of the user's)
        raise ValueError("a lookup layer's vocabulary was not carried into the copy")
    return copy


def _with_vocabulary(layer: Any) -> Any:
    config = layer.get_config()
    if _is_lookup(layer) and _vocabulary(layer):
        config["vocabulary"] = _vocabulary(layer)
    return layer.__class__.from_config(config)


def _is_lookup(layer: Any) -> bool:
    return isinstance(layer, (keras.layers.StringLookup, keras.layers.IntegerLookup,
                              keras.layers.TextVectorization))


def _vocabulary(layer: Any) -> list:
    """The tokens the layer learned (its special tokens left out), as Python values."""
    return [token.item() if isinstance(token, np.generic) else token
            for token in layer.get_vocabulary(include_special_tokens=False)]


def _on_the_data(model: keras.Model, spec: DataSpec) -> keras.Model:
    """The model built, taking the data as tfkit feeds it (a dict of columns for a table).

    A table's model takes its raw named columns. A model with one declared
    input `[None, k]`, or a Sequential without an Input, gets the table's k
    numeric columns stacked in order.
    """
    declared = _declared_input(model)
    if spec.kind == "table" and isinstance(declared, dict):
        _check_columns(model, sorted(declared), spec)
    if spec.kind == "table" and isinstance(declared, (list, tuple)):
        raise ValueError(
            f"model {model.name!r} takes a list of {len(declared)} inputs; a table's model "
            "takes a dict of its columns ({column: keras.Input(shape=(1,), name=column)}) "
            "or one input [None, k] fed the number columns in order")
    if spec.kind == "table" and declared is not None and not isinstance(declared, dict):
        return _stacked_columns(model, spec, declared.shape[-1])
    if spec.kind == "table" and declared is None and isinstance(model, keras.Sequential):
        return _stacked_columns(model, spec, None)  # a Sequential takes one tensor, never a dict
    if not model.built or not model.weights:
        _build(model, spec)
    return model


def _check_columns(model: keras.Model, takes: list[str], spec: DataSpec) -> None:
    """Refuses a model of named inputs that are not the table's columns, one for one."""
    lacking = [c for c in takes if c not in spec.columns]
    unused = [c for c in spec.columns if c not in takes]
    if lacking:
        raise ValueError(
            f"model {model.name!r} takes the column(s) {', '.join(map(repr, lacking))}, which "
            f"the table lacks; its columns (the target {spec.target!r} aside) are: "
            + ", ".join(map(repr, spec.columns)))
    if unused:
        raise ValueError(
            f"model {model.name!r} takes the columns {', '.join(map(repr, takes))}, but the "
            f"table also has {', '.join(map(repr, unused))}: drop those from the table "
            f"(table.drop(columns={unused!r})) or give the model an input for each")


def _declared_input(model: keras.Model) -> Any:
    """The model's input structure, or None when it takes whatever it is given."""
    try:
        return model.input  # functional
    except (AttributeError, ValueError):
        pass
    try:
        inputs = model.inputs  # a Sequential that starts with a keras.Input
    except (AttributeError, ValueError):
        return None  # subclassed, or a Sequential without an Input
    return inputs[0] if inputs and len(inputs) == 1 else None


def _stacked_columns(model: keras.Model, spec: DataSpec, width: int | None) -> keras.Model:
    """The table's number columns stacked, in order, into the one input the model takes."""
    if spec.string_columns or width not in (None, len(spec.numeric_columns)):
        takes = f"[None, {width}]" if width else "one input, not a dict of columns"
        raise ValueError(
            f"model {model.name!r} takes {takes}, but the "
            f"table has {len(spec.numeric_columns)} numeric column(s)"
            + (f" and text column(s) {', '.join(map(repr, spec.string_columns))}"
               if spec.string_columns else "")
            + "; give it an input per column (a dict of keras.Input(shape=(1,), name=column)) "
            "or pass model='mlp'"
        )
    inputs = models.table_inputs(spec)
    stacked = keras.layers.Concatenate(name="columns")([inputs[c] for c in spec.numeric_columns])
    return models.functional(inputs, model(stacked), name=model.name)


def _build(model: keras.Model, spec: DataSpec) -> None:
    """Call the model on two sample rows, so its variables are made here and now."""
    rows = tf.nest.map_structure(lambda values: np.asarray(values)[:2], spec.sample)
    model(rows, training=False)


def _in_target_units(model: keras.Model, spec: DataSpec) -> keras.Model:
    """The model's answer scaled back from standard units: prediction * std + mean."""
    mean, std = spec.target_scale
    to_units = keras.layers.Rescaling(std, offset=mean, name=TARGET_UNITS_LAYER, dtype="float32")
    declared = _declared_input(model)
    if declared is not None and len(model.outputs) == 1:  # functional: stay one flat graph
        return models.functional(declared, to_units(model.outputs[0]), name=model.name)
    inputs = (models.table_inputs(spec) if spec.kind == "table"
              else keras.Input(shape=spec.input_shape, name="x"))
    return models.functional(inputs, to_units(model(inputs)), name=model.name)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _layer(model: keras.Model, name: str) -> Any:
    return next((layer for layer in model.layers if layer.name == name), None)
