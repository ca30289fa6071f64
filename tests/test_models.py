"""Model builders: names, shapes from the data spec, refusals."""

import re
import warnings

import keras
import numpy as np
import pandas as pd
import pytest

from tfkit import data, datasets, models


def test_available_lists_builders():
    assert models.available() == [
        "cnn", "conv1d", "gru", "linear_regression", "logistic_regression", "lstm", "mlp",
        "resnet", "transformer",
    ]


@pytest.mark.parametrize(
    ("source", "builder", "outputs"),
    [
        ("penguins", "mlp", 3),
        ("penguins", "logistic_regression", 3),
        ("auto_mpg", "mlp", 1),
        ("auto_mpg", "linear_regression", 1),
        ("digits", "cnn", 10),
    ],
)
def test_builders_fit_the_spec(source, builder, outputs):
    spec = data.prepare(source).spec
    model = models.build(builder, spec)
    assert model.output_shape[-1] == outputs
    if spec.kind == "table":  # raw named columns in, preprocessing inside
        assert sorted(t.name for t in model.inputs) == sorted(spec.columns)


def test_unknown_builder_lists_the_names():
    spec = data.prepare(datasets.make_linear(50)).spec
    with pytest.raises(ValueError, match="unknown model 'resnet9000';.* the builders are: cnn, "):
        models.build("resnet9000", spec)


@pytest.mark.parametrize(("typo", "meant"), [("mpl", "mlp"), ("linear", "linear_regression"),
                                             ("ressnet", "resnet")])
def test_unknown_builder_suggests_the_close_name(typo, meant):
    spec = data.prepare(datasets.make_linear(50)).spec
    with pytest.raises(ValueError, match=f"did you mean '{meant}'\\?"):
        models.build(typo, spec)


def test_unknown_builder_far_from_any_name_suggests_nothing():
    spec = data.prepare(datasets.make_linear(50)).spec
    with pytest.raises(ValueError) as caught:
        models.build("zzzzzz", spec)
    assert "did you mean" not in str(caught.value)


MESSY_COLUMNS = ["Lot Area", "price/sqft", "a.b", "why?", "$cost", "(x)", "größe", "面积",
                 "1st floor", "a b", "a_b", "."]


@pytest.fixture(scope="module")
def messy_spec():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({c: rng.normal(size=40) for c in MESSY_COLUMNS})
    frame["kind (text)"] = rng.choice(["red", "blue"], size=40)
    frame["y"] = frame["Lot Area"] * 2.0
    return data.prepare(frame, target="y").spec


def test_table_inputs_keyed_by_the_original_names_with_valid_unique_layer_names(messy_spec):
    inputs = models.table_inputs(messy_spec)
    assert list(inputs) == [*MESSY_COLUMNS, "kind (text)"]
    names = [t.name for t in inputs.values()]
    assert len(set(names)) == len(names)
    for name in names:  # a TensorFlow scope name that Keras accepts (no "/")
        assert re.fullmatch(r"[A-Za-z0-9.][A-Za-z0-9_.\-]*", name), name
    assert inputs["kind (text)"].dtype == "string"
    assert inputs["Lot Area"].dtype == "float32"


def test_table_inputs_names_stay_readable(messy_spec):
    names = {c: t.name for c, t in models.table_inputs(messy_spec).items()}
    assert names["Lot Area"] == "Lot_Area"
    assert names["price/sqft"] == "price_sqft"
    assert names["1st floor"] == "1st_floor"
    assert names["größe"] == "grosse"
    # "a_b" is valid as written and keeps its name; "a b" cleans to it and moves aside.
    assert names["a_b"] == "a_b"
    assert names["a b"] == "a_b_2"


@pytest.mark.parametrize("builder", ["mlp", "linear_regression"])
def test_builder_takes_messy_column_names_quietly(messy_spec, builder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = models.build(builder, messy_spec)
    assert "normalize_Lot_Area" in [layer.name for layer in model.layers]
    rows = {c: np.ones((2, 1), "float32") for c in messy_spec.numeric_columns}
    rows["kind (text)"] = np.array([["red"], ["blue"]])
    assert model(rows).shape == (2, 1)


@pytest.mark.parametrize("builder", ["mlp", "linear_regression"])
@pytest.mark.parametrize("column", ["prediction", "dense_0", "normalize_x"])
def test_a_column_named_like_a_builder_layer_builds(builder, column):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({column: rng.normal(size=40), "x": rng.normal(size=40)})
    frame["y"] = frame[column] * 2.0
    spec = data.prepare(frame, target="y").spec
    model = models.build(builder, spec)
    assert list(model.input) == [column, "x"]
    assert model.input[column].name == f"column_{column}"


@pytest.mark.parametrize(
    ("builder", "source", "message"),
    [
        ("linear_regression", "penguins", "predicts a number"),
        ("logistic_regression", "auto_mpg", "predicts classes"),
        ("cnn", "penguins", "needs images"),
    ],
)
def test_builder_refuses_a_task_it_cannot_do(builder, source, message):
    with pytest.raises(ValueError, match=message):
        models.build(builder, data.prepare(source).spec)


def test_callable_and_ready_model():
    spec = data.prepare(datasets.make_linear(50)).spec
    ready = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    assert models.build(ready, spec) is ready
    built = models.build(lambda s: keras.Sequential([keras.Input(s.input_shape),
                                                     keras.layers.Dense(2)]), spec)
    assert built.output_shape == (None, 2)
    with pytest.raises(ValueError, match="must return a keras.Model"):
        models.build(lambda s: np.zeros(3), spec)
