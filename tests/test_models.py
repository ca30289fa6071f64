"""Model builders: names, shapes from the data spec, refusals."""

import keras
import numpy as np
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
    with pytest.raises(ValueError, match="unknown model 'resnet9000'; the builders are: cnn, "):
        models.build("resnet9000", spec)


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
