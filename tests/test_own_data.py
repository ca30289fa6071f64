"""A user's own messy table and own Keras model, end to end, as the README shows them."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import requests
from conftest import REPO_ROOT, ServerProcess

import tfkit
from tfkit import _compat

TARGET = "Sale Price ($)"
QUIET = {"verbose": 0, "logdir": None, "export": None}
CLI_SECONDS = 300


def houses(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A house-price table as users have them: prices 1e5-1e6, areas 1e3, junk cells."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(600, 4000, n).round()
    year = rng.integers(1920, 2022, n).astype(float)
    hood = rng.choice(["Old Town", "Hillside", "Riverside", "Größe Au"], n)
    premium = pd.Series(hood).map(
        {"Old Town": 0, "Hillside": 90_000, "Riverside": 40_000, "Größe Au": 150_000}
    ).to_numpy()
    price = 60_000 + 150 * area + 900 * (year - 1920) + premium + rng.normal(0, 15_000, n)
    table = pd.DataFrame({
        "Lot Area": [f"{a:,.0f}" for a in area],  # "2,766"
        "Year Built": year,
        "Neighborhood": hood,
        TARGET: (price / 100).round() * 100,
    })
    table.loc[[3, n // 6, n // 2], "Lot Area"] = ["?", "N/A", "-"]
    table.loc[n // 7, "Year Built"] = np.nan
    return table


def clean_rows(table: pd.DataFrame, with_target: bool = False) -> dict[str, list]:
    """The table's whole rows as a user would send them: numbers as numbers, names as written."""
    rows = table.copy()
    rows["Lot Area"] = pd.to_numeric(rows["Lot Area"].str.replace(",", ""), errors="coerce")
    rows = rows.dropna()
    columns = ["Lot Area", "Year Built", "Neighborhood"] + ([TARGET] if with_target else [])
    return {c: rows[c].tolist() for c in columns}


@pytest.fixture(scope="module")
def house_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("houses") / "houses.csv"
    houses().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def house_run(house_csv, tmp_path_factory):
    """The default run on the messy CSV, exported and checkpointed."""
    root = tmp_path_factory.mktemp("house-run")
    return tfkit.train(str(house_csv), target=TARGET, export=str(root / "models"),
                       logdir=str(root / "logs"), run_name="houses", verbose=0)


# --- 2. scale: a default run learns dollars, and answers in dollars -----------------------------

def test_default_run_beats_predicting_the_mean_by_half(house_run):
    holdout = houses(200, seed=1)
    scores = tfkit.evaluate(house_run, holdout)
    y = holdout[TARGET].to_numpy()
    mean_only = float(np.mean(np.abs(y - house_run.spec.target_scale[0])))
    assert scores["mae"] <= 0.5 * mean_only, (scores, mean_only)
    assert house_run.history["val_mae"][-1] <= 0.5 * mean_only


def test_predictions_come_back_in_the_targets_units(house_run):
    rows = clean_rows(houses(50, seed=2), with_target=True)
    predicted = house_run.predict(rows).reshape(-1)
    truth = np.array(rows[TARGET])
    assert 1e5 < np.median(predicted) < 1e6
    assert np.corrcoef(predicted, truth)[0, 1] > 0.9
    assert np.mean(np.abs(predicted - truth)) < 0.2 * np.mean(np.abs(truth - truth.mean()))


def test_served_model_answers_dollars_for_rows_keyed_by_the_original_names(house_run, tmp_path):
    repository = os.path.dirname(house_run.export_path)
    server = ServerProcess(["--models", os.path.dirname(repository), "--workers", "1"],
                           tmp_path / "server.log")
    try:
        server.wait_ready("/v1/models/houses")
        rows = clean_rows(houses(5, seed=3))
        instances = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(),
                                                                            strict=True)]
        answer = requests.post(f"{server.url}/v1/models/houses:predict",
                               json={"instances": instances}, timeout=30)
        assert answer.status_code == 200, answer.text
        served = np.array(answer.json()["predictions"], dtype=np.float64).reshape(-1)
        expected = house_run.predict(rows).reshape(-1)
        np.testing.assert_allclose(served, expected, rtol=1e-5)
        assert np.all((served > 5e4) & (served < 2e6))
        metadata = requests.get(f"{server.url}/v1/models/houses/metadata", timeout=30).json()
        inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert {"Lot Area", "Year Built", "Neighborhood"} <= set(inputs["inputs"])
    finally:
        server.stop()


# --- 4. messy cells and the inferred task -------------------------------------------------------

def test_junk_cells_keep_the_column_numeric_with_one_warning(capsys):
    with pytest.warns(tfkit.DataWarning, match=r"'Lot Area'.*3 cells.*'\?'") as caught:
        result = tfkit.train(houses(), target=TARGET, epochs=1, verbose=2, logdir=None,
                             export=None)
    assert len([w for w in caught if "'Lot Area'" in str(w.message)]) == 1
    assert "Lot Area" in result.spec.numeric_columns
    out = capsys.readouterr().out
    assert re.search(r"task: regression .*task='multiclass'", out), out


