"""Data in: bundled names, tables, arrays, CSV, tf.data; task inference; clear refusals."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfkit import data, datasets


def test_bundled_penguins_table_spec():
    prepared = data.prepare("penguins")
    spec = prepared.spec
    assert spec.kind == "table" and spec.task == "multiclass"
    assert spec.class_names == ("Adelie", "Chinstrap", "Gentoo")
    assert set(spec.string_columns) == {"island", "sex"}
    assert "bill_length_mm" in spec.numeric_columns
    # 344 rows, 11 with a missing cell are dropped and reported.
    assert spec.n_train + spec.n_val == 333
    assert spec.report == (
        "dropped 11 rows with 19 missing cells",
        "task: multiclass — 'species' is text with 3 classes (Adelie, Chinstrap, Gentoo)",
    )
    assert spec.target == "species" and spec.target_scale is None


def test_bundled_tasks_and_regression_scale():
    mpg = data.prepare("auto_mpg")
    assert mpg.spec.task == "regression" and mpg.spec.target == "Miles_per_Gallon"
    train_y = mpg.train_tensors[1].numpy()
    np.testing.assert_allclose(mpg.spec.target_scale, (train_y.mean(), train_y.std()), rtol=1e-5)
    digits = data.prepare("digits").spec
    assert digits.task == "multiclass" and digits.class_names == tuple("0123456789")


def test_impute_keeps_every_row_and_says_so():
    spec = data.prepare("penguins", missing="impute").spec
    assert spec.n_train + spec.n_val == 344
    assert spec.report[0].startswith("imputed 19 missing cells in 11 rows")


def test_validation_split_is_shuffled_and_repeatable():
    a = data.prepare("penguins", seed=1).validation_arrays[1]
    b = data.prepare("penguins", seed=1).validation_arrays[1]
    c = data.prepare("penguins", seed=2).validation_arrays[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == 3  # the CSV is sorted by species; the split is not


@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array([0.5, 1.5, 2.25, 3.0] * 10), "regression"),
        (np.array([0, 1] * 20), "binary"),
        (np.array(["cat", "dog", "cow", "cat"] * 10), "multiclass"),
        (np.arange(40) * 1.0, "regression"),  # 40 distinct integers read as a quantity
        (np.array([0, 1, 2, 3] * 10), "multiclass"),
    ],
)
def test_task_is_inferred_from_the_target(y, task):
    x = np.random.default_rng(0).normal(size=(len(y), 3))
    assert data.prepare((x, y)).spec.task == task


def test_task_override():
    x, y = np.zeros((40, 2)), np.array([0, 1, 2, 3] * 10)
    assert data.prepare((x, y), task="regression").spec.task == "regression"


def test_csv_path_and_dataframe(tmp_path):
    frame = datasets.load("penguins")
    path = tmp_path / "birds.csv"
    frame.to_csv(path, index=False)
    from_csv = data.prepare(str(path), target="species").spec
    from_frame = data.prepare(frame, target="species").spec
    assert from_csv.name == "birds"
    assert from_csv.columns == from_frame.columns


def test_tf_data_dataset_batched_or_not():
    x, y = datasets.make_classification(100, 4, 3)
    for ds in (tf.data.Dataset.from_tensor_slices((x, y)),
               tf.data.Dataset.from_tensor_slices((x, y)).batch(16)):
        prepared = data.prepare(ds, validation_split=0.2)
        assert prepared.spec.task == "multiclass"
        assert (prepared.spec.n_train, prepared.spec.n_val) == (80, 20)
        assert prepared.spec.input_shape == (4,)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: data.prepare("penguins", target="wings"),
         "target: no column 'wings'; the columns are: species, island, bill_length_mm"),
        (lambda: data.prepare("penguins", target="Species"),
         "target: no column 'Species' \\(did you mean 'species'\\?\\)"),
        (lambda: data.prepare("penguin"), "did you mean 'penguins'"),
        (lambda: datasets.load("penguin"),
         "unknown dataset 'penguin' \\(did you mean 'penguins'\\?\\); bundled datasets are"),
        (lambda: data.prepare("penguins", task="classify"),
         "task must be one of 'auto', 'regression', 'binary', 'multiclass'; got 'classify'"),
        (lambda: data.prepare(pd.DataFrame({"a": [], "b": []}), target="b"),
         "data is empty"),
        (lambda: data.prepare((np.zeros((10, 2)), np.zeros(7))),
         r"same length; got len\(X\)=10, len\(y\)=7"),
        (lambda: data.prepare((np.zeros((0, 2)), np.zeros(0))), "data is empty"),
        (lambda: data.prepare((np.array([[1.0, np.nan]] * 5), np.arange(5.0))),
         "X holds 5 NaN or infinite values"),
        (lambda: data.prepare((np.ones((5, 2)), np.array([1.0, np.nan, 2, 3, 4]))),
         "y holds 1 NaN or infinite labels"),
        (lambda: data.prepare((np.ones((4, 2)), np.array(["a", "b", "a", "b"])),
                              task="regression"),
         "text labels .* task='regression' needs numbers"),
        (lambda: data.prepare("no_such_dataset_or_file.csv"),
         "neither a bundled dataset \\(auto_mpg, co2, digits, penguins, sunspots\\) nor "
         "an existing CSV"),
        (lambda: data.prepare(42), "data must be a bundled dataset name"),
    ],
)
def test_bad_data_is_refused_with_a_useful_message(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_model_inputs_from_a_dataframe_ignore_extra_columns():
    spec = data.prepare("penguins").spec
    inputs = data.model_inputs(datasets.load("penguins").dropna().head(4), spec)
    assert set(inputs) == set(spec.columns)
    assert inputs["island"].shape == (4, 1) and inputs["body_mass_g"].dtype == np.float32
    with pytest.raises(ValueError, match="lack the column"):
        data.model_inputs({"island": ["Biscoe"]}, spec)


@pytest.mark.parametrize("start_step", [0, 3])
def test_batches_gathered_in_the_loop_equal_the_input_stream(start_step):
    features = {"x": tf.range(10, dtype=tf.float32)[:, None],
                "island": tf.constant([f"isle{i}" for i in range(10)])}
    tensors = (features, tf.range(10))
    stream = data.train_input_fn(None, n_train=10, global_batch_size=4, seed=7, epochs=4,
                                 start_step=start_step, tensors=tensors)
    expected = list(stream(tf.distribute.InputContext()))  # 2 steps an epoch, to epoch 4
    gathered = data.GatheredBatches(tensors, n_train=10, global_batch_size=4, seed=7,
                                    start_step=start_step)

    @tf.function
    def three_steps():  # as the training loop reads it: inside one compiled call
        return [next(gathered) for _ in range(3)]

    got = [batch for _ in range(3) for batch in three_steps()][: len(expected)]
    assert len(expected) == 8 - start_step  # crosses epochs inside a call, too
    for (want_x, want_y), (got_x, got_y) in zip(expected, got, strict=True):
        assert got_y.numpy().tolist() == want_y.numpy().tolist()
        assert got_x["island"].numpy().tolist() == want_x["island"].numpy().tolist()
        np.testing.assert_array_equal(got_x["x"].numpy(), want_x["x"].numpy())


@pytest.mark.parametrize("as_dataset", [False, True])
def test_regression_target_scale_for_arrays_and_datasets(as_dataset):
    x, y = datasets.make_linear(200)
    given = tf.data.Dataset.from_tensor_slices((x, y)) if as_dataset else (x, y)
    prepared = data.prepare(given, validation_split=0.25)
    # a dataset's scale comes from the peeked labels (all of them here), arrays' from training
    want = y if as_dataset else prepared.train_tensors[1].numpy()
    np.testing.assert_allclose(prepared.spec.target_scale, (want.mean(), want.std()), rtol=1e-5)
    what = "the labels" if as_dataset else "y"
    assert prepared.spec.report[0].startswith(f"task: regression — {what} has 200 distinct")


def test_a_constant_regression_target_keeps_a_safe_scale():
    spec = data.prepare((np.arange(20.0)[:, None], np.full(20, 7.5)), task="regression").spec
    assert spec.target_scale == (7.5, 1.0)
