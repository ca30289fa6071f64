"""The model zoo's "must show" numbers, measured: run by hand, results in benchmarks/RESULTS.md.

    PYTHONPATH=. python benchmarks/zoo_goals.py [resnet] [lstm_recipe] [lstm] [transformer]

- resnet on digits: validation accuracy (goal >= 0.97);
- lstm on sunspots: one-step-ahead validation MAE against the naive "same as
  last month" forecast (goal: at least 20 % lower), with linear AR fits and an
  MLP beside; `lstm_recipe` chooses epochs and schedule on the training months;
- transformer on the stdlib docstrings: validation loss in nats per character
  after at most 10 minutes of training on this CPU, against the unigram
  baseline (goal: at least 1.0 lower); samples; the served model over HTTP.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time

import keras
import numpy as np

import tfkit
from tfkit import data, sequences

TEN_MINUTES = 600.0


class TimeLimit(keras.callbacks.Callback):
    """Stops after the epoch that would let the next one overrun `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.longest = seconds, 0.0

    def on_train_begin(self, logs=None):
        self.started = self.epoch_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.epoch_started)
        # 1.5x: the machine is shared, an epoch can run slower than the last
        if now - self.started + 1.5 * self.longest > self.seconds:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.trained = time.perf_counter() - self.started


def resnet_on_digits(models_dir: str) -> dict:
    started = time.perf_counter()
    result = tfkit.train("digits", model="resnet", epochs=30, batch_size=64, strategy="cpu",
                         logdir=None, export=models_dir)
    return {"val_accuracy": result.history["val_accuracy"][-1],
            "best_val_accuracy": max(result.history["val_accuracy"]),
            "epochs": len(result.history["loss"]), "seconds": time.perf_counter() - started,
            "export": result.export_path}


def lstm_on_sunspots(models_dir: str) -> dict:
    """The LSTM at the recipe chosen on the training months (`lstm_recipe_on_training_months`).

    The validation months are looked at once, after training: no epoch or setting
    is chosen by them (the best epoch is shown, but it is an optimistic number).
    """
    started = time.perf_counter()
    result = tfkit.train("sunspots", model="lstm", window=24, epochs=30, batch_size=32,
                         lr_schedule="cosine", strategy="cpu", logdir=None, export=models_dir)
    naive = result.spec.info["naive_validation_mae"]
    mae = result.history["val_mae"][-1]
    val_x, val_y = data.prepare("sunspots", window=24).validation_arrays
    from serving import create_app

    client = create_app({"MODELS": models_dir, "FILE_SYSTEM_POLL_WAIT_SECONDS": 0}).test_client()
    served = client.post("/v1/models/sunspots:predict", json={"instances": val_x[-1:].tolist()})
    mlp = tfkit.train("sunspots", model="mlp", window=24, epochs=30, batch_size=32,
                      lr_schedule="cosine", strategy="cpu", logdir=None, export=None)
    return {"val_mae": mae, "naive_val_mae": naive, "reduction_vs_naive": 1 - mae / naive,
            "best_epoch_val_mae (chosen on validation: optimistic)": min(result.history["val_mae"]),
            "epochs": len(result.history["loss"]), "seconds": time.perf_counter() - started,
            "mlp_val_mae": mlp.history["val_mae"][-1],
            "linear_ar_val_mae": {f"{scale} AR({w})": _linear_ar_mae(w, scale == "sqrt")
                                  for scale in ("raw", "sqrt") for w in (24, 48)},
            "served": {"last_window_ends": val_x[-1, -3:].tolist(), "label": float(val_y[-1]),
                       "http_status": served.status_code, "answer": served.get_json()},
            "export": result.export_path}


def lstm_recipe_on_training_months(models_dir: str) -> dict:
    """The choice of epochs and schedule, on 1749-1956 only: its last 20 % of months validate."""
    series = sequences.load_series("sunspots")
    train_part = sequences.Series(
        "sunspots", series.values[:-624], series.times[:-624], series.filled[:-624],
        scale=series.scale,
    )
    out = {}
    for epochs, schedule in ((30, "cosine"), (60, "cosine"), (40, "constant")):
        result = tfkit.train(train_part, model="lstm", window=24, epochs=epochs, batch_size=32,
                             lr_schedule=schedule, strategy="cpu", logdir=None, export=None)
        curve = result.history["val_mae"]
        out[f"{epochs} epochs, {schedule}"] = {
            "final": curve[-1], "last_5_epochs": [round(v, 2) for v in curve[-5:]],
            "naive": result.spec.info["naive_validation_mae"],
            "first_validation_time": result.spec.info["first_validation_time"]}
    return out


def _linear_ar_mae(window: int, sqrt: bool = False) -> float:
    """A least-squares linear autoregression on the same windows (raw or square roots)."""
    prepared = data.prepare("sunspots", window=window)
    x, y = (np.concatenate([b.numpy() for b in part]) for part in zip(*prepared.train.batch(4096),
                                                                        strict=True))
    val_x, val_y = prepared.validation_arrays
    scale = np.sqrt if sqrt else np.asarray
    coef = np.linalg.lstsq(np.c_[scale(x), np.ones(len(x))], scale(y), rcond=None)[0]
    forecast = np.c_[scale(val_x), np.ones(len(val_x))] @ coef
    if sqrt:
        forecast = np.maximum(forecast, 0) ** 2
    return float(np.mean(np.abs(forecast - val_y)))


def transformer_on_docstrings(models_dir: str) -> dict:
    started = time.perf_counter()
    limit = TimeLimit(TEN_MINUTES)
    result = tfkit.train("python_docstrings", model="transformer", window=64, epochs=50,
                         batch_size=32, learning_rate=2e-3, strategy="cpu", logdir=None,
                         export=models_dir, callbacks=[limit])
    baseline = result.spec.info["unigram_validation_loss"]
    val_loss = result.history["val_loss"][-1]
    samples = {t: tfkit.generate(result.model, "Return the ", 160, temperature=t, seed=1)
               for t in (0.5, 0.8)}
    from serving import create_app

    client = create_app({"MODELS": models_dir, "FILE_SYSTEM_POLL_WAIT_SECONDS": 0}).test_client()
    served = client.post("/v1/models/python_docstrings:predict",
                         json={"instances": [{"prompt": "def ", "length": 80}]})
    return {"val_loss": val_loss, "unigram_val_loss": baseline, "gap": baseline - val_loss,
            "val_accuracy": result.history["val_accuracy"][-1],
            "epochs": len(result.history["loss"]), "training_seconds": limit.trained,
            "val_loss_per_epoch": result.history["val_loss"],
            "seconds_with_export": time.perf_counter() - started,
            "parameters": result.model.count_params(), "samples": samples,
            "http_status": served.status_code, "http_answer": served.get_json()}


GOALS = {"resnet": resnet_on_digits, "lstm_recipe": lstm_recipe_on_training_months,
         "lstm": lstm_on_sunspots,
         "transformer": transformer_on_docstrings}


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    models_dir = tempfile.mkdtemp(prefix="zoo-goals-")
    for name in argv or list(GOALS):
        print(name, json.dumps(GOALS[name](models_dir), indent=1, sort_keys=True), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
