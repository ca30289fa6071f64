"""Series windows: split by time, no leakage, gaps filled but never labels, the window option."""

import numpy as np
import pytest

from tfkit import TrainConfig, cli, data, sequences


def _arrays(prepared):
    x, y = (np.concatenate([b.numpy() for b in part])
            for part in zip(*prepared.train.batch(10_000), strict=True))
    return x, y


def test_validation_is_the_end_of_the_series_and_never_a_training_value():
    # values equal their time index, so every number says where it came from
    prepared = data.prepare(sequences.Series.from_values(np.arange(100.0)), window=5,
                            validation_split=0.2)
    train_x, train_y = _arrays(prepared)
    val_x, val_y = prepared.validation_arrays
    first_val = val_y.min()
    assert max(train_x.max(), train_y.max()) < first_val  # inputs and labels before the split
    assert np.array_equal(val_y, np.arange(first_val, 100.0))  # every later time, in order
    np.testing.assert_array_equal(val_x[:, -1], val_y - 1)  # the window just before the label
    assert prepared.spec.info["mean"] == pytest.approx(np.arange(first_val).mean())
    assert prepared.spec.n_train == first_val - 5


def test_gaps_are_filled_for_inputs_but_never_labels():
    values = np.arange(40.0)
    values[[10, 11, 30]] = np.nan
    prepared = data.prepare(sequences.Series.from_values(values), window=4,
                            validation_split=0.25)
    _, train_y = _arrays(prepared)
    labels = np.concatenate([train_y, prepared.validation_arrays[1]])
    assert not set(labels.tolist()) & {10.0, 11.0, 30.0}
    assert len(labels) == 40 - 4 - 3
    assert any(10.0 in row for row in _arrays(prepared)[0])  # interpolated, used as input
    assert "filled 3 missing values of 40" in prepared.spec.report[0]


def test_co2_reports_its_59_missing_weeks():
    series = sequences.load_series("co2")
    assert int(series.filled.sum()) == 59 and not np.isnan(series.values).any()
    spec = data.prepare("co2").spec
    assert spec.input_shape == (52,) and spec.task == "regression"
    assert any("filled 59 missing values" in line for line in spec.report)


def test_sunspots_naive_baseline_is_computed_on_validation():
    prepared = data.prepare("sunspots", window=12)
    val_x, val_y = prepared.validation_arrays
    naive = prepared.spec.info["naive_validation_mae"]
    assert naive == pytest.approx(np.abs(val_y - val_x[:, -1]).mean())
    assert prepared.spec.info["first_validation_time"] == "1957-01"
    assert data.prepare("sunspots", window=36).spec.n_val == prepared.spec.n_val == 624


def test_window_too_long_is_refused():
    with pytest.raises(ValueError, match="use a shorter window"):
        data.prepare(sequences.Series.from_values(np.arange(10.0)), window=9)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_window_option_is_validated(bad):
    with pytest.raises(ValueError, match="window must be a positive integer or None"):
        TrainConfig(window=bad)


def test_window_is_a_cli_flag():
    args = cli._parser().parse_args(["train", "--data", "sunspots", "--window", "36"])
    assert args.window == 36


def test_sunspots_are_scaled_as_counts_with_training_statistics():
    prepared = data.prepare("sunspots", window=12)
    info = prepared.spec.info
    history = sequences.load_series("sunspots").values[:-624]
    assert info["scale"] == "sqrt" and data.prepare("co2").spec.info["scale"] == "linear"
    assert info["mean"] == pytest.approx(np.sqrt(history).mean())
    assert info["std"] == pytest.approx(np.sqrt(history).std())
    assert any("square roots" in line for line in prepared.spec.report)


def test_sqrt_scale_refuses_negative_values():
    with pytest.raises(ValueError, match="scale 'sqrt' needs non-negative values"):
        sequences.Series.from_values([1.0, -2.0, 3.0], scale="sqrt")
    with pytest.raises(ValueError, match="scale must be one of linear, sqrt"):
        sequences.Series.from_values([1.0, 2.0], scale="log")