def test_column_types_turns_a_number_column_into_categories():
    table = houses()
    table["Year Built"] = table["Year Built"].fillna(1990)
    result = tfkit.train(table, target=TARGET, epochs=1, column_types={"Year Built":
                                                                       "categorical"}, **QUIET)
    assert "Year Built" in result.spec.string_columns


# --- 1. any Keras model, on every strategy ------------------------------------------------------

class TwoLayers(keras.Model):
    def __init__(self, units: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def _sequential(built: bool) -> keras.Model:
    layers = [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    return keras.Sequential(([keras.Input((3,))] if built else []) + layers)


def _functional() -> keras.Model:
    x = keras.Input((3,))
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(x)))


def _subclassed(built: bool) -> keras.Model:
    model = TwoLayers()
    if built:
        model(np.zeros((1, 3), np.float32))
    return model


def _compiled() -> keras.Model:
    model = _sequential(built=True)
    model.compile(loss="mae", metrics=["mse"])
    return model


MODEL_KINDS = {
    "sequential": lambda: _sequential(True),
    "sequential_unbuilt": lambda: _sequential(False),
    "functional": _functional,
    "subclassed": lambda: _subclassed(True),
    "subclassed_unbuilt": lambda: _subclassed(False),
    "compiled": _compiled,
    "callable": lambda: (lambda spec: _functional()),
}


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.random((256, 3)).astype(np.float32)
    return x, x @ np.array([1.0, 2.0, 3.0]) * 1e5 + 3e5


# Every kind on one device and on two replicas; "auto" (one device on this CPU-only
# machine) and "mirrored" (the same two logical CPUs as cpu:2 here) take other routes
# through distribute.resolve to those same strategies, so they get a built and an unbuilt
# kind each rather than all seven again.
STRATEGY_RUNS = [(kind, strategy) for strategy in ("cpu", "cpu:2") for kind in sorted(MODEL_KINDS)]
STRATEGY_RUNS += [(kind, strategy) for strategy in ("auto", "mirrored")
                  for kind in ("sequential", "subclassed_unbuilt")]


@pytest.mark.parametrize(("kind", "strategy"), STRATEGY_RUNS)
def test_any_keras_model_trains_on_every_strategy(kind, strategy, arrays):
    given = MODEL_KINDS[kind]()
    before = given.get_weights() if isinstance(given, keras.Model) else []
    result = tfkit.train(arrays, model=given, epochs=4, strategy=strategy, **QUIET)
    assert result.strategy.num_replicas_in_sync == (2 if strategy in ("mirrored", "cpu:2") else 1)
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    predicted = result.predict(arrays[0][:4]).reshape(-1)
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)  # dollars, not std units
    if before:  # built before train(): copied into the scope, the user's object left as it was
        for kept, now in zip(before, given.get_weights(), strict=True):
            np.testing.assert_array_equal(kept, now)
    elif isinstance(given, keras.Model):  # built in the scope: it is the model trained
        mean, std = result.spec.target_scale
        mine = keras.ops.convert_to_numpy(given(arrays[0][:4])).reshape(-1)
        np.testing.assert_allclose(mine * std + mean, predicted, rtol=1e-4)
    if kind == "compiled":
        assert set(result.history) == {"loss", "mse", "val_loss", "val_mse"}


@pytest.mark.parametrize("strategy", ["cpu", "cpu:2"])
def test_a_classifier_built_before_train_is_trained_in_place(strategy, arrays):
    given = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    x, y = arrays
    result = tfkit.train((x, y > np.median(y)), model=given, epochs=15, learning_rate=0.01,
                         strategy=strategy, **QUIET)
    assert result.spec.task == "binary"
    assert result.history["val_accuracy"][-1] > 0.8
    np.testing.assert_allclose(keras.ops.convert_to_numpy(given(x[:8])),
                               result.predict(x[:8]), rtol=1e-5)


def test_cpu_n_after_tensorflow_started_says_what_to_do(arrays):
    with pytest.raises(ValueError, match=r"cpu:3.*fresh process"):
        tfkit.train(arrays, strategy="cpu:3", epochs=1, **QUIET)


@pytest.mark.parametrize("loss", ["huber", keras.losses.Huber()])
@pytest.mark.parametrize("metrics", [["mae", "mse"], [keras.metrics.RootMeanSquaredError()]])
def test_loss_and_metrics_take_keras_names_and_objects(loss, metrics, arrays):
    result = tfkit.train(arrays, loss=loss, metrics=metrics, epochs=3, **QUIET)
    names = [m if isinstance(m, str) else m.name for m in metrics]
    assert set(result.history) == {"loss", "val_loss", *names, *(f"val_{n}" for n in names)}
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]


