"""The model zoo: sizes as documented, FLOP counts, cpu == cpu:2, export, reload and serve."""

import re

import keras
import numpy as np
import pytest
import requests

import tfkit
from tfkit import data, datasets, models, sequences, text

DOCS = ("Return the sum of the values.", "Open the file and return a stream.",
        "Split the string at each separator.", "Join the path components.") * 6


def _series():
    t = np.arange(200, dtype=np.float64)
    return sequences.Series.from_values(50 + 30 * np.sin(t / 9.0) + np.cos(t / 3.0), "wave")


def _images():
    return datasets.make_images(64, size=8, seed=1)


# builder -> (data, window, small sizes)
CASES = {
    "resnet": (_images, None, {"width": 4, "blocks": 1}),
    "lstm": (_series, 8, {"units": 8}),
    "gru": (_series, 8, {"units": 8}),
    "conv1d": (_series, 8, {"filters": 4, "layers": 2}),
    "transformer": (lambda: text.Corpus("docs", DOCS), 12, {"width": 16, "heads": 2, "layers": 1}),
}


@pytest.mark.parametrize(
    ("builder", "source", "window"),
    [
        ("resnet", "digits", None),
        ("lstm", "sunspots", 24),
        ("gru", "sunspots", 24),
        ("conv1d", "sunspots", 24),
        ("lstm", "python_docstrings_small", 64),
        ("gru", "python_docstrings_small", 64),
        ("conv1d", "python_docstrings_small", 64),
        ("transformer", "python_docstrings_small", 64),
    ],
)
def test_docstrings_state_the_default_size(builder, source, window):
    """Each builder's docstring states its parameters and FLOPs at the defaults: keep them true."""
    if source == "python_docstrings_small":
        source = text.Corpus("docs", DOCS * 20)
    model = models.build(builder, data.prepare(source, window=window).spec)
    doc = " ".join(models.BUILDERS[builder].__doc__.split())
    assert f"{model.count_params():,} parameters" in doc
    flops = models.flops_per_example(model, sequence_length=window)
    stated = [float(v) * {"M": 1e6, "G": 1e9}[u]
              for v, u in re.findall(r"([\d.]+) ([MG])FLOPs per example", doc)]
    assert any(abs(s - flops) / flops < 0.05 for s in stated), (flops, stated)


def test_flops_count_dense_conv_and_attention_by_hand():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)  # 36 positions * 3*3*2 * 3
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4)(x)  # 108 * 4
    assert models.flops_per_example(keras.Model(inputs, out)) == 2 * (36 * 54 + 108 * 4)
    seq = keras.Input((5, 8))
    att = keras.layers.MultiHeadAttention(2, 4)(seq, seq)
    # Q, K, V: 5 * 8 * (2*4) each; output 5 * 8 * 8; scores and sum: 2 heads * 5 * 5 * (4 + 4)
    expected = 2 * (3 * 5 * 8 * 8 + 5 * 8 * 8 + 2 * 25 * 8)
    assert models.flops_per_example(keras.Model(seq, att)) == expected


def test_resnet_uses_synchronized_batch_normalization():
    model = models.build("resnet", data.prepare(_images()).spec, width=4, blocks=1)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.synchronized for layer in norms)


