"""Column names as users write them train, export and are served under those same names."""

import numpy as np
import pandas as pd
import pytest
import requests

import tfkit

TIMEOUT = 10
NAME = "house"
NUMERIC = ["Lot Area", "price/sqft", "a.b", "why?", "$cost", "(x)", "größe", "面积",
           "1st floor", "a b", "a_b"]
TEXT = "kind (text)"
TARGET = "Sale Price $"
COLUMNS = [*NUMERIC, TEXT]


def _frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=rows).round(3) for c in NUMERIC})
    frame[TEXT] = rng.choice(["brick", "wood", "stone"], size=rows)
    frame[TARGET] = 3.0 * frame["Lot Area"] - frame["a b"] + (frame[TEXT] == "wood")
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    models = tmp_path_factory.mktemp("column-names")
    result = tfkit.train(_frame(96, seed=0), target=TARGET, model="mlp", epochs=2,
                         export=str(models), model_name=NAME, logdir=None, verbose=0)
    return result, models


@pytest.fixture(scope="module")
def server(trained, start_server):
    _, models = trained
    return start_server(["--models", str(models), "--file_system_poll_wait_seconds", "0",
                         "--workers", "1"], f"/v1/models/{NAME}")


@pytest.fixture(scope="module")
def rows():
    return _frame(3, seed=1)


def _expected(trained, rows) -> np.ndarray:
    result, _ = trained
    return np.asarray(result.predict(rows[COLUMNS])).reshape(-1)


def _instances(rows) -> list[dict]:
    return [{c: (str(v) if c == TEXT else float(v)) for c, v in row.items()}
            for row in rows[COLUMNS].to_dict(orient="records")]


def test_trains_on_columns_named_as_written(trained):
    result, models = trained
    assert list(result.model.input) == COLUMNS
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.export_path == str(models / NAME / "1")


def test_row_request_keyed_by_the_original_names(server, trained, rows):
    response = requests.post(f"{server.url}/v1/models/{NAME}:predict",
                             json={"instances": _instances(rows)}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"])
    np.testing.assert_allclose(served, _expected(trained, rows), atol=1e-5, rtol=0)


def test_columnar_request_keyed_by_the_original_names(server, trained, rows):
    columns = {c: rows[c].astype(str).tolist() if c == TEXT else rows[c].tolist()
               for c in COLUMNS}
    response = requests.post(f"{server.url}/v1/models/{NAME}:predict",
                             json={"inputs": columns}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["outputs"])
    np.testing.assert_allclose(served, _expected(trained, rows), atol=1e-5, rtol=0)


def test_regress_reads_examples_keyed_by_the_original_names(server, trained, rows):
    response = requests.post(f"{server.url}/v1/models/{NAME}:regress",
                             json={"signature_name": "regress", "examples": _instances(rows)},
                             timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["results"])
    np.testing.assert_allclose(served, _expected(trained, rows), atol=1e-5, rtol=0)


def test_v2_infer_with_the_original_input_names(server, trained, rows):
    inputs = [
        {"name": c, "datatype": "BYTES" if c == TEXT else "FP32", "shape": [len(rows)],
         "data": rows[c].astype(str).tolist() if c == TEXT else rows[c].tolist()}
        for c in COLUMNS
    ]
    response = requests.post(f"{server.url}/v2/models/{NAME}/infer", json={"inputs": inputs},
                             timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "predictions"
    np.testing.assert_allclose(output["data"], _expected(trained, rows), atol=1e-5, rtol=0)


def test_metadata_lists_the_original_names(server):
    v1 = requests.get(f"{server.url}/v1/models/{NAME}/metadata", timeout=TIMEOUT).json()
    signature = v1["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == sorted(COLUMNS)
    v2 = requests.get(f"{server.url}/v2/models/{NAME}", timeout=TIMEOUT).json()
    assert sorted(i["name"] for i in v2["inputs"]) == sorted(COLUMNS)


def _renamed(instance: dict) -> dict:
    instance = dict(instance)
    instance["Lot_Area"] = instance.pop("Lot Area")
    return instance


@pytest.mark.parametrize("form", ["instances", "inputs", "v2"])
def test_a_wrong_key_is_refused_naming_the_expected_names(server, rows, form):
    instance = _renamed(_instances(rows)[0])
    if form == "instances":
        url, body = f"/v1/models/{NAME}:predict", {"instances": [instance]}
    elif form == "inputs":
        url, body = f"/v1/models/{NAME}:predict", {"inputs": {k: [v] for k, v in instance.items()}}
    else:
        url = f"/v2/models/{NAME}/infer"
        body = {"inputs": [{"name": k, "datatype": "BYTES" if k == TEXT else "FP32",
                            "shape": [1], "data": [v]} for k, v in instance.items()]}
    response = requests.post(server.url + url, json=body, timeout=TIMEOUT)
    assert response.status_code == 400
    error = response.json()["error"]
    for column in COLUMNS:
        assert f'"{column}"' in error, error