def test_a_loss_function_of_ones_own_may_branch_in_python_on_a_tensor(arrays):
    """Keras's own losses are traced as written; a user's own goes through AutoGraph, which
    turns this `if` into a graph condition (as written, it raises OperatorNotAllowedInGraph)."""
    branches = []

    def capped_squares(y_true, y_pred):
        error = y_pred - keras.ops.cast(y_true, y_pred.dtype)
        branches.append("traced")
        if keras.ops.max(keras.ops.abs(error)) > 1e6:  # never true here: the plain squares
            return keras.ops.minimum(keras.ops.square(error), 1e12)
        return keras.ops.square(error)

    mine = tfkit.train(arrays, loss=capped_squares, epochs=3, seed=0, **QUIET)
    theirs = tfkit.train(arrays, loss="mse", epochs=3, seed=0, **QUIET)
    assert branches  # traced through the function given, not replaced by a built-in
    np.testing.assert_allclose(mine.history["loss"], theirs.history["loss"], rtol=1e-5)


def test_a_table_model_takes_named_columns(arrays):
    table = houses()
    columns = {name: keras.Input(shape=(1,), name=name) for name in ("Lot Area", "Year Built")}
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()(
        [keras.layers.Normalization(mean=2000, variance=1e6)(columns["Lot Area"]),
         keras.layers.Normalization(mean=1970, variance=900)(columns["Year Built"])]))
    own = keras.Model(columns, keras.layers.Dense(1)(hidden))
    result = tfkit.train(table.drop(columns=["Neighborhood"]), target=TARGET, model=own,
                         epochs=5, **QUIET)
    assert result.history["val_mae"][-1] < result.history["val_mae"][0]


def test_a_one_input_model_gets_the_number_columns_stacked():
    table = houses().drop(columns=["Neighborhood"])
    own = keras.Sequential([keras.Input((2,)), keras.layers.Normalization(mean=[2000, 1970],
                                                                          variance=[1e6, 900]),
                            keras.layers.Dense(1)])
    result = tfkit.train(table, target=TARGET, model=own, epochs=2, **QUIET)
    rows = clean_rows(houses(40, seed=5))
    answers = result.predict(rows)
    assert answers.shape == (len(rows["Lot Area"]), 1) and np.isfinite(answers).all()
    # A Sequential without an Input gets the same stacked columns.
    bare = keras.Sequential([keras.layers.Normalization(mean=[2000, 1970], variance=[1e6, 900]),
                             keras.layers.Dense(1)])
    result = tfkit.train(table, target=TARGET, model=bare, epochs=2, **QUIET)
    assert result.history["val_mae"][-1] < result.history["val_mae"][0]
    assert result.predict(rows).shape == answers.shape
    with pytest.raises(ValueError, match=r"text column\(s\) 'Neighborhood'"):
        tfkit.train(houses(), target=TARGET, model=keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1)]), epochs=1, **QUIET)


# --- 5. nothing lost ----------------------------------------------------------------------------

def test_an_unwritable_export_folder_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=re.escape(f"export='{blocker}/models'")):
        tfkit.train(houses(), target=TARGET, export=str(blocker / "models"), logdir=None,
                    verbose=2)
    assert "epoch 1/" not in capsys.readouterr().out


def test_a_finished_run_is_exported_later_without_training_again(house_csv, tmp_path, capsys):
    options = {"target": TARGET, "epochs": 3, "logdir": str(tmp_path / "logs"),
               "run_name": "later", "verbose": 2}
    first = tfkit.train(str(house_csv), export=None, **options)
    capsys.readouterr()
    again = tfkit.train(str(house_csv), export=str(tmp_path / "models"), **options)
    out = capsys.readouterr().out
    assert "epoch 1/" not in out and "already finished" in out
    assert again.export_path == str(tmp_path / "models" / "houses" / "1")
    rows = clean_rows(houses(4, seed=6))
    np.testing.assert_allclose(again.predict(rows), first.predict(rows), rtol=1e-6)
    path = tfkit.export(first, str(tmp_path / "repo"))
    assert os.path.exists(os.path.join(path, "saved_model.pb"))


# --- 6. validation data, evaluation and weights -------------------------------------------------

def test_validation_data_and_evaluate_take_the_same_kinds(house_csv, tmp_path, house_run):
    holdout = houses(100, seed=4)
    holdout_csv = tmp_path / "holdout.csv"
    holdout.to_csv(holdout_csv, index=False)
    result = tfkit.train(str(house_csv), target=TARGET, validation_data=str(holdout_csv),
                         epochs=2, **QUIET)
    assert result.spec.n_val == len(holdout.dropna()) - 3  # the three junk 'Lot Area' cells
    by_result = tfkit.evaluate(house_run, holdout)
    by_csv = tfkit.evaluate(house_run, str(holdout_csv))
    assert by_csv == pytest.approx(by_result, rel=1e-5)
    by_export = tfkit.evaluate(house_run.export_path, holdout, target=TARGET)
    by_model = tfkit.evaluate(house_run.model, holdout, target=TARGET)
    assert by_result["count"] == by_export["count"] == by_model["count"] == 96
    assert by_result["mae"] == pytest.approx(by_export["mae"], rel=1e-4)
    assert by_result["mae"] == pytest.approx(by_model["mae"], rel=1e-4)
    with pytest.raises(ValueError, match="Neighborhood"):
        tfkit.train(str(house_csv), target=TARGET, validation_data=holdout.drop(
            columns=["Neighborhood"]), epochs=1, **QUIET)


