"""The docstring corpus, the character vocabulary, per-position loss, generation and its export."""

import pathlib

import numpy as np
import pytest
import requests
import tensorflow as tf

import tfkit
from tfkit import data, text
from tfkit.export import export_language_model
from tfkit.steps import Steps

DOCS = (
    "Return the sum of the values.", "Open the file and return a stream.",
    "Return True if the object is callable.", "Split the string at each separator.",
    "Close the connection and free its resources.", "Join the path components.",
) * 4


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    """A tiny transformer trained on the small corpus until it beats the unigram baseline
    (about 2.3 nats per character after 8 epochs, against the baseline's 3.0), exported."""
    corpus = text.Corpus("tiny_docs", DOCS)
    result = tfkit.train(corpus, model="transformer", window=16, epochs=8, batch_size=8,
                         learning_rate=1e-2, model_kwargs={"width": 16, "heads": 2, "layers": 1},
                         strategy="cpu", logdir=None,
                         export=str(tmp_path_factory.mktemp("lm-models")))
    return result


@pytest.fixture(scope="module")
def lm_client(lm_export):
    from serving import create_app

    repository = str(pathlib.Path(lm_export.export_path).parents[1])  # <repo>/<name>/<version>
    app = create_app({"MODELS": repository, "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
    return app.test_client()


@pytest.fixture(scope="module")
def lm_server(lm_export, start_server):
    """The exported model behind a real server process, over HTTP."""
    repository = str(pathlib.Path(lm_export.export_path).parents[1])
    return start_server(["--models", repository, "--file_system_poll_wait_seconds", "0",
                         "--workers", "1"], "/v1/models/tiny_docs")


def test_encode_decode_round_trip_with_unknown_characters():
    assert len(text.VOCABULARY) == 97 and len(set(text.VOCABULARY)) == 97
    assert text.decode(text.encode("def f(x):\n    return x ~ 1")) == "def f(x):\n    return x ~ 1"
    assert text.encode("é\t").tolist() == [0, 0]
    assert text.decode(text.encode("naïve")) == "na\ufffdve"


def test_stdlib_docstrings_are_collected_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("TFKIT_CACHE_DIR", str(tmp_path))
    text._collected.cache_clear()
    first = text.python_docstrings(["json", "collections", "json"])
    cached = list(tmp_path.iterdir())
    text._collected.cache_clear()
    again = text.python_docstrings(["json", "collections", "json"])  # read from the cache file
    assert len(cached) == 1 and first.documents == again.documents
    assert first.documents[0].startswith("JSON (JavaScript Object Notation)")
    assert len(set(first.documents)) == len(first.documents)  # deduplicated
    assert any("OrderedDict" in d or "ordered" in d for d in first.documents)
    text._collected.cache_clear()


def test_collection_skips_modules_with_side_effects():
    assert {"antigravity", "this", "idlelib", "tkinter", "turtle"} <= set(text.SKIP_MODULES)


def test_validation_split_is_by_document():
    corpus = text.Corpus("docs", tuple(f"Document number {i} says {'x' * i}." for i in range(40)))
    prepared = data.prepare(corpus, window=8, validation_split=0.25, seed=3)
    train_text = text.decode(np.concatenate([x.numpy() for x, _ in prepared.train.batch(999)]))
    val_x, val_y = prepared.validation_arrays
    val_text = text.decode(val_x)
    held_out = [d for d in corpus.documents if d[:-1] in val_text]
    assert len(held_out) >= 5
    assert not any(d[:-1] in train_text for d in held_out)
    np.testing.assert_array_equal(val_x[:, 1:], val_y[:, :-1])  # labels: the next character
    spec = prepared.spec
    assert spec.kind == "text" and spec.task == "multiclass" and spec.output_units == 97
    assert 1.0 < spec.info["unigram_validation_loss"] < np.log(97)


def test_language_model_loss_is_the_mean_over_positions():
    """steps.py averages a [N, T] per-position loss to one value per example."""
    tf.keras.utils.set_random_seed(0)
    spec = data.prepare(text.Corpus("d", DOCS), window=8).spec
    model = tfkit.models.build("gru", spec, units=8)
    strategy = tf.distribute.get_strategy()
    optimizer = tf.keras.optimizers.SGD(0.0)
    steps = Steps(model=model, optimizer=optimizer, task="multiclass", strategy=strategy,
                  global_batch_size=4)
    x = text.encode("Return the sum o").reshape(2, 8)
    y = text.encode("eturn the sum of").reshape(2, 8).astype(np.int64)
    totals = steps.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(2))
    p = model(x).numpy()
    nll = -np.log(np.take_along_axis(p, y[..., None], axis=-1)[..., 0])
    assert float(totals["count"]) == 2
    assert float(totals["loss"]) / 2 == pytest.approx(nll.mean(), rel=1e-5)
    hits = (p.argmax(-1) == y).mean()
    assert float(totals["accuracy"]) / 2 == pytest.approx(hits)


def test_training_lowers_the_loss_and_generate_writes_text(lm_export):
    history = lm_export.history
    # Better than guessing each character by its frequency alone: it uses the context.
    baseline = lm_export.spec.info["unigram_validation_loss"]
    assert history["val_loss"][-1] < baseline - 0.3, (history["val_loss"], baseline)
    assert history["loss"][-1] < history["loss"][0]
    sample = tfkit.generate(lm_export.model, "Return the ", 30, temperature=0.7, seed=5)
    assert sample.startswith("Return the ") and len(sample) == len("Return the ") + 30
    assert sample == tfkit.generate(lm_export.model, "Return the ", 30, temperature=0.7, seed=5)
    assert tfkit.generate(lm_export.model, "", 5, seed=1) != ""
    with pytest.raises(ValueError, match="temperature > 0"):
        tfkit.generate(lm_export.model, "x", 5, temperature=0)


@pytest.mark.parametrize(
    ("body", "prompts"),
    [
        ({"instances": [{"prompt": "def ", "length": 40}]}, ["def "]),
        ({"inputs": {"prompt": ["def "], "length": 40}}, ["def "]),
        ({"inputs": {"prompt": "def ", "length": 40}}, ["def "]),
        ({"instances": [{"prompt": "def ", "length": 40}, {"prompt": "Open ", "length": 40}]},
         ["def ", "Open "]),
    ],
)
def test_served_language_model_returns_generated_text(lm_client, body, prompts):
    answer = lm_client.post("/v1/models/tiny_docs:predict", json=body)
    assert answer.status_code == 200, answer.get_json()
    texts = answer.get_json().get("predictions") or answer.get_json()["outputs"]
    # Each answer is its prompt followed by exactly `length` generated characters.
    assert [t[:len(p)] for t, p in zip(texts, prompts, strict=True)] == prompts
    assert [len(t) for t in texts] == [len(p) + 40 for p in prompts]


def test_seeded_signature_matches_python_generate(lm_export, lm_client):
    answer = lm_client.post("/v1/models/tiny_docs:predict", json={
        "signature_name": "generate_seeded",
        "instances": [{"prompt": "Join ", "length": 25, "seed": 11}],
    })
    expected = tfkit.generate(lm_export.model, "Join ", 25, seed=11)
    assert answer.get_json()["predictions"] == [expected]


def test_server_process_answers_as_the_trained_model(lm_export, lm_server):
    """Over HTTP from a real server process: the seeded answer is Python's generate's."""
    answer = requests.post(f"{lm_server.url}/v1/models/tiny_docs:predict", json={
        "signature_name": "generate_seeded",
        "instances": [{"prompt": "Open ", "length": 20, "seed": 3}],
    }, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [tfkit.generate(lm_export.model, "Open ", 20, seed=3)]


def test_language_export_refuses_another_vocabulary(lm_export, tmp_path):
    with pytest.raises(ValueError, match="VOCABULARY only"):
        export_language_model(lm_export.model, tmp_path / "m", vocabulary=("a", "b"), context=16)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())

