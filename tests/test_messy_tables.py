"""A user's own table as it comes: junk cells, a guessed task, weights, their own validation."""

import warnings

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfkit import data
from tfkit.data import DataWarning

# Every kind of cell a numeric column holds in the wild, and what it reads as.
CELLS = {
    "1,500": 1500.0, " 12 ": 12.0, "$1,200": 1200.0, "12%": 12.0, "-$5": -5.0, "1e3": 1000.0,
    "7": 7.0, "3.5": 3.5, "-4": -4.0, "€30": 30.0,
    "?": None, "N/A": None, "NA": None, "-": None, "--": None, "": None, "twelve": None,
}


def _messy_frame() -> pd.DataFrame:
    cells = list(CELLS)
    # The price identifies the row, so each parsed value can be checked against its cell.
    return pd.DataFrame({"sqft": cells, "rooms": np.arange(len(cells)) % 4 + 1.0,
                         "price": np.arange(len(cells)) * 1.5 + 0.25})


def _data_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("source", ["frame", "csv"])
def test_junk_cells_become_missing_with_one_warning(source, tmp_path):
    frame = _messy_frame()
    if source == "csv":
        frame.to_csv(tmp_path / "houses.csv", index=False)
    given = frame if source == "frame" else str(tmp_path / "houses.csv")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        prepared = data.prepare(given, target="price", validation_split=0.0)
    spec = prepared.spec
    assert spec.numeric_columns == ("sqft", "rooms") and spec.string_columns == ()
    got = dict(zip(prepared.train_tensors[1].numpy().tolist(),
                   prepared.train_tensors[0]["sqft"].numpy().ravel().tolist(), strict=True))
    want = {row * 1.5 + 0.25: value
            for row, value in enumerate(CELLS.values()) if value is not None}
    assert got == pytest.approx(want)
    [warning] = _data_warnings(record)
    assert {w.filename for w in record if w.category is DataWarning} == {__file__}  # the caller
    # read_csv already reads 'N/A', 'NA' and '' as missing; a DataFrame holds them as text.
    count, examples = (7, "'?', 'N/A', 'NA'") if source == "frame" else (4, "'?', '-', '--'")
    assert warning == (
        f"column 'sqft': {count} cells are not numbers and were treated as missing ({examples}); "
        "pass column_types={'sqft': 'categorical'} to keep it as text"
    )
    assert warning in spec.report
    assert "dropped 7 rows with 7 missing cells" in spec.report
    assert any("'$1,200'" in line or "'1,500'" in line for line in spec.report)


@pytest.mark.parametrize(("numbers", "words", "kind"), [(8, 2, "numeric"), (7, 3, "text")])
def test_a_column_reads_as_numbers_when_at_least_80_percent_are(numbers, words, kind):
    cells = [str(i) for i in range(numbers)] + [f"word{i}" for i in range(words)]
    frame = pd.DataFrame({"size": cells * 4, "y": [0.5, 1.5, 2.5, 3.25, 4.5] * 8})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        spec = data.prepare(frame, target="y", missing="impute").spec
    assert ("size" in spec.numeric_columns) == (kind == "numeric")
    assert len(_data_warnings(record)) == (1 if kind == "numeric" else 0)


def test_column_types_override_the_guess_both_ways():
    frame = pd.DataFrame({"zip": [2134, 2135, 2134, 90210] * 5,
                          "rooms": ["3", "four", "5", "six"] * 5, "price": np.arange(20) * 1.5})
    guessed = data.prepare(frame, target="price").spec
    assert guessed.numeric_columns == ("zip",) and guessed.string_columns == ("rooms",)
    with pytest.warns(DataWarning, match=r"column 'rooms': 10 cells are not numbers .*'four'"):
        spec = data.prepare(frame, target="price", missing="impute", validation_split=0.0,
                            column_types={"zip": "categorical", "rooms": "numeric"}).spec
    assert spec.numeric_columns == ("rooms",) and spec.string_columns == ("zip",)
    assert set(spec.sample["zip"].ravel()) == {"2134", "2135", "90210"}
    assert set(spec.sample["rooms"].ravel()) == {3.0, 4.0, 5.0}  # 'four', 'six': the median