def test_class_weight_and_a_sample_weight_column_change_what_is_learned():
    table = houses()
    table["expensive"] = np.where(table[TARGET] > table[TARGET].quantile(0.8), "yes", "no")
    table = table.drop(columns=[TARGET])
    plain = tfkit.train(table, target="expensive", epochs=3, **QUIET)
    weighted = tfkit.train(table, target="expensive", epochs=3, class_weight={"yes": 4.0},
                           **QUIET)
    rows = clean_rows(houses(40, seed=7))
    assert weighted.predict(rows).mean() > plain.predict(rows).mean()
    table["w"] = np.where(table["expensive"] == "yes", 4.0, 1.0)
    by_column = tfkit.train(table, target="expensive", epochs=3, sample_weight="w", **QUIET)
    assert "w" not in by_column.spec.columns
    np.testing.assert_allclose(by_column.predict(rows), weighted.predict(rows), rtol=1e-5)


# --- 9, 10. the CLI and the README as a user runs them ------------------------------------------

def test_cli_trains_on_a_messy_csv_with_every_new_flag(house_csv, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tfkit.cli", "train", "--data", str(house_csv), "--target", TARGET,
         "--column-types", '{"Year Built": "numeric"}', "--model-kwargs", '{"hidden": [16]}',
         "--loss", "huber", "--metrics", "mae,mse", "--epochs", "2", "--export", "none",
         "--logdir", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=CLI_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("\n{\n") + 1:])
    assert set(report["final"]) == {"loss", "mae", "mse", "val_loss", "val_mae", "val_mse"}
    assert "epoch 2/2" in done.stdout


def _readme_section(title: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    return text[start:text.index("\n## ", start + 1)]


def test_readme_own_data_runs_as_written(tmp_path):
    section = _readme_section("Your own data")
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "houses.py").write_text(script)
    done = subprocess.run([sys.executable, "houses.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=CLI_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task: regression" in done.stdout and "epoch 30/30" in done.stdout
    predicted = float(re.findall(r"\[\[?([0-9.e+]+)\]?\]", done.stdout)[-1])
    assert 2e5 < predicted < 7e5  # 2,100 sq ft from 1995 on the hill: dollars
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    request = shell.split("&\n", 1)[1].replace("\\\n", " ")
    assert "tfkit serve --models models --port 8501 &" in shell
    server = ServerProcess(["--models", str(tmp_path / "models"), "--workers", "1"],
                           tmp_path / "server.log")
    try:
        server.wait_ready("/v1/models/houses")
        request = request.replace("localhost:8501", f"127.0.0.1:{server.port}")
        if shutil.which("curl"):
            answer = subprocess.run(request, shell=True, capture_output=True, text=True,
                                    timeout=60).stdout
        else:  # the same request without curl
            body = re.search(r"-d '(.*)'", request).group(1)
            answer = requests.post(f"{server.url}/v1/models/houses:predict", data=body,
                                   timeout=60).text
        served = json.loads(answer)["predictions"][0]
        assert served == pytest.approx(predicted, rel=1e-4)
    finally:
        server.stop()


# --- what a new user ran into -------------------------------------------------------------------

def test_an_adapted_normalization_keeps_its_statistics_in_the_strategys_copy(arrays):
    x, y = arrays
    norm = keras.layers.Normalization()
    norm.adapt(x * 1000)
    given = keras.Sequential([keras.Input((3,)), norm, keras.layers.Dense(1)])
    result = tfkit.train((x * 1000, y), model=given, epochs=1, **QUIET)
    copied = next(layer for layer in result.model.layers if isinstance(
        layer, keras.layers.Normalization))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copied.mean),
                               keras.ops.convert_to_numpy(norm.mean), rtol=1e-6)


