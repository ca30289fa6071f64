"""TrainConfig validation: bad values are refused with the field and what is allowed."""

import pytest

from tfkit import TrainConfig


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be a positive integer, got 0"),
        ("epochs", -3, "epochs must be a positive integer, got -3"),
        ("batch_size", 0, "batch_size must be a positive integer, got 0"),
        ("batch_size", 2.5, "batch_size must be a positive integer, got 2.5"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("validation_split", 1.0, "validation_split must be in [0, 1)"),
        ("optimizer", "adagrad", "optimizer must be one of adam, adamw, sgd, rmsprop"),
        ("lr_schedule", "step", "lr_schedule must be one of constant, cosine"),
        ("task", "ranking", "task must be one of auto, regression, binary, multiclass"),
        ("strategy", "quantum", "strategy must be one of auto, cpu, gpu, mirrored"),
        ("strategy", "cpu:0", "needs N >= 1"),
        ("missing", "guess", "missing must be one of drop, impute"),
        ("clip_norm", -1.0, "clip_norm must be > 0"),
    ],
)
def test_bad_values_name_the_field_and_the_choices(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_defaults_are_valid_and_frozen():
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.strategy) == (20, 32, "auto")
    with pytest.raises(AttributeError):
        config.epochs = 3


def test_to_dict_is_json_friendly():
    import json

    import numpy as np

    text = json.dumps(TrainConfig(data=(np.zeros(3), np.zeros(3))).to_dict())
    assert '"data": "<tuple>"' in text