@pytest.mark.parametrize(
    ("column_types", "message"),
    [
        ({"zp": "categorical"},
         r"column_types names 'zp', which is not a column \(did you mean 'zip'\?\); "
         r"the feature columns are: zip, rooms"),
        ({"zip": "text"}, r"column_types\['zip'\] must be one of 'numeric', 'categorical'"),
        ({"price": "categorical"}, r"'price' is the target, not a feature.*task="),
    ],
)
def test_column_types_errors(column_types, message):
    frame = pd.DataFrame({"zip": [1, 2] * 5, "rooms": [3.0, 4.0] * 5, "price": np.arange(10.0)})
    with pytest.raises(ValueError, match=message):
        data.prepare(frame, target="price", column_types=column_types)


def test_junk_in_the_target_drops_the_row_and_says_so():
    frame = pd.DataFrame({"x": np.arange(10.0),
                          "price": ["100.5", "?", "130.25", "140", "150.5"] * 2})
    with pytest.warns(DataWarning, match=r"target column 'price': 2 cells are not numbers"):
        spec = data.prepare(frame, target="price").spec
    assert spec.task == "regression" and spec.n_train + spec.n_val == 8
    assert "dropped 2 rows with no 'price'" in spec.report


def test_a_price_rounded_to_50k_is_regression_and_says_why():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"sqft": rng.uniform(500, 3000, 200),
                          "price": rng.integers(3, 11, 200) * 50_000})  # 8 distinct values
    spec = data.prepare(frame, target="price").spec
    assert spec.task == "regression" and spec.class_names is None
    assert spec.report[-1] == (
        "task: regression — 'price' has 8 distinct numbers, whole but from 150000 to 500000, "
        "outside the class ids -1..100; pass task='multiclass' to treat them as classes"
    )
    train_y = data.prepare(frame, target="price").train_tensors[1].numpy()
    assert spec.target_scale == pytest.approx((train_y.mean(), train_y.std()), rel=1e-6)


def test_a_small_integer_label_is_multiclass_and_says_why():
    frame = pd.DataFrame({"x": np.arange(50.0), "grade": np.arange(50) % 5})
    spec = data.prepare(frame, target="grade").spec
    assert spec.task == "multiclass" and spec.class_names == ("0", "1", "2", "3", "4")
    assert spec.target_scale is None
    assert spec.report[-1] == (
        "task: multiclass — 'grade' holds 5 whole numbers (0, 1, 2, 3, 4), read as class ids; "
        "pass task='regression' to predict them as quantities"
    )
    assert data.prepare(frame, target="grade", task="regression").spec.report[-1] == (
        "task: regression (as given) — 'grade' has 5 distinct values")