def _labels_as(kind: str, x: np.ndarray, y: np.ndarray):
    """(X, y) as a user hands it over: arrays, or a batched tf.data.Dataset."""
    if kind == "arrays":
        return x, y
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.parametrize("kind", ["arrays", "dataset"])
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_labels_in_a_column_are_one_label_a_row(kind, task):
    """y of shape (N, 1), as Keras users often keep it, trains, validates and evaluates as
    y of shape (N,) does: the same losses and metrics, none computed across rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    if task == "binary":
        y = (y > 0).astype(np.int64)
    runs = {}
    for shape in ("flat", "column"):
        labels = y if shape == "flat" else y.reshape(-1, 1)
        result = tfkit.train(_labels_as(kind, x[:180], labels[:180]), epochs=2, seed=0,
                             validation_data=_labels_as(kind, x[180:], labels[180:]), **QUIET)
        runs[shape] = result.history, tfkit.evaluate(result, (x[180:], labels[180:]))
    (flat, flat_eval), (column, column_eval) = runs["flat"], runs["column"]
    assert flat.keys() == column.keys()
    for name in flat:
        np.testing.assert_allclose(column[name], flat[name], rtol=1e-5, err_msg=name)
    metric = "val_accuracy" if task == "binary" else "val_mae"
    assert column_eval[metric.removeprefix("val_")] == pytest.approx(column[metric][-1], rel=1e-4)
    assert column_eval["count"] == flat_eval["count"] == 60


def test_labels_of_several_columns_are_refused_with_the_shape_and_a_hint():
    x = np.zeros((10, 3), np.float32)
    one_hot = np.eye(2, dtype=np.int64)[np.arange(10) % 2]
    with pytest.raises(ValueError, match=re.escape(
            "y must hold one label per row, shape (10,) or (10, 1); got shape (10, 2); "
            "one-hot labels? pass y.argmax(axis=1)")):
        tfkit.train((x, one_hot), epochs=1, **QUIET)


@pytest.mark.parametrize("missing", ["impute", "drop"])
def test_evaluate_fills_or_drops_missing_cells_as_the_run_did(missing):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=200), "b b": rng.normal(size=200)})
    table["y"] = table["a"] - table["b b"]
    table.loc[:49, "a"] = np.nan  # 50 rows with a missing cell
    result = tfkit.train(table, target="y", missing=missing, epochs=2, seed=0, **QUIET)
    scores = tfkit.evaluate(result, table)
    kept = table if missing == "impute" else table.dropna()
    assert scores["count"] == len(kept) == (200 if missing == "impute" else 150)
    # The same rows through result.predict, which fills as the run did (or gets whole rows).
    predicted = result.predict(kept.drop(columns="y")).reshape(-1)
    assert scores["mae"] == pytest.approx(float(np.mean(np.abs(predicted - kept["y"]))),
                                          rel=1e-4)


@pytest.mark.parametrize(("classes", "units", "needs"), [
    (3, 2, 'needs 3 (a final Dense(3, activation="softmax"), a probability for each class: '
           "0, 1, 2); change its last layer, or pass task= if the task was read wrongly"),
    (3, 1, 'needs 3 (a final Dense(3, activation="softmax")'),
    (2, 2, "needs 1 (a final Dense(1, activation=\"sigmoid\"): the probability of '1' against "
           "'0'); change its last layer, or pass task=\"multiclass\" for two softmax units"),
])
def test_a_model_whose_outputs_do_not_fit_the_classes_is_refused_before_training(
        classes, units, needs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.arange(60) % classes
    given = keras.Sequential([keras.layers.Dense(units, activation="softmax")])
    with pytest.raises(ValueError, match=re.escape(
            f"answers {units} value(s) per row (output shape (None, {units})), but the task "
            f"is {'binary' if classes == 2 else 'multiclass'}, which {needs}")):
        tfkit.train((x, y), model=given, epochs=1, **QUIET)
    if classes == 2:  # as the message says
        tfkit.train((x, y), model=given, task="multiclass", epochs=1, **QUIET)


def test_a_regressors_width_is_checked_and_so_is_a_spare_class_unit(arrays):
    with pytest.raises(ValueError, match=re.escape(
            "answers 3 value(s) per row (output shape (None, 3)), but the task is regression, "
            "which needs 1 (a final Dense(1)); change its last layer")):
        tfkit.train(arrays, model=keras.Sequential([keras.layers.Dense(3)]), epochs=1, **QUIET)
    x = arrays[0]
    four = keras.Sequential([keras.layers.Dense(4, activation="softmax")])  # no class for one
    with pytest.raises(ValueError, match=re.escape(
            "answers 4 value(s) per row (output shape (None, 4)), but the task is multiclass, "
            'which needs 3 (a final Dense(3, activation="softmax")')):
        tfkit.train((x, np.arange(len(x)) % 3), model=four, epochs=1, **QUIET)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_classifier_that_answers_logits_gets_a_note_and_the_loss_it_says_works(
        classes, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.5, 0.5][:classes - 1])
    units, last, name = ((1, "sigmoid", "BinaryCrossentropy") if classes == 2
                         else (3, "softmax", "SparseCategoricalCrossentropy"))
    options = {**QUIET, "verbose": 1, "epochs": 10, "learning_rate": 0.05, "seed": 0}
    tfkit.train((x, y), model=keras.Sequential([keras.layers.Dense(units)]), **options)
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    task = "binary" if classes == 2 else "multiclass"
    assert len(note) == 1 and note[0].endswith(
        f"which are not probabilities; tfkit's loss for a {task} task takes probabilities, "
        f"so end the model with activation={last!r}, or pass "
        f"loss=keras.losses.{name}(from_logits=True)"), note
    loss = getattr(keras.losses, name)(from_logits=True)
    logits = tfkit.train((x, y), model=keras.Sequential([keras.layers.Dense(units)]),
                         loss=loss, **options)
    ending = tfkit.train((x, y), model=keras.Sequential([keras.layers.Dense(units,
                                                                             activation=last)]),
                         **options)
    assert "note:" not in capsys.readouterr().out
    assert logits.history["val_accuracy"][-1] > 0.85
    assert ending.history["val_accuracy"][-1] > 0.85


def test_a_text_column_with_a_value_a_row_is_warned_of_with_what_to_do():
    rng = np.random.default_rng(0)
    n = 120
    table = pd.DataFrame({
        "Listed On": pd.date_range("2020-01-01", periods=n).strftime("%d %b %Y"),
        "Sold": pd.date_range("2021-03-01", periods=n, freq="D"),  # datetime64
        "Listing ID": [f"LX-{i:05d}" for i in rng.permutation(n)],
        "Street": rng.choice(["Main St", "High St", "Elm Rd"], n),  # a real category
        "Area": rng.normal(size=n),
    })
    table["y"] = 2 * table["Area"]
    with pytest.warns(tfkit.DataWarning) as caught:
        tfkit.train(table, target="y", epochs=1, **QUIET)
    warned = sorted(str(w.message) for w in caught if "distinct values" in str(w.message))
    dates = ("as a category, any value not seen in training is unknown to the model; they look "
             "like dates: turn them into numbers (e.g. the year, or days since a start) in a "
             "column of their own")
    assert warned == [
        f"column 'Listed On' has {n} distinct values in {n} rows: {dates}",
        f"column 'Listing ID' has {n} distinct values in {n} rows: as a category, any value "
        "not seen in training is unknown to the model; if it is an id or free text, drop it "
        "from the table",
        f"column 'Sold' has {n} distinct values in {n} rows: {dates}",
    ]
    with warnings.catch_warnings(record=True) as caught:  # said to be categories: no word
        warnings.simplefilter("always")
        tfkit.train(table, target="y", epochs=1, column_types={
            "Listed On": "categorical", "Sold": "categorical", "Listing ID": "categorical"},
            **QUIET)
    assert not [w for w in caught if "distinct values" in str(w.message)]


def test_one_hot_labels_in_a_dataset_are_refused_with_a_hint():
    import tensorflow as tf

    x = np.zeros((12, 3), np.float32)
    one_hot = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    with pytest.raises(ValueError, match=re.escape(
            "data: a tf.data.Dataset's labels must be one label per example; its labels have "
            "shape (3,) each (one-hot labels? map them to class ids with "
            "tf.argmax(label, axis=-1))")):
        tfkit.train(tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(4), epochs=1,
                    **QUIET)


def test_a_misspelt_model_kwarg_is_refused_naming_what_the_builder_takes(arrays):
    with pytest.raises(ValueError, match=re.escape(
            "model_kwargs 'hiden': 'mlp' takes no such argument; did you mean 'hidden'? "
            "it takes: hidden, dropout, l2")):
        tfkit.train(arrays, model_kwargs={"hiden": [32]}, epochs=1, **QUIET)

    def wide(spec, units=8):
        return keras.Sequential([keras.layers.Dense(units), keras.layers.Dense(1)])

    with pytest.raises(ValueError, match=re.escape(
            "model_kwargs 'width': 'wide' takes no such argument; it takes: units")):
        tfkit.train(arrays, model=wide, model_kwargs={"width": 4}, epochs=1, **QUIET)
    tfkit.train(arrays, model=wide, model_kwargs={"units": 4}, epochs=1, **QUIET)


def test_predict_takes_rows_as_a_list_of_dicts_or_a_csv_path(tmp_path):
    table = houses(120, seed=3)
    result = tfkit.train(table, target=TARGET, epochs=1, seed=0, **QUIET)
    rows = table.drop(columns=[TARGET]).dropna().head(5)
    rows = rows[~rows["Lot Area"].isin(["?", "N/A", "-"])]
    expected = result.predict(rows)
    rows.to_csv(tmp_path / "new rows.csv", index=False)
    np.testing.assert_allclose(result.predict(rows.to_dict("records")), expected, rtol=1e-6)
    np.testing.assert_allclose(result.predict(str(tmp_path / "new rows.csv")), expected,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="must be a DataFrame, a dict of column values, a "
                                         "list of row dicts or a CSV path; got int"):
        result.predict(3)


def test_evaluate_on_an_export_takes_columns_named_in_any_language(tmp_path):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"Größe (m²)": rng.normal(size=120), "Ask Price": rng.normal(size=120),
                          "東京": rng.choice(["ja", "nein"], 120)})
    table["y"] = 2 * table["Größe (m²)"] + (table["東京"] == "ja")
    result = tfkit.train(table, target="y", epochs=2, seed=0, verbose=0, logdir=None,
                         export=str(tmp_path / "models"))
    from_result = tfkit.evaluate(result, table)
    from_export = tfkit.evaluate(result.export_path, table, target="y")
    assert from_export["count"] == from_result["count"] == 120
    assert from_export["mae"] == pytest.approx(from_result["mae"], rel=1e-4)


def test_a_new_version_that_answers_differently_is_warned_of(tmp_path, caplog):
    rng = np.random.default_rng(0)
    flats = pd.DataFrame({"Area (m²)": rng.uniform(30, 200, 120)})
    flats["Price"] = 3000 * flats["Area (m²)"]
    flats["Kind"] = np.where(flats["Area (m²)"] > 100, "house", "flat")
    options = {"epochs": 1, "verbose": 0, "logdir": None, "export": str(tmp_path)}
    with caplog.at_level("WARNING", logger="tfkit.export"):
        tfkit.train(flats, target="Price", **options)
        tfkit.train(flats, target="Price", **options)  # the same model again: no warning
        assert not caplog.records
        third = tfkit.train(flats, target="Kind", **options)
    assert third.export_path.endswith(os.path.join("data", "3"))
    assert [r.getMessage() for r in caplog.records] == [
        "data version 3 has inputs 'Area (m²)', 'Price' where version 2 had 'Area (m²)', "
        "'Kind'; outputs 'class_ids', 'classes', 'probabilities' where version 2 had "
        "'predictions': a request for 'data' without a version is answered by version 3, "
        "which old clients may not fit; if it is another model, export it under a name of "
        "its own (model_name= / --model-name)"]
    arrays = tfkit.train((flats[["Area (m²)"]].to_numpy(), flats["Price"].to_numpy()),
                         **{**options, "export": str(tmp_path / "arrays")})
    assert arrays.export_path == str(tmp_path / "arrays" / "data" / "1")  # arrays: "data" too


def test_a_model_of_named_inputs_must_take_the_tables_columns_one_for_one():
    """Keras would feed a dict with extra keys by position: 'Rooms' would get 'City'."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"Area": rng.normal(size=60), "City": rng.choice(["A", "B"], 60),
                          "Rooms": rng.normal(size=60)})
    table["y"] = 2 * table["Area"]

    def named(*columns):
        inputs = {c: keras.Input((1,), name=c) for c in columns}
        joined = keras.layers.Concatenate()(list(inputs.values()))
        return keras.Model(inputs, keras.layers.Dense(1)(joined))

    with pytest.raises(ValueError, match=re.escape(
            "takes the columns 'Area', 'Rooms', but the table also has 'City': drop those "
            "from the table (table.drop(columns=['City'])) or give the model an input for each")):
        tfkit.train(table, target="y", model=named("Area", "Rooms"), epochs=1, **QUIET)
    with pytest.raises(ValueError, match=re.escape(
            "takes the column(s) 'Floor', which the table lacks; its columns (the target 'y' "
            "aside) are: 'Area', 'Rooms'")):
        tfkit.train(table.drop(columns=["City"]), target="y", model=named("Area", "Floor"),
                    epochs=1, **QUIET)
    tfkit.train(table.drop(columns=["City"]), target="y", model=named("Area", "Rooms"),
                epochs=1, **QUIET)
    area, rooms = keras.Input((1,), name="Area"), keras.Input((1,), name="Rooms")
    listed = keras.Model([area, rooms], keras.layers.Dense(1)(
        keras.layers.Concatenate()([area, rooms])))
    with pytest.raises(ValueError, match=re.escape(
            "takes a list of 2 inputs; a table's model takes a dict of its columns")):
        tfkit.train(table.drop(columns=["City"]), target="y", model=listed, epochs=1, **QUIET)