def test_wrong_data_is_refused_with_the_builders_name():
    with pytest.raises(ValueError, match="'transformer' is a character language model"):
        models.build("transformer", data.prepare(datasets.make_linear(50)).spec)
    with pytest.raises(ValueError, match="'resnet' needs images"):
        models.build("resnet", data.prepare("sunspots").spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each case trained 2 epochs on one device and on two replicas (the latter exported).

    No validation set: the second epoch's loss already measures the first's updates,
    and one traced function less keeps the suite fast.
    """
    repo = tmp_path_factory.mktemp("zoo-models")
    runs = {}
    for case, (make, window, sizes) in CASES.items():
        common = dict(model=case, window=window, epochs=2, batch_size=16, seed=0,
                      model_kwargs=sizes, logdir=None, validation_split=0.0)
        one = tfkit.train(make(), strategy="cpu", export=None, **common)
        two = tfkit.train(make(), strategy="cpu:2", export=str(repo), model_name=case, **common)
        runs[case] = (one, two)
    return repo, runs


@pytest.mark.parametrize("case", list(CASES))
def test_two_replicas_train_exactly_like_one_device(trained, case):
    one, two = trained[1][case]
    assert two.strategy.num_replicas_in_sync == 2
    assert len(one.history["loss"]) == 2
    np.testing.assert_allclose(two.history["loss"], one.history["loss"], rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def client(trained):
    """One server over all the exports (it loads each once)."""
    from serving import create_app

    app = create_app({"MODELS": str(trained[0]), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
    return app.test_client()


@pytest.mark.parametrize("case", list(CASES))
def test_each_builder_exports_reloads_and_serves(trained, client, case):
    result = trained[1][case][1]
    if result.spec.kind == "text":
        answer = client.post(f"/v1/models/{case}:predict",
                             json={"instances": [{"prompt": "Return ", "length": 10}]})
        assert answer.status_code == 200, answer.get_json()
        (generated,) = answer.get_json()["predictions"]
        assert generated.startswith("Return ") and len(generated) == 17
        return
    x = next(iter(data.prepare(CASES[case][0](), window=CASES[case][1]).train.batch(2)))[0]
    x = x.numpy()
    answer = client.post(f"/v1/models/{case}:predict", json={"instances": x.tolist()})
    assert answer.status_code == 200, answer.get_json()
    want = result.model(x, training=False).numpy()
    predictions = answer.get_json()["predictions"]
    if result.spec.task == "regression":  # raw window in, raw next value out
        np.testing.assert_allclose(predictions, want.reshape(-1), rtol=1e-5, atol=1e-4)
        assert abs(predictions[0] - x[0, -1]) < 40  # in the series' units, not scaled
    else:
        np.testing.assert_allclose([p["probabilities"] for p in predictions], want, atol=1e-5)


@pytest.fixture(scope="module")
def zoo_server(trained, start_server):
    """A real server process over all the exports."""
    return start_server(["--models", str(trained[0]), "--file_system_poll_wait_seconds", "0",
                         "--workers", "1"], "/v1/models/resnet")


@pytest.mark.parametrize("case", ["resnet", "lstm"])
def test_server_process_answers_as_the_trained_model(trained, zoo_server, case):
    """Over HTTP from `python -m serving`: an image classifier and a forecaster answer as the
    trained model does in this process."""
    result = trained[1][case][1]
    zoo_server.wait_ready(f"/v1/models/{case}")  # each model loads on its own
    x = next(iter(data.prepare(CASES[case][0](), window=CASES[case][1]).train.batch(3)))[0]
    x = x.numpy()
    answer = requests.post(f"{zoo_server.url}/v1/models/{case}:predict",
                           json={"instances": x.tolist()}, timeout=60)
    assert answer.status_code == 200, answer.text
    want = result.model(x, training=False).numpy()
    predictions = answer.json()["predictions"]
    if result.spec.task == "regression":
        np.testing.assert_allclose(predictions, want.reshape(-1), rtol=1e-5, atol=1e-4)
    else:
        np.testing.assert_allclose([p["probabilities"] for p in predictions], want, atol=1e-5)
        assert [p["classes"] for p in predictions] == [
            result.spec.class_names[i] for i in want.argmax(-1)]


def test_export_check_is_relative_for_values_in_a_series_units():
    from tfkit.export import ExportVerificationError, _compare

    _compare("forecast", np.float32([250.00003]), np.float32([250.0]))  # float32 rounding
    with pytest.raises(ExportVerificationError, match="differs"):
        _compare("forecast", np.float32([250.01]), np.float32([250.0]))



@pytest.mark.parametrize("change", [0.0, 0.5])
def test_count_forecaster_answers_in_counts_also_when_served(tmp_path, change):
    """sqrt in, square out: a learned change c (scaled units) answers (sqrt(last) + c*std)**2."""
    from serving import create_app
    from tfkit.export import export_model

    counts = sequences.Series.from_values(np.random.default_rng(0).poisson(40.0, 120), "counts",
                                          scale="sqrt")
    prepared = data.prepare(counts, window=6)
    model = models.build("lstm", prepared.spec, units=4)
    kernel, bias = model.get_layer("scaled_change").get_weights()
    model.get_layer("scaled_change").set_weights([np.zeros_like(kernel), bias * 0 + change])
    window = prepared.validation_arrays[0][:3]
    want = (np.sqrt(window[:, -1]) + change * prepared.spec.info["std"]) ** 2
    np.testing.assert_allclose(model(window).numpy().reshape(-1), want, rtol=1e-5)

    export_model(model, tmp_path / "counts", task="regression", example=window)
    client = create_app({"MODELS": str(tmp_path), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0}).test_client()
    answer = client.post("/v1/models/counts:predict", json={"instances": window.tolist()})
    assert answer.status_code == 200, answer.get_json()
    np.testing.assert_allclose(answer.get_json()["predictions"], want, rtol=1e-5)