def test_whole_number_classes_keep_numeric_order():
    frame = pd.DataFrame({"x": np.arange(24.0), "level": np.arange(24) % 12})
    prepared = data.prepare(frame, target="level", validation_split=0.0)
    assert prepared.spec.class_names == tuple(str(i) for i in range(12))
    np.testing.assert_array_equal(prepared.train_tensors[1].numpy(), np.arange(24) % 12)


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"rooms": [1.0, 2.0], "price": [1.0, 2.0]}), {"target": "prise"},
         r"target: no column 'prise' \(did you mean 'price'\?\); the columns are: rooms, "
         "price"),
        (pd.DataFrame({"rooms": [1.0, 2.0], "price": [np.nan, np.nan]}), {"target": "price"},
         "target column 'price' has no values: all 2 cells are empty or not numbers"),
        (pd.DataFrame({"rooms": [1.0, 2.0], "price": ["?", "N/A"]}), {"target": "price"},
         "target column 'price' has no values"),
        (pd.DataFrame({"price": [1.0, 2.0, 3.0]}), {"target": "price"},
         "the table has no feature columns: besides the target 'price' there is nothing"),
        (pd.DataFrame({"w": [1.0, 2.0], "price": [1.0, 2.0]}),
         {"target": "price", "sample_weight": "w"},
         "no feature columns: besides the target 'price' and the sample_weight column 'w'"),
        (pd.DataFrame({"x": [1.0, 2.0, 3.0], "species": ["Adelie"] * 3}), {"target": "species"},
         r"target column 'species' has a single value \('Adelie'\) in 3 rows"),
        (pd.DataFrame({"a": [1.0, np.nan, np.nan, 4.0], "b": [np.nan, 2.0, 3.0, np.nan],
                       "c": [np.nan, np.nan, np.nan, 1.0], "y": [0.5, 1.5, 2.5, 3.5]}),
         {"target": "y"},
         r"every row has a missing cell, so missing='drop' leaves no rows; the columns with the "
         r"most missing cells: 'c' \(3 of 4\), 'a' \(2 of 4\), 'b' \(2 of 4\); "
         r"pass missing='impute'"),
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.5], "w": [1.0, -2.0]}),
         {"target": "y", "sample_weight": "w"},
         r"sample_weight column 'w' must hold numbers >= 0; 1 rows hold negative ones \(e.g. -2\)"),
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.5], "w": ["heavy", "light"]}),
         {"target": "y", "sample_weight": "w"},
         "sample_weight column 'w' must hold numbers >= 0; it holds text such as 'heavy'"),
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.5], "weight": [1.0, 2.0]}),
         {"target": "y", "sample_weight": "weigth"},
         r"sample_weight: no column 'weigth' \(did you mean 'weight'\?\)"),
        (pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.5]}),
         {"target": "y", "class_weight": {0: 2.0}},
         "class_weight needs classes, but the task is regression"),
        (pd.DataFrame({"x": np.arange(6.0), "bird": ["Adelie", "Gentoo", "Chinstrap"] * 2}),
         {"target": "bird", "class_weight": {"Gentu": 2.0}},
         r"class_weight has no class 'Gentu' \(did you mean 'Gentoo'\?\); "
         "the classes are: Adelie, Chinstrap, Gentoo"),
        (pd.DataFrame({"x": np.arange(6.0), "bird": ["Adelie", "Gentoo", "Chinstrap"] * 2}),
         {"target": "bird", "class_weight": {3: 2.0}},
         r"class_weight key 3 is not a class id \(0..2\) nor a class name"),
        (pd.DataFrame({"x": np.arange(6.0), "bird": ["Adelie", "Gentoo", "Chinstrap"] * 2}),
         {"target": "bird", "class_weight": {"Adelie": -1.0}},
         r"class_weight\['Adelie'\] must be a number >= 0; got -1.0"),
    ],
)
@pytest.mark.filterwarnings("ignore::tfkit.data.DataWarning")
def test_errors_name_the_column_the_value_and_what_would_be_valid(frame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.prepare(frame, **kwargs)


def test_an_empty_column_is_left_out_with_a_warning():
    frame = pd.DataFrame({"x": np.arange(6.0), "notes": [np.nan] * 6, "y": np.arange(6) * 0.5})
    with pytest.warns(DataWarning, match="column 'notes' has no values and was left out"):
        spec = data.prepare(frame, target="y").spec
    assert spec.columns == ("x",) and spec.n_train + spec.n_val == 6


# ---- validation_data -----------------------------------------------------------------------


def _birds(n: int, offset: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"bill": offset + rng.uniform(0, 10, n), "island": ["A", "B"] * (n // 2),
                         "species": ["Adelie", "Gentoo", "Chinstrap", "Gentoo"] * (n // 4)})


@pytest.mark.parametrize("form", ["frame", "csv"])
def test_validation_data_as_a_table(form, tmp_path):
    train, val = _birds(40, 0.0, 0), _birds(12, 1000.0, 1)
    val["bill"] = val["bill"].astype(object)
    val.loc[3, "bill"] = "?"  # read with the training column's kind: a missing number
    if form == "csv":
        val.to_csv(tmp_path / "val.csv", index=False)
        val = str(tmp_path / "val.csv")
    with pytest.warns(DataWarning, match="validation_data column 'bill': 1 cell is not a number"):
        prepared = data.prepare(train, target="species", validation_data=val,
                                validation_split=0.5)
    spec = prepared.spec
    assert (spec.n_train, spec.n_val) == (40, 11)  # all of data trains; the '?' row dropped
    assert spec.class_names == ("Adelie", "Chinstrap", "Gentoo")
    assert spec.sample["bill"].max() < 10  # the spec's statistics come from training rows only
    val_x, val_y = prepared.validation_arrays
    assert val_x["bill"].min() >= 1000 and val_x["island"].dtype == object
    assert [spec.class_names[i] for i in val_y[:3]] == ["Adelie", "Gentoo", "Chinstrap"]
    assert "validation_data: dropped 1 rows with 1 missing cells" in spec.report


def test_validation_data_is_imputed_with_the_training_median():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "y": [0.5, 1.5, 2.5, 3.5]})
    val = pd.DataFrame({"x": [np.nan, 100.0, 200.0], "y": [1.0, 2.0, 3.0]})
    prepared = data.prepare(train, target="y", validation_data=val, missing="impute")
    assert prepared.validation_arrays[0]["x"].ravel().tolist() == [2.0, 100.0, 200.0]
    assert prepared.train_tensors[0]["x"].numpy().ravel().tolist() == [1.0, 2.0, 3.0, 2.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.rename(columns={"bill": "bil"}),
         r"validation_data's columns differ from data's: it lacks 'bill' and has the extra "
         r"'bil'; 'bil': did you mean 'bill'\?; data's columns are: bill, island, species"),
        (lambda f: f.assign(extra=1.0), "has the extra 'extra'"),
        (lambda f: f.assign(species=["Adelie", "Emperor"] * 6),
         "validation_data's target column 'species' holds the class\\(es\\) Emperor never seen "
         "in training; the training classes are: Adelie, Chinstrap, Gentoo"),
    ],
)
def test_validation_data_that_does_not_match_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        data.prepare(_birds(40, 0.0, 0), target="species",
                     validation_data=change(_birds(12, 0.0, 1)))


