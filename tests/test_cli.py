"""The `tfkit` command: the README's main job, training flags, clear refusals."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfkit
from serving import create_app
from tfkit import datasets
from tfkit.cli import _config_from, _parser, main
from tfkit.config import TrainConfig

CLI_SECONDS = 300


def _tfkit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tfkit.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=CLI_SECONDS)


def test_quickstart_trains_exports_and_answers_over_http(tmp_path):
    done = _tfkit("quickstart", "--epochs", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.split("    -> ")[1].splitlines()[0])
    row = answer["predictions"][0]
    assert row["classes"] in ("Adelie", "Chinstrap", "Gentoo")
    assert abs(sum(row["probabilities"]) - 1.0) < 1e-5
    assert (tmp_path / "models" / "penguins" / "1" / "saved_model.pb").exists()
    assert any((tmp_path / "tensorboard_logs").iterdir())
    assert "tensorboard --logdir tensorboard_logs" in done.stdout


def test_train_flags_and_a_clear_refusal(tmp_path):
    done = _tfkit("train", "--data", "penguins", "--target", "wings", cwd=tmp_path)
    assert done.returncode == 2
    assert "no column 'wings'; the columns are: species, island" in done.stderr
    assert "Traceback" not in done.stderr
    done = _tfkit("train", "--data", "penguins", "--epochs", "2", "--export", "none",
                  "--logdir", "logs", "--run-name", "r", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["export_path"] is None and report["logdir"] == os.path.join("logs", "r")
    assert set(report["final"]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_train_help_lists_every_field_with_its_default_and_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in text
    for flag, default in (("--epochs", "20"), ("--learning-rate", "0.001"),
                          ("--model-kwargs", "{}"), ("--target", "none")):
        assert re.search(rf"{flag} \S+ .*?\(default: {re.escape(default)}\)", text), flag
    assert "--task {auto,regression,binary,multiclass}" in text
    assert "--optimizer {adam,adamw,sgd,rmsprop}" in text
    assert "--missing {drop,impute}" in text
    assert "--verbose {0,1,2}" in text
    assert "choices: auto, cpu, gpu, mirrored, multi_worker, tpu, cpu:N" in text
    assert "--quiet" in text


def test_json_list_and_choice_flags_reach_the_config():
    parser = _parser("train")
    args = parser.parse_args([
        "train", "--model-kwargs", '{"hidden": [8]}', "--metrics", "mae,mse",
        "--column-types", '{"zip": "categorical"}', "--class-weight", '{"Gentoo": 2.5}',
        "--sample-weight", "w", "--loss", "huber", "--task", "regression", "--verbose", "2",
        "--validation-data", "val.csv", "--no-standardize-target", "--strategy", "cpu:2",
    ])
    config = _config_from(args)
    assert config.model_kwargs == {"hidden": [8]}
    assert config.metrics == ["mae", "mse"]
    assert config.column_types == {"zip": "categorical"}
    assert config.class_weight == {"Gentoo": 2.5}
    assert (config.sample_weight, config.loss, config.task) == ("w", "huber", "regression")
    assert (config.verbose, config.validation_data) == (2, "val.csv")
    assert config.standardize_target is False and config.strategy == "cpu:2"
    assert _config_from(parser.parse_args(["train", "--quiet"])).verbose == 0
    assert _config_from(parser.parse_args(["train"])) == TrainConfig()


@pytest.mark.parametrize("argv, named", [
    (["--model-kwargs", "{hidden: 8}"],
     ["--model-kwargs", "'{hidden: 8}'", '{"hidden": [64, 64]}']),
    (["--column-types", "[1, 2]"], ["--column-types", "'[1, 2]'", "not an object"]),
    (["--task", "regresion"], ["--task", "'regresion'", "'regression'"]),
])
def test_a_bad_flag_value_is_refused_naming_the_flag_and_what_is_valid(argv, named, capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", *argv])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tfkit: error: argument") and "Traceback" not in err
    for text in named:
        assert text in err


def test_penguins_model_served_gives_the_in_process_probabilities(tmp_path):
    result = tfkit.train("penguins", epochs=3, logdir=None, export=str(tmp_path),
                         verbose=False)
    rows = datasets.load("penguins").dropna().head(6)
    instances = [
        {c: (float(r[c]) if c in result.spec.numeric_columns else str(r[c]))
         for c in result.spec.columns}
        for _, r in rows.iterrows()
    ]
    client = create_app({"MODELS": str(tmp_path), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0}
                        ).test_client()
    response = client.post("/v1/models/penguins:predict", json={"instances": instances})
    assert response.status_code == 200, response.json
    served = np.array([p["probabilities"] for p in response.json["predictions"]])
    np.testing.assert_allclose(served, result.predict(rows), atol=1e-5)
    assert [p["classes"] for p in response.json["predictions"]] == [
        result.spec.class_names[i] for i in result.predict(rows).argmax(axis=1)
    ]
    assert tf.io.gfile.exists(os.path.join(result.export_path, "saved_model.pb"))