VOCABULARY_LAYERS = (keras.layers.StringLookup, keras.layers.TextVectorization)


class CityModel(keras.Model):
    """A subclassed model around an adapted lookup."""

    def __init__(self, lookup=None, **kwargs):
        super().__init__(**kwargs)
        self.lookup = lookup or keras.layers.StringLookup(output_mode="one_hot")
        self.out = keras.layers.Dense(1, activation="sigmoid")

    def call(self, inputs):
        return self.out(self.lookup(inputs["City Name"]))

    def get_config(self):
        return {**super().get_config(), "lookup": keras.layers.serialize(self.lookup)}

    @classmethod
    def from_config(cls, config):
        return cls(lookup=keras.layers.deserialize(config.pop("lookup")), **config)


def _adapted_city_model(kind: str, cities: np.ndarray) -> keras.Model:
    if kind == "text_vectorization":
        words = keras.layers.TextVectorization(output_sequence_length=2)
        words.adapt(cities)
        city = keras.Input((1,), name="City Name", dtype="string")
        x = keras.layers.Embedding(words.vocabulary_size(), 4)(words(city))
        x = keras.layers.GlobalAveragePooling1D()(x)
        return keras.Model({"City Name": city}, keras.layers.Dense(1, activation="sigmoid")(x))
    lookup = keras.layers.StringLookup(output_mode="int" if kind == "int" else "one_hot")
    lookup.adapt(cities)
    if kind == "subclassed":
        model = CityModel(lookup)
        model({"City Name": cities[:2].reshape(-1, 1)})  # built, before train()
        return model
    if kind == "subclassed_on_an_input":  # built on a keras.Input: it has an input, as
        model = CityModel(lookup)        # a functional model has, but a call of its own
        model({"City Name": keras.Input((1,), name="City Name", dtype="string")})
        return model
    city = keras.Input((1,), name="City Name", dtype="string")
    x = lookup(city)
    if kind == "int":
        x = keras.layers.Flatten()(keras.layers.Embedding(lookup.vocabulary_size(), 4)(x))
    return keras.Model({"City Name": city}, keras.layers.Dense(1, activation="sigmoid")(x))


