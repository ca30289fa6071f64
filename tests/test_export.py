"""Tests for tfkit.export: atomic versioned SavedModels that reproduce the Keras model."""

import argparse
import importlib

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import PENGUIN_CLASSES, PENGUIN_ROWS
from tensorflow.core.protobuf import saved_model_pb2

from tfkit import data, models
from tfkit.export import ExportVerificationError, add_export_arguments, export_model, run_export

# The module itself: `tfkit.export` may be re-exported as the export function.
export_module = importlib.import_module("tfkit.export")


def _keras_rows(rows):
    return {name: values.reshape(-1, 1) for name, values in rows.items()}


def _signature_defs(path):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    return saved_model.meta_graphs[0].signature_def


def _method_names(path):
    signatures = _signature_defs(path)
    return {k: v.method_name for k, v in signatures.items() if not k.startswith("__")}


def _in_session(path, feeds_by_key):
    """serving_default run as TF Serving runs it: a TF1 session fed by SignatureDef keys."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
        signature = meta_graph.signature_def["serving_default"]
        feeds = {signature.inputs[k].name: v for k, v in feeds_by_key.items()}
        return session.run(signature.outputs["predictions"].name, feeds)


def _example(**features):
    feature = {}
    for name, value in features.items():
        if isinstance(value, str):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        else:
            values = np.ravel(value).tolist()
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def exported_classifier(tmp_path_factory, table_classifier):
    base = tmp_path_factory.mktemp("export") / "penguins"
    return export_model(table_classifier, base, task="multiclass", class_names=PENGUIN_CLASSES,
                        example=PENGUIN_ROWS)


def test_table_classifier_reloads_with_keras_predictions(exported_classifier, table_classifier):
    loaded = tf.saved_model.load(str(exported_classifier))
    served = loaded.signatures["serving_default"](
        **{name: tf.constant(values) for name, values in PENGUIN_ROWS.items()}
    )
    expected = table_classifier(_keras_rows(PENGUIN_ROWS)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5, rtol=0)
    assert served["class_ids"].numpy().tolist() == expected.argmax(-1).tolist()
    names = [PENGUIN_CLASSES[i].encode() for i in expected.argmax(-1)]
    assert served["classes"].numpy().tolist() == names


def test_classify_signature_reads_tf_examples(exported_classifier, table_classifier):
    loaded = tf.saved_model.load(str(exported_classifier))
    examples = [
        _example(island=str(PENGUIN_ROWS["island"][i]),
                 bill_length_mm=PENGUIN_ROWS["bill_length_mm"][i],
                 body_mass_g=PENGUIN_ROWS["body_mass_g"][i])
        for i in range(2)
    ]
    result = loaded.signatures["classify"](inputs=tf.constant(examples))
    expected = table_classifier(_keras_rows({k: v[:2] for k, v in PENGUIN_ROWS.items()})).numpy()
    np.testing.assert_allclose(result["scores"].numpy(), expected, atol=1e-5, rtol=0)
    assert result["classes"].numpy().tolist() == [[c.encode() for c in PENGUIN_CLASSES]] * 2


def test_signatures_carry_tf_serving_method_names(exported_classifier, tmp_path, regressor):
    assert _method_names(exported_classifier) == {
        "serving_default": "tensorflow/serving/predict",
        "classify": "tensorflow/serving/classify",
    }
    path = export_model(regressor, tmp_path / "mpg", task="regression")
    assert _method_names(path)["regress"] == "tensorflow/serving/regress"


def test_regressor_reloads_with_keras_predictions(tmp_path, regressor):
    rows = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    path = export_model(regressor, tmp_path / "mpg", task="regression", example=rows)
    loaded = tf.saved_model.load(str(path))
    (served,) = loaded.signatures["serving_default"](features=tf.constant(rows)).values()
    expected = regressor(rows).numpy().reshape(-1)
    assert served.shape == (5,)
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5, rtol=0)
    regressed = loaded.signatures["regress"](
        inputs=tf.constant([_example(x=row) for row in rows])
    )["outputs"].numpy()
    np.testing.assert_allclose(regressed, expected, atol=1e-5, rtol=0)


def test_binary_classifier_answers_two_probabilities(tmp_path):
    inputs = tf.keras.Input(shape=(3,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="sigmoid")(inputs))
    rows = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)
    path = export_model(model, tmp_path / "spam", task="binary", class_names=["ham", "spam"])
    served = tf.saved_model.load(str(path)).signatures["serving_default"](tf.constant(rows))
    p = model(rows).numpy().reshape(-1)
    np.testing.assert_allclose(served["probabilities"].numpy(), np.stack([1 - p, p], -1),
                               atol=1e-5, rtol=0)
    assert served["classes"].numpy().tolist() == [b"spam" if v > 0.5 else b"ham" for v in p]


def test_image_classifier_gets_default_class_names(tmp_path, image_classifier):
    path = export_model(image_classifier, tmp_path / "digits", task="multiclass")
    images = np.random.default_rng(4).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](tf.constant(images))
    expected = image_classifier(images).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5, rtol=0)
    assert served["classes"].numpy().tolist() == [str(i).encode() for i in expected.argmax(-1)]


def test_versions_count_up_and_leave_no_temporary_folder(tmp_path, regressor):
    base = tmp_path / "mpg"
    first = export_model(regressor, base, task="regression")
    second = export_model(regressor, base, task="regression")
    chosen = export_model(regressor, base, task="regression", version=10)
    after = export_model(regressor, base, task="regression")
    assert [p.name for p in (first, second, chosen, after)] == ["1", "2", "10", "11"]
    assert sorted(p.name for p in base.iterdir()) == ["1", "10", "11", "2"]


def test_existing_version_is_refused(tmp_path, regressor):
    export_model(regressor, tmp_path / "mpg", version=3)
    with pytest.raises(FileExistsError):
        export_model(regressor, tmp_path / "mpg", version=3)


def test_failed_verification_raises_and_removes_the_temporary_folder(
    tmp_path, regressor, monkeypatch
):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(ExportVerificationError, match="differs"):
        export_model(regressor, tmp_path / "mpg", task="regression")
    assert list((tmp_path / "mpg").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "ranking"}, "task must be one of"),
        ({"task": "multiclass", "class_names": ["a", "b"]}, "class_names has 2 names"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, image_classifier, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_model(image_classifier, tmp_path / "digits", **kwargs)


def test_cli_exports_a_keras_file(tmp_path, table_classifier, capsys):
    model_file = tmp_path / "penguins.keras"
    table_classifier.save(model_file)
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args([
        "--model", str(model_file), "--name", "penguins", "--models", str(tmp_path / "models"),
        "--task", "multiclass", "--class-names", ",".join(PENGUIN_CLASSES),
    ])
    assert run_export(args) == 0
    path = tmp_path / "models" / "penguins" / "1"
    assert capsys.readouterr().out.strip() == str(path)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        **{name: tf.constant(values) for name, values in PENGUIN_ROWS.items()}
    )
    expected = table_classifier(_keras_rows(PENGUIN_ROWS)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5, rtol=0)


def test_cli_reports_a_missing_model_file(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args(["--model", str(tmp_path / "nope.keras"), "--name", "x",
                              "--models", str(tmp_path)])
    assert run_export(args) == 1
    assert "export failed" in capsys.readouterr().err


MESSY = ["Lot Area", "price/sqft", "größe", "1st floor", "a b", "a_b"]


@pytest.fixture(scope="module")
def messy_model():
    """A regressor on columns named as users name them, keyed by those names."""
    keras.utils.set_random_seed(5)
    inputs = {c: keras.Input(shape=(1,), name=f"in{i}") for i, c in enumerate(MESSY)}
    inputs["kind (text)"] = keras.Input(shape=(1,), name="kind", dtype="string")
    lookup = keras.layers.StringLookup(vocabulary=["brick", "wood"], output_mode="one_hot")
    features = keras.layers.Concatenate()(
        [inputs[c] for c in MESSY] + [lookup(inputs["kind (text)"])])
    return models.functional(inputs, keras.layers.Dense(1)(features))


@pytest.fixture(scope="module")
def messy_rows():
    rng = np.random.default_rng(6)
    rows = {c: rng.normal(size=3).astype(np.float32) for c in MESSY}
    rows["kind (text)"] = np.array(["brick", "wood", "tile"], dtype=object)
    return rows


@pytest.fixture(scope="module")
def messy_export(tmp_path_factory, messy_model, messy_rows):
    base = tmp_path_factory.mktemp("export") / "house"
    return export_model(messy_model, base, task="regression", example=messy_rows)


def test_signature_takes_the_column_names_as_written(messy_export, messy_model, messy_rows):
    assert sorted(_signature_defs(messy_export)["serving_default"].inputs) == sorted(
        [*MESSY, "kind (text)"])
    served = _in_session(messy_export, messy_rows)
    expected = messy_model(_keras_rows(messy_rows)).numpy().reshape(-1)
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)


def test_tf2_loader_takes_python_names_and_ascii_columns(messy_export, messy_model, messy_rows):
    signature = tf.saved_model.load(str(messy_export)).signatures["serving_default"]
    expected = messy_model(_keras_rows(messy_rows)).numpy().reshape(-1)
    python_names = {"Lot Area": "Lot_Area", "price/sqft": "price_sqft", "größe": "grosse",
                    "1st floor": "arg_1st_floor", "a b": "a_b_2", "a_b": "a_b",
                    "kind (text)": "kind__text_"}
    by_python_name = {python_names[c]: tf.constant(v) for c, v in messy_rows.items()}
    np.testing.assert_allclose(signature(**by_python_name)["predictions"].numpy(), expected,
                               atol=1e-5, rtol=0)
    # TensorFlow makes "Lot Area" the keyword Lot_Area itself.
    by_python_name["Lot Area"] = by_python_name.pop("Lot_Area")
    np.testing.assert_allclose(signature(**by_python_name)["predictions"].numpy(), expected,
                               atol=1e-5, rtol=0)


def test_regress_reads_tf_examples_keyed_by_the_column_names(messy_export, messy_model,
                                                               messy_rows):
    examples = [_example(**{c: v[i] if c in MESSY else str(v[i]) for c, v in messy_rows.items()})
                for i in range(3)]
    loaded = tf.saved_model.load(str(messy_export))
    outputs = loaded.signatures["regress"](inputs=tf.constant(examples))["outputs"].numpy()
    expected = messy_model(_keras_rows(messy_rows)).numpy().reshape(-1)
    np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=0)


class Subclassed(keras.Model):
    """A subclassed regressor: no model.input, so export needs an example or a spec."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


