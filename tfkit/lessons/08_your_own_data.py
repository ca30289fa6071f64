# %% [markdown]
# # Lesson 8. Your own data: a messy CSV in, a served model that answers in its columns out
#
# Real tables come as they come: odd column names, numbers written with thousands separators,
# junk cells such as `?` or `-`, missing values, text columns, a target in dollars. This lesson
# makes such a table, then goes the whole way with it:
#
# 1. `tfkit.train` on the CSV file as it is;
# 2. what tfkit reported about the data (what it read, what it dropped, which task and why);
# 3. `tfkit.evaluate` on rows held out from training;
# 4. the export, a SavedModel that does its own preprocessing;
# 5. the model served over HTTP, asked for one price with the column names as written.
#
# Also a script: `tfkit tutorial 8 [--fast]`. In Jupyter, `TFKIT_LESSON_FAST=1` takes the fast
# path (fewer epochs).

# %%
import atexit
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import warnings

importlib.import_module("tfkit")  # first, so TensorFlow starts without its start-up lines

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402
import tensorflow as tf  # noqa: E402  (only to quiet its logger)

import tfkit  # noqa: E402
from tfkit import tutorials  # noqa: E402

FAST, WORKDIR = tutorials.setup()
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
tf.get_logger().setLevel("ERROR")
EPOCHS = 15 if FAST else 60
TARGET = "Sale Price ($)"

# %% [markdown]
# ## A messy table
#
# 400 houses. The price depends on the lot area, the year built and the neighborhood, plus
# noise. Then the mess: the areas are written like `"2,766"`, three of them as `?`, `-` and
# `N/A`, two years are missing, and the neighborhood is text. The last 60 rows are kept apart
# to evaluate on later; the other 340 go to a CSV file, as a spreadsheet would save them.

# %%
rng = np.random.default_rng(0)
n = 400
area = rng.uniform(600, 4000, n).round()
year = rng.integers(1920, 2022, n).astype(float)
hood = rng.choice(["Old Town", "Hillside", "Riverside"], n)
price = 60_000 + 150 * area + 900 * (year - 1920) + (hood == "Hillside") * 90_000
table = pd.DataFrame({
    "Lot Area": [f"{a:,.0f}" for a in area],  # "2,766": thousands separators
    "Year Built": year,
    "Neighborhood": hood,
    TARGET: (price + rng.normal(0, 15_000, n)).round(-2),
})
table.loc[[3, 50, 120], "Lot Area"] = ["?", "-", "N/A"]  # junk cells
table.loc[[7, 200], "Year Built"] = np.nan  # missing cells
held_out = table.iloc[-60:]
csv = os.path.join(WORKDIR, "houses.csv")
table.iloc[:-60].to_csv(csv, index=False)
print(f"Wrote: {csv}")
print(table.head(8).to_string())

# %% [markdown]
# ## 1. Train on the file as it is
#
# No cleaning by hand: `tfkit.train` reads the CSV, decides what each column is, and says
# what it did. A junk cell in a column of numbers is also a `tfkit.DataWarning`, shown on
# stderr as it happens.

# %%
result = tfkit.train(
    csv, target=TARGET, epochs=EPOCHS, strategy="cpu", seed=0, verbose=False,
    logdir=os.path.join(WORKDIR, "tensorboard_logs"), run_name="08_your_own_data",
    resume=False, export=os.path.join(WORKDIR, "models"), model_name="houses",
)
print(f"trained {EPOCHS} epochs: validation MAE ${result.history['val_mae'][-1]:,.0f}")

# %% [markdown]
# ## 2. What tfkit reported about the data
#
# Read it before trusting the model: which cells were not numbers, how the numbers were
# read, how many rows were dropped for missing values, and which task it inferred (with its
# reason). Rows with a missing cell are dropped by default; `missing="impute"` fills them.

# %%
for line in result.spec.report:
    print(line)

# %% [markdown]
# ## 3. Evaluate on the held-out rows
#
# `tfkit.evaluate` reads new rows the way the training rows were read (the same columns, the
# same cleaning) and answers in the target's units: the mean absolute error in dollars. The
# baseline that needs no model: always guess the mean training price.

# %%
scores = tfkit.evaluate(result, held_out)
mean_price = pd.to_numeric(table.iloc[:-60][TARGET]).mean()
baseline = float(np.mean(np.abs(held_out[TARGET] - mean_price)))
print(f"held-out rows: MAE {scores['mae']:,.0f} against {baseline:,.0f} for the mean price "
      f"({scores['count']} rows)")

# %% [markdown]
# ## 4. The export
#
# `export=` wrote a versioned SavedModel. It takes the raw columns, by their names as
# written, and does its own preprocessing (number scaling, the neighborhood's vocabulary),
# so a client sends values, not features.

# %%
print(f"Wrote: {result.export_path}")
for name in sorted(os.listdir(result.export_path)):
    print(f"     {name}")

# %% [markdown]
# ## 5. Serve it, and ask for one price
#
# The server runs in a process of its own on a free port of 127.0.0.1, REST only (`--port`
# without TF Serving's `--rest_api_port` starts no gRPC), with one worker process, and
# stops at the end of the lesson, or when this Python exits. The request names the columns
# exactly as the CSV did, spaces and all; numbers go as JSON numbers, since the exported
# model reads values, not the CSV's junk cells.

# %%
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))  # port 0: the system picks a free one
    port = sock.getsockname()[1]
server = subprocess.Popen(
    [sys.executable, "-m", "serving", "--models", os.path.join(WORKDIR, "models"),
     "--port", str(port), "--host", "127.0.0.1", "--workers", "1"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop() -> None:
    server.terminate()  # SIGTERM: the server finishes its requests and exits
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


atexit.register(stop)
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 180  # the server imports TensorFlow and loads the model first
while True:
    if time.monotonic() > deadline or server.poll() is not None:
        raise RuntimeError("the server did not come up: try `tfkit serve` in a shell")
    try:
        if requests.get(f"{base}/v1/models/houses", timeout=5).ok:
            break
    except (requests.ConnectionError, requests.Timeout):
        pass  # not listening yet, or still loading TensorFlow and the model
    time.sleep(0.5)

# %%
house = {"Lot Area": 2100, "Year Built": 1995, "Neighborhood": "Hillside"}
body = {"instances": [house]}
print(f"$ curl -s -X POST {base}/v1/models/houses:predict -d '{json.dumps(body)}'")
answer = requests.post(f"{base}/v1/models/houses:predict", json=body, timeout=30)
print(f"HTTP {answer.status_code}: {answer.text.strip()}")
answer.raise_for_status()
value = float(np.ravel(answer.json()["predictions"][0])[0])
truth = 60_000 + 150 * 2100 + 900 * (1995 - 1920) + 90_000
print(f"predicted price for {house}: {value:,.0f} (the rule that made the data says "
      f"{truth:,.0f}, before noise)")

# %%
stop()
print("server stopped")
print(f"Look at: tensorboard --logdir {os.path.join(WORKDIR, 'tensorboard_logs')}")