@pytest.mark.parametrize(
    "kind", ["int", "one_hot", "subclassed", "subclassed_on_an_input", "text_vectorization"])
def test_an_adapted_vocabulary_is_kept_in_the_strategys_copy(kind):
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"City Name": rng.choice(["Zürich", "Berlin", "東京", "Lyon"], 240)})
    table["Coastal?"] = np.where(table["City Name"].isin(["東京", "Lyon"]), "yes", "no")
    given = _adapted_city_model(kind, table["City Name"].to_numpy())
    adapted = next(layer for layer in _compat.all_layers(given)
                   if isinstance(layer, VOCABULARY_LAYERS)).get_vocabulary()
    result = tfkit.train(table, target="Coastal?", model=given, epochs=30, batch_size=32,
                         learning_rate=0.05, seed=0, **QUIET)
    copied = next(layer for layer in _compat.all_layers(result.model)
                  if isinstance(layer, VOCABULARY_LAYERS))
    assert copied.get_vocabulary() == adapted
    assert result.history["val_accuracy"][-1] == 1.0, result.history
    assert result.spec.class_names == ("no", "yes")  # binary: one probability, of "yes"
    answers = result.predict(pd.DataFrame({"City Name": ["Lyon", "Berlin"]}))[:, 0]
    assert answers[0] > 0.9 > 0.1 > answers[1], answers


