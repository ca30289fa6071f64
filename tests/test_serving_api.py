"""TF Serving's REST API through Flask's test client: every reference model and exported ones."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import PENGUIN_CLASSES, PENGUIN_ROWS, b64

GOOD_REFERENCE_MODELS = ["half_plus_two", "half_plus_three", "half_plus_two_tf2", "two_versions"]
OFFSET = {"half_plus_two": 2.0, "half_plus_three": 3.0, "half_plus_two_tf2": 2.0,
          "two_versions": 2.0}
OK_STATUS = {"error_code": "OK", "error_message": ""}


def _example(x: float) -> bytes:
    feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize("name", GOOD_REFERENCE_MODELS)
def test_status_reports_the_served_version(client, name):
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    expected_versions = ["124", "123"] if name == "two_versions" else ["123"]
    assert response.json == {
        "model_version_status": [
            {"version": v, "state": "AVAILABLE", "status": OK_STATUS} for v in expected_versions
        ]
    }


@pytest.mark.parametrize(
    ("url", "version"),
    [
        ("/v1/models/two_versions/versions/123", "123"),
        ("/v1/models/two_versions/labels/stable", "123"),
        ("/v1/models/two_versions/labels/canary", "124"),
    ],
)
def test_status_of_one_version_or_label(client, url, version):
    response = client.get(url)
    assert response.status_code == 200
    assert [s["version"] for s in response.json["model_version_status"]] == [version]


@pytest.mark.parametrize(
    ("name", "url_tail", "reference"),
    [
        ("half_plus_two", "", "half_plus_two_model_metadata.json"),
        ("two_versions", "/versions/123", "saved_model_half_plus_two_2_versions_metadata.json"),
    ],
)
def test_metadata_matches_tf_serving(client, testdata, name, url_tail, reference):
    expected = json.loads((testdata / reference).read_text())
    expected["model_spec"]["name"] = name
    response = client.get(f"/v1/models/{name}{url_tail}/metadata")
    assert response.status_code == 200
    assert response.json == expected


def test_metadata_of_a_tf2_model_drops_the_init_op(client):
    response = client.get("/v1/models/half_plus_two_tf2/metadata")
    signatures = response.json["metadata"]["signature_def"]["signature_def"]
    assert "__saved_model_init_op" not in signatures
    assert signatures["serving_default"]["inputs"]["x"]["tensor_shape"] == {
        "dim": [{"size": "1", "name": ""}], "unknown_rank": False,
    }


@pytest.mark.parametrize("name", GOOD_REFERENCE_MODELS)
@pytest.mark.parametrize(
    ("body", "key", "shape"),
    [
        ({"instances": [1.0, 2.0, 5.0]}, "predictions", "flat"),  # fed as [3], as TF Serving does
        ({"instances": [[1.0], [2.0], [5.0]]}, "predictions", "nested"),
        ({"instances": [{"x": [1.0]}, {"x": [2.0]}, {"x": [5.0]}]}, "predictions", "nested"),
        ({"inputs": [1.0, 2.0, 5.0]}, "outputs", "flat"),
        ({"inputs": {"x": [[1.0], [2.0], [5.0]]}}, "outputs", "nested"),
        ({"signature_name": "serving_default", "inputs": [[1, 2, 5]]}, "outputs", "row"),
    ],
)
def test_predict_row_and_columnar(client, name, body, key, shape):
    response = client.post(f"/v1/models/{name}:predict", json=body)
    assert response.status_code == 200, response.json
    values = [0.5 * x + OFFSET[name] for x in (1.0, 2.0, 5.0)]
    expected = {
        "flat": values, "nested": [[v] for v in values], "row": [values],
    }[shape]
    assert response.json == {key: expected}


def test_predict_documented_example(client):
    # api_rest.md: half_plus_three, {"instances": [1.0,2.0,5.0]} → [3.5, 4.0, 5.5].
    response = client.post("/v1/models/half_plus_three:predict",
                           data=b'{"instances": [1.0,2.0,5.0]}')
    assert response.get_data() == b'{"predictions":[3.5,4.0,5.5]}'


@pytest.mark.parametrize("format_key", ["instances", "inputs"])
def test_predict_takes_b64_strings(client, format_key):
    # classify_x_to_y takes serialized tf.Example strings; predict can call it directly.
    examples = [b64(_example(2.0)), b64(_example(4.0))]
    response = client.post("/v1/models/half_plus_two:predict",
                           json={"signature_name": "classify_x_to_y", format_key: examples})
    assert response.status_code == 200, response.json
    assert response.json == {"predictions" if format_key == "instances" else "outputs":
                             [[3.0], [4.0]]}


@pytest.mark.parametrize(
    ("name", "signature", "expected"),
    [
        ("half_plus_two", "regress_x_to_y", [2.5, 3.0]),
        ("half_plus_two", "regress_x_to_y2", [3.5, 4.0]),
        ("two_versions", "regress_x_to_y", [2.5, 3.0]),
        # api_rest.md's regress example on half_plus_three.
        ("half_plus_three", "tensorflow/serving/regress", [3.5, 4.0]),
    ],
)
def test_regress_reference_models(client, name, signature, expected):
    response = client.post(f"/v1/models/{name}:regress",
                           json={"signature_name": signature, "examples": [{"x": 1.0}, {"x": 2.0}]})
    assert response.status_code == 200, response.json
    assert response.json == {"results": expected}


def test_regress_merges_context_into_every_example(client):
    response = client.post("/v1/models/half_plus_two:regress", json={
        "signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {}],
    })
    assert response.json == {"results": [4.0, 4.0]}


def test_classify_reference_model(client):
    # tensorflow_model_server_test.py's testClassifyREST.
    response = client.post("/v1/models/half_plus_two:classify",
                           json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert response.status_code == 200
    assert response.json == {"results": [[["", 3.0]]]}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/models/two_versions/versions/123:predict", [3.0]),
        ("/v1/models/two_versions/versions/124:predict", [3.0]),
        ("/v1/models/two_versions/labels/stable:predict", [3.0]),
        ("/v1/models/two_versions/labels/canary:predict", [3.0]),
    ],
)
def test_predict_specific_versions_and_labels(client, url, expected):
    response = client.post(url, json={"instances": [2.0]})
    assert response.status_code == 200, response.json
    assert response.json == {"predictions": expected}


def test_bad_model_is_refused_and_reported(client):
    status = client.get("/v1/models/bad_half_plus_two").json["model_version_status"]
    assert len(status) == 1
    assert status[0]["version"] == "123"
    assert status[0]["state"] == "END"
    assert status[0]["status"]["error_code"] == "NOT_FOUND"
    assert "SavedModel file does not exist" in status[0]["status"]["error_message"]
    response = client.post("/v1/models/bad_half_plus_two:predict", json={"instances": [1.0]})
    assert response.status_code == 404
    assert response.json == {"error": "Servable not found for request: Latest(bad_half_plus_two)"}
    assert client.post("/v1/models/half_plus_two:predict",
                       json={"instances": [1.0]}).status_code == 200


def test_exported_classifier_serves_keras_probabilities(client, table_classifier):
    rows = [
        {name: (values[i].item() if values.dtype != object else values[i])
         for name, values in PENGUIN_ROWS.items()}
        for i in range(len(PENGUIN_ROWS["island"]))
    ]
    rows[0]["body_mass_g"] = 3750  # an int for a float column, as JSON clients send
    response = client.post("/v1/models/penguins:predict", json={"instances": rows})
    assert response.status_code == 200, response.json
    expected = table_classifier(
        {k: v.reshape(-1, 1) for k, v in PENGUIN_ROWS.items()}
    ).numpy()
    predictions = response.json["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected,
                               atol=1e-5, rtol=0)
    assert [p["classes"] for p in predictions] == [PENGUIN_CLASSES[i] for i in
                                                   expected.argmax(-1)]
    assert [p["class_ids"] for p in predictions] == expected.argmax(-1).tolist()


def test_exported_classifier_classify(client, table_classifier):
    example = {"island": "Dream", "bill_length_mm": 48.7, "body_mass_g": 3500.0}
    response = client.post("/v1/models/penguins:classify",
                           json={"signature_name": "classify", "examples": [example]})
    assert response.status_code == 200, response.json
    (result,) = response.json["results"]
    expected = table_classifier({k: np.array([[v]]) for k, v in example.items()}).numpy()[0]
    assert [label for label, _ in result] == PENGUIN_CLASSES
    np.testing.assert_allclose([score for _, score in result], expected, atol=1e-5, rtol=0)


def test_exported_regressor_predict_and_regress(client, regressor):
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    expected = regressor(np.array(rows, np.float32)).numpy().reshape(-1)
    predicted = client.post("/v1/models/mpg:predict", json={"instances": rows}).json
    np.testing.assert_allclose(predicted["predictions"], expected, atol=1e-5, rtol=0)
    regressed = client.post("/v1/models/mpg:regress", json={
        "signature_name": "regress", "examples": [{"x": row} for row in rows],
    }).json
    np.testing.assert_allclose(regressed["results"], expected, atol=1e-5, rtol=0)


def test_nan_and_infinity_round_trip(client):
    response = client.post("/v1/models/half_plus_two:predict",
                           data=b'{"instances": [NaN, Infinity, -Infinity, 1.0]}')
    assert response.status_code == 200
    assert response.get_data() == b'{"predictions": [NaN, Infinity, -Infinity, 2.5]}'


def test_prometheus_metrics_use_tf_serving_names(client):
    client.post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
    client.post("/v1/models/half_plus_two:predict", json={"nothing": 1})
    response = client.get("/monitoring/prometheus/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert '\n:tensorflow:serving:request_count{model_name="half_plus_two",status="OK"} ' in text
    assert ('\n:tensorflow:serving:request_count{model_name="half_plus_two",'
            'status="INVALID_ARGUMENT"} ') in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert (':tensorflow:serving:request_latency_bucket{model_name="half_plus_two",'
            'API="predict",entrypoint="REST",le="+Inf"}') in text
