"""Tests for tfkit.export: atomic versioned SavedModels that reproduce the Keras model."""

import argparse
import importlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import PENGUIN_CLASSES, PENGUIN_ROWS
from tensorflow.core.protobuf import saved_model_pb2

from tfkit.export import ExportVerificationError, add_export_arguments, export_model, run_export

# The module itself: `tfkit.export` may be re-exported as the export function.
export_module = importlib.import_module("tfkit.export")


def _keras_rows(rows):
    return {name: values.reshape(-1, 1) for name, values in rows.items()}


def _method_names(path):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    return {k: v.method_name for k, v in signatures.items() if not k.startswith("__")}


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