class InLayer(keras.layers.Layer):
    """A layer of the user's holding a lookup, which a copy cannot reach."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lookup = keras.layers.StringLookup(output_mode="one_hot")

    def call(self, x):
        return self.lookup(x)


@pytest.mark.parametrize("where", ["inside_a_layer", "tf_idf"])
def test_a_vocabulary_that_cannot_be_carried_is_refused_with_what_to_pass(where):
    cities = np.array(["Zürich", "Berlin", "Lyon"] * 20)
    city = keras.Input((1,), name="City Name", dtype="string")
    if where == "inside_a_layer":
        layer = InLayer()
        layer.lookup.adapt(cities)
    else:
        layer = keras.layers.StringLookup(output_mode="tf_idf")
        layer.adapt(cities)
    given = keras.Model({"City Name": city}, keras.layers.Dense(1)(layer(city)))
    table = pd.DataFrame({"City Name": cities, "y": (cities == "Lyon").astype(float)})
    with pytest.raises(ValueError, match=r"(?s)could not be copied into it \(.+\)\. Pass it "
                                         r"unbuilt .+ or pass a function that builds it"):
        tfkit.train(table, target="y", model=given, epochs=1, **QUIET)


def test_a_compiled_optimizer_is_used_unless_train_names_one(arrays, capsys):
    given = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    given.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    start = given.get_weights()
    result = tfkit.train(arrays, model=given, epochs=2, **{**QUIET, "verbose": 2})
    assert "the compiled model's SGD (learning rate 0)" in capsys.readouterr().out
    for before, after in zip(start, result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # a rate of 0 moves nothing
    moved = tfkit.train(arrays, model=given, epochs=2, optimizer="adam", learning_rate=0.01,
                        **QUIET)
    assert not np.array_equal(start[0], moved.model.get_weights()[0])


def test_a_metric_that_cannot_take_the_task_is_refused_before_training():
    table = houses()
    table["grade"] = pd.qcut(table[TARGET], 3, labels=["C", "B", "A"]).astype(str)
    with pytest.raises(ValueError, match=r"metrics: 'auc' does not work for this multiclass"):
        tfkit.train(table.drop(columns=[TARGET]), target="grade", metrics=["auc"], epochs=1,
                    **QUIET)


def test_a_model_of_ones_own_getting_large_raw_numbers_is_told_so(arrays, capsys):
    x, y = arrays
    given = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    tfkit.train((x * 5000, y), model=given, epochs=1, **{**QUIET, "verbose": 2})
    out = capsys.readouterr().out
    assert re.search(r"note: your model gets the numbers as they are, e\.g\. 'feature \d' "
                     r"around [\d,]+; .*Normalization", out), out
    assert "left as it was" in out  # and that it learned a standardized target


def test_the_cli_trains_a_saved_keras_model(house_csv, tmp_path):
    columns = {name: keras.Input(shape=(1,), name=name) for name in ("Year Built",)}
    given = keras.Model(columns, keras.layers.Dense(1)(keras.layers.Normalization(
        mean=1970, variance=900)(columns["Year Built"])))
    given.compile(loss="huber", metrics=["mae"])
    given.save(tmp_path / "mine.keras")
    houses().drop(columns=["Lot Area", "Neighborhood"]).to_csv(tmp_path / "years.csv",
                                                               index=False)
    done = subprocess.run(
        [sys.executable, "-m", "tfkit.cli", "train", "--data", "years.csv", "--target", TARGET,
         "--model", "mine.keras", "--epochs", "2", "--export", "none", "--logdir", "none"],
        cwd=tmp_path, capture_output=True, text=True, timeout=CLI_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("\n{\n") + 1:])
    assert set(report["final"]) == {"loss", "mae", "val_loss", "val_mae"}