class SubclassedTable(Subclassed):
    def call(self, columns):
        return self.dense(keras.ops.concatenate([columns["Lot Area"], columns["größe"]], -1))


def _sequential():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])


def _sequential_called():
    model = keras.Sequential([keras.layers.Dense(1)])  # no Input: built by its first call
    model(np.zeros((1, 3), np.float32))
    return model


def _functional():
    inputs = keras.Input((3,), name="features")
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


ARRAY = np.random.default_rng(7).normal(size=(4, 3)).astype(np.float32)
TABLE = {"Lot Area": ARRAY[:, :1], "größe": ARRAY[:, 1:2]}


@pytest.mark.parametrize(
    ("make", "rows", "kwargs"),
    [
        (_sequential, ARRAY, {}),
        (_sequential_called, ARRAY, {}),
        (_functional, ARRAY, {}),
        (Subclassed, ARRAY, {"example": ARRAY}),
        (SubclassedTable, TABLE, {"example": TABLE}),
        (SubclassedTable, TABLE, {"spec": "table"}),
    ],
    ids=["sequential", "sequential-called", "functional", "subclassed-example",
         "subclassed-table-example", "subclassed-table-spec"],
)
def test_ready_made_models_export(tmp_path, make, rows, kwargs):
    keras.utils.set_random_seed(8)
    model = make()
    if kwargs.get("spec") == "table":
        frame = pd.DataFrame({c: v.reshape(-1) for c, v in TABLE.items()} | {"y": [0, 1.0, 2, 3]})
        kwargs = {"spec": data.prepare(frame, target="y").spec}
    path = export_model(model, tmp_path / "m", task="regression", **kwargs)
    if isinstance(rows, dict):
        served = _in_session(path, {c: v.reshape(-1) for c, v in rows.items()})
    else:
        (key,) = _signature_defs(path)["serving_default"].inputs
        assert key == ("features" if make is _functional else "x")  # unnamed: "x", stable
        served = _in_session(path, {key: rows})
    np.testing.assert_allclose(served, model(rows).numpy().reshape(-1), atol=1e-5, rtol=0)


