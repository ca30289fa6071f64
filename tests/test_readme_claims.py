"""README claims about the Python API: tf.data input, a Strategy object, `result.predict`."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfkit
from tfkit import datasets

QUIET = {"logdir": None, "export": None, "verbose": 0}
PENGUINS_HEAD = datasets.load("penguins").head()  # the README's line; row 3 has 5 empty cells
ROW_3_GAPS = "row 3: bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g, sex"


@pytest.fixture(scope="module")
def dropping():
    """The README's run: penguins, missing="drop" (the default)."""
    return tfkit.train("penguins", epochs=2, **QUIET)


@pytest.fixture(scope="module")
def imputing():
    """Every row trains (no split), so the fill is the whole table's medians."""
    return tfkit.train("penguins", epochs=2, missing="impute", validation_split=0.0, **QUIET)


def test_batched_dataset_trains_and_holds_out_its_last_rows():
    x, y = datasets.make_classification(200, 6, 2, seed=4)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = tfkit.train(batched, model="logistic_regression", epochs=3, learning_rate=0.05,
                         validation_split=0.25, **QUIET)
    assert (result.spec.n_train, result.spec.n_val) == (150, 50)
    assert result.history["loss"][-1] < result.history["loss"][0]
    # The held-out rows are the stream's last 50: the run's val_loss is their loss.
    last = tfkit.evaluate(result, (x[150:], y[150:]))
    first = tfkit.evaluate(result, (x[:50], y[:50]))
    assert result.history["val_loss"][-1] == pytest.approx(last["loss"], abs=1e-5)
    assert result.history["val_loss"][-1] != pytest.approx(first["loss"], abs=1e-5)
    assert result.predict(x[:7]).shape == (7, 1)  # arrays in, one answer per row


def test_a_strategy_object_is_the_one_the_run_uses(capsys):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = tfkit.train("penguins", epochs=2, strategy=strategy, logdir=None, export=None,
                         verbose=2)
    assert result.strategy is strategy
    assert "1 replica(s)" in capsys.readouterr().out
    assert all(strategy.extended.variable_created_in_scope(w.value) for w in result.model.weights)
    assert result.history["loss"][-1] < result.history["loss"][0]


# In a process of its own: two MirroredStrategy objects over the same devices in one
# process share collective keys, and this one would abort the suite's own cpu:2 runs.
MIRRORED_CHILD = """
import tensorflow as tf
import tfkit
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = tfkit.train("penguins", epochs=2, strategy=strategy, logdir=None, export=None, verbose=2)
print("same object:", result.strategy is strategy)
print("in its scope:", all(strategy.extended.variable_created_in_scope(w.value)
                           for w in result.model.weights))
print("loss fell:", result.history["loss"][-1] < result.history["loss"][0])
"""


def test_a_mirrored_strategy_object_of_ones_own_trains_on_both_devices(tmp_path):
    done = subprocess.run([sys.executable, "-c", MIRRORED_CHILD], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("2 replica(s)", "same object: True", "in its scope: True", "loss fell: True"):
        assert line in done.stdout, done.stdout


def test_readme_predict_line_names_the_row_it_cannot_answer(dropping):
    with pytest.raises(ValueError) as refused:
        dropping.predict(PENGUINS_HEAD)
    message = str(refused.value)
    assert "1 of 5 rows have missing cells" in message
    assert ROW_3_GAPS in message and "missing='impute'" in message
    answered = dropping.predict(PENGUINS_HEAD.drop(index=3))
    assert answered.shape == (4, 3) and np.isfinite(answered).all()
    np.testing.assert_allclose(answered.sum(axis=1), 1.0, atol=1e-5)


def test_predict_reads_cells_as_training_did_and_refuses_junk(dropping):
    rows = PENGUINS_HEAD.drop(index=3).reset_index(drop=True)
    columns = {c: rows[c].tolist() for c in dropping.spec.columns}
    written = {**columns, "body_mass_g": [f"{v:,.0f}" for v in rows["body_mass_g"]]}  # "3,750"
    np.testing.assert_allclose(dropping.predict(written), dropping.predict(rows), atol=1e-6)
    junk = {**columns, "flipper_length_mm": [181.0, "?", 195.0, " n/a "]}
    with pytest.raises(ValueError, match=r"2 of 4 rows .* row 1: flipper_length_mm; "
                                         r"row 3: flipper_length_mm;"), \
            pytest.warns(tfkit.DataWarning, match="2 cells are not numbers"):
        dropping.predict(junk)


def test_impute_run_fills_new_rows_as_training_filled_them(imputing):
    table = datasets.load("penguins")
    answers = imputing.predict(PENGUINS_HEAD)
    assert answers.shape == (5, 3) and np.isfinite(answers).all()  # one answer per row
    filled = PENGUINS_HEAD.loc[[3]].fillna(
        {c: table[c].median() for c in imputing.spec.numeric_columns} | {"sex": "missing"})
    np.testing.assert_allclose(answers[3], imputing.predict(filled)[0], atol=1e-6)
    np.testing.assert_allclose(answers[[0, 1, 2, 4]],
                               imputing.predict(PENGUINS_HEAD.drop(index=3)), atol=1e-6)
    assert not np.allclose(answers[3], answers[0], atol=1e-3)


def test_predict_still_takes_a_dict_of_lists_and_names_a_lacking_column(dropping):
    rows = PENGUINS_HEAD.drop(index=3)
    as_lists = {c: rows[c].tolist() for c in rows.columns if c != "species"}
    np.testing.assert_allclose(dropping.predict(as_lists), dropping.predict(rows), atol=1e-6)
    with pytest.raises(ValueError, match="lack the column.*'island'"):
        dropping.predict(pd.DataFrame(rows).drop(columns="island"))
