"""Learning-rate schedules: the rate each epoch trains at."""

import pytest

import tfkit
from tfkit import datasets
from tfkit.schedules import EpochCosineDecay


def test_cosine_runs_from_the_base_rate_down_towards_zero():
    schedule = EpochCosineDecay(optimizer=None, base=0.1, epochs=4)
    rates = [schedule.rate(epoch) for epoch in range(4)]
    assert rates[0] == pytest.approx(0.1) and rates[2] == pytest.approx(0.05)
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.015


def test_training_with_cosine_logs_the_rate_of_each_epoch():
    result = tfkit.train(datasets.make_linear(64), model="linear_regression", epochs=4,
                         learning_rate=0.01, lr_schedule="cosine", strategy="cpu",
                         logdir=None, export=None)
    assert result.stats["learning_rate"] == pytest.approx(
        [0.01, 0.01 * 0.8535534, 0.005, 0.01 * 0.1464466], rel=1e-5)