def test_validation_data_as_arrays():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    val_x, val_y = rng.normal(size=(9, 3)), np.array([2, 1, 0] * 3)
    prepared = data.prepare((x, y), validation_data=(val_x, val_y))
    assert (prepared.spec.n_train, prepared.spec.n_val) == (30, 9)
    np.testing.assert_allclose(prepared.validation_arrays[0], val_x.astype(np.float32))
    np.testing.assert_array_equal(prepared.validation_arrays[1], val_y)
    with pytest.raises(ValueError, match=r"validation_data: X's examples have shape \(2,\); "
                                         r"the training data's have \(3,\)"):
        data.prepare((x, y), validation_data=(val_x[:, :2], val_y))
    with pytest.raises(ValueError, match="holds the class\\(es\\) 7 never seen in training"):
        data.prepare((x, y), validation_data=(val_x, np.array([7, 1, 0] * 3)))


def test_validation_data_for_a_dataset():
    x, y = np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 2
    prepared = data.prepare(tf.data.Dataset.from_tensor_slices((x, y)),
                            validation_data=tf.data.Dataset.from_tensor_slices((x[:5], y[:5])))
    assert (prepared.spec.n_train, prepared.spec.n_val) == (20, 5)
    assert len(list(prepared.train)) == 20 and len(list(prepared.validation)) == 5


