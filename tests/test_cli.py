"""The `tfkit` command: the README's main job, training flags, clear refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import tfkit
from serving import create_app
from tfkit import datasets

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


def test_devices_reports_what_auto_picks(tmp_path):
    done = _tfkit("devices", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout)["auto_picks"] == "cpu"


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