def test_subclassed_model_without_example_or_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pass example= .* or spec="):
        export_model(Subclassed(), tmp_path / "m", task="regression")


def test_export_and_server_load_without_tf_deprecation_notices(tmp_path, regressor, monkeypatch):
    from tensorflow.python.util import deprecation

    from serving.servable import Servable

    notices = []
    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})  # as in a fresh process
    monkeypatch.setattr(deprecation, "_log_deprecation", lambda *args, **_: notices.append(args))
    path = export_model(regressor, tmp_path / "mpg", task="regression")
    Servable(path, 1).retire()
    assert notices == []
    _in_session(path, {"features": ARRAY[:, [0, 1, 2, 0]]})  # the user's own call still hears
    assert len(notices) == 1


def test_cli_exports_a_keras_file_keyed_by_column_names_quietly(tmp_path, messy_model, recwarn):
    model_file = tmp_path / "house.keras"
    messy_model.save(model_file)
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args(["--model", str(model_file), "--name", "house",
                              "--models", str(tmp_path / "models"), "--task", "regression"])
    assert run_export(args) == 0
    inputs = _signature_defs(tmp_path / "models" / "house" / "1")["serving_default"].inputs
    assert sorted(inputs) == sorted([*MESSY, "kind (text)"])
    assert not [w for w in recwarn if "When providing `inputs` as a dict" in str(w.message)]