# ---- weights -------------------------------------------------------------------------------


def _weighted_frame() -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(8.0), "w": [1.0, 2.0, "?", 0.5, 1.0, 3.0, 1.0, 2.0],
                         "bird": ["Adelie", "Gentoo", "Chinstrap", "Gentoo"] * 2})


def test_sample_weight_column_makes_triples():
    with pytest.warns(DataWarning, match="sample_weight column 'w': 1 cell is not a number"):
        prepared = data.prepare(_weighted_frame(), target="bird", sample_weight="w",
                                validation_split=0.0)
    assert "w" not in prepared.spec.columns
    assert "dropped 1 rows with no weight in 'w'" in prepared.spec.report
    x, y, w = prepared.train_tensors
    assert w.dtype == tf.float32 and w.numpy().tolist() == [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 2.0]
    assert x["x"].numpy().ravel().tolist() == [0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert len(prepared.train.element_spec) == 3


@pytest.mark.parametrize("key", ["Gentoo", 2])  # by name, or by id (classes sorted by name)
def test_class_weight_by_name_or_id(key):
    prepared = data.prepare(_weighted_frame().drop(columns="w"), target="bird",
                            class_weight={key: 4.0}, validation_split=0.25)
    x, y, w = prepared.train_tensors
    gentoo = prepared.spec.class_names.index("Gentoo")
    assert w.numpy().tolist() == [4.0 if label == gentoo else 1.0 for label in y.numpy()]
    assert len(prepared.validation.element_spec) == 2 and len(prepared.validation_arrays) == 2


def test_class_weight_times_sample_weight():
    frame = _weighted_frame().assign(w=[1.0, 2.0, 1.0, 0.5, 1.0, 3.0, 1.0, 2.0])
    prepared = data.prepare(frame, target="bird", sample_weight="w",
                            class_weight={"Gentoo": 10.0}, validation_split=0.0)
    assert prepared.train_tensors[2].numpy().tolist() == [1.0, 20.0, 1.0, 5.0, 1.0, 30.0, 1.0, 20.0]


def test_whole_number_classes_are_weighted_by_their_value():
    frame = pd.DataFrame({"x": np.arange(6.0), "stars": [1, 2, 3] * 2})
    prepared = data.prepare(frame, target="stars", class_weight={3: 5.0}, validation_split=0.0)
    assert prepared.train_tensors[2].numpy().tolist() == [1.0, 1.0, 5.0] * 2
    with pytest.raises(ValueError, match="class_weight has no class 0; the classes are: 1, 2, 3"):
        data.prepare(frame, target="stars", class_weight={0: 5.0})


def test_without_weights_elements_stay_pairs():
    prepared = data.prepare(_weighted_frame().drop(columns="w"), target="bird")
    assert len(prepared.train_tensors) == 2 and len(prepared.train.element_spec) == 2


def test_weighted_triples_flow_through_both_input_streams():
    x, y = np.arange(24, dtype=np.float32).reshape(12, 2), np.arange(12) % 3
    prepared = data.prepare((x, y), class_weight={1: 3.0}, validation_split=0.0)
    tensors = prepared.train_tensors
    stream = data.train_input_fn(prepared.train, n_train=12, global_batch_size=4, seed=0,
                                 epochs=1, tensors=tensors)
    gathered = data.GatheredBatches(tensors, n_train=12, global_batch_size=4, seed=0)
    for bx, by, bw in [next(iter(stream(tf.distribute.InputContext()))), next(gathered)]:
        assert bx.shape == (4, 2) and bw.shape == (4,)
        assert bw.numpy().tolist() == [3.0 if label == 1 else 1.0 for label in by.numpy()]


def test_class_weight_on_a_streamed_dataset():
    x, y = np.zeros((10, 2)), np.arange(10) % 2
    prepared = data.prepare(tf.data.Dataset.from_tensor_slices((x, y)), class_weight={1: 2.0})
    weights = [(float(yy), float(ww)) for _, yy, ww in prepared.train]
    assert weights == [(float(i % 2), 2.0 if i % 2 else 1.0) for i in range(8)]


def test_a_question_mark_in_a_text_target_is_no_class():
    birds = ["Adelie", "Gentoo", "?", "Adelie", "Gentoo", "-", "Adelie", "?"]
    frame = pd.DataFrame({"x": np.arange(8.0), "bird": birds})
    with pytest.warns(DataWarning, match=r"target column 'bird': 3 cells mark a missing value "
                                         r"\('\?', '-'\) and are not a class"):
        spec = data.prepare(frame, target="bird").spec
    assert spec.class_names == ("Adelie", "Gentoo") and spec.n_train + spec.n_val == 5


def test_an_empty_training_column_does_not_empty_the_validation_rows():
    frame = pd.DataFrame({"x": np.arange(6.0), "notes": [np.nan] * 6, "y": np.arange(6) * 0.5})
    val = frame.assign(notes=["a", np.nan, "b", np.nan, "c", np.nan])
    with pytest.warns(DataWarning, match="'notes' has no values"):
        prepared = data.prepare(frame, target="y", validation_data=val)
    assert prepared.spec.n_val == 6 and set(prepared.validation_arrays[0]) == {"x"}


# ---- new data read as the training data was (what evaluate() uses) -------------------------


def test_prepare_like_reads_new_rows_with_the_training_kinds_and_classes():
    train = _birds(40, 0.0, 0)
    train.loc[0, "bill"] = np.nan
    spec = data.prepare(train, target="species", missing="impute").spec
    new = _birds(8, 0.0, 2).assign(row_id=range(8))  # an extra column is ignored
    new["bill"] = new["bill"].astype(object)
    new.loc[1, "bill"] = "?"
    with pytest.warns(DataWarning, match="data column 'bill': 1 cell is not a number"):
        x, y = data.prepare_like(new, spec)
    assert set(x) == {"bill", "island"} and x["bill"].shape == (7, 1)  # the '?' row dropped
    assert [spec.class_names[i] for i in y[:3]] == ["Adelie", "Chinstrap", "Gentoo"]
    with pytest.warns(DataWarning):
        imputed, _ = data.prepare_like(new, spec, missing="impute")
    assert imputed["bill"][1, 0] == pytest.approx(np.median(spec.sample["bill"]))
    with pytest.raises(ValueError, match="data lacks the column\\(s\\) 'island'"):
        data.prepare_like(new.drop(columns="island"), spec)
    with pytest.raises(ValueError, match="class\\(es\\) Emperor never seen in training"):
        data.prepare_like(_birds(8, 0.0, 2).assign(species="Emperor"), spec)


def test_prepare_like_for_arrays_and_whole_number_classes():
    frame = pd.DataFrame({"x": np.arange(12.0), "stars": [1, 2, 3] * 4})
    spec = data.prepare(frame, target="stars").spec
    _, y = data.prepare_like(pd.DataFrame({"x": [0.0, 1.0], "stars": [3.0, 1.0]}), spec)
    assert y.tolist() == [2, 0]
    x_train, y_train = np.zeros((10, 4)), np.arange(10) % 2
    spec = data.prepare((x_train, y_train)).spec
    x, y = data.prepare_like((np.ones((3, 4)), np.array([1, 0, 1])), spec)
    assert x.shape == (3, 4) and y.tolist() == [1.0, 0.0, 1.0]


def test_text_classes_lose_their_spaces_and_case_variants_are_named():
    table = pd.DataFrame({"x": np.arange(50.0), "label": ["yes", "Yes", "no", "no ", " no"] * 10})
    with pytest.warns(DataWarning, match=r"upper/lower case \('Yes'/'yes'\)"):
        spec = data.prepare(table, target="label").spec
    assert spec.class_names == ("Yes", "no", "yes")
