"""The outer loop: one line per epoch wherever stdout goes, a bar on a terminal only, and
a history of loss and metrics with the run's other figures kept beside it."""

import io
import json
import os
import re
import subprocess
import sys

import keras
import pytest

import tfkit
from tfkit import datasets, loop
from tfkit.state import STATS, TrainState

EPOCHS = 3
# 256 rows: 205 to train on, 7 steps of 32 per epoch, two steps per call: a bar is
# drawn part-way through each epoch before it is full.
TINY = dict(model="linear_regression", epochs=EPOCHS, batch_size=32, steps_per_execution=2,
            strategy="cpu", logdir=None, export=None)
BAR = ("━", "[====")


class Terminal(io.StringIO):
    """A stdout that says it is a terminal, as a shell's is."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def data():
    return datasets.make_linear(256)


@pytest.fixture
def positions(monkeypatch):
    """The states tfkit.train hands the loop: they carry `stats`."""
    seen = []
    real = loop.run

    def spy(**kwargs):
        seen.append(kwargs["state"])
        return real(**kwargs)

    monkeypatch.setattr(loop, "run", spy)
    return seen


def epoch_lines(out: str) -> list[str]:
    return [line for line in out.split("\n") if "epoch " in line]


def shown(line: str, name: str) -> float:
    return float(re.search(rf"(?:^| ){name}: (\S+)", line).group(1))


@pytest.mark.parametrize("verbose", [None, 1, 2, True])
def test_off_a_terminal_each_epoch_prints_one_line_and_no_bar(data, capsys, verbose):
    result = tfkit.train(data, verbose=verbose, **TINY)
    out = capsys.readouterr().out
    lines = epoch_lines(out)
    assert [line.split(" - ")[0] for line in lines] == [
        f"epoch {k}/{EPOCHS}" for k in range(1, EPOCHS + 1)
    ]
    assert "\r" not in out and not any(mark in out for mark in BAR)
    for k, line in enumerate(lines):
        # What is printed is what the history holds, validation included.
        assert shown(line, "loss") == pytest.approx(result.history["loss"][k], rel=1e-3)
        assert shown(line, "val_loss") == pytest.approx(result.history["val_loss"][k], rel=1e-3)
        assert "grad_norm" not in line and "samples_per_second" not in line


@pytest.mark.parametrize("verbose", [0, False])
def test_verbose_0_prints_nothing(data, capsys, verbose):
    tfkit.train(data, verbose=verbose, **TINY)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("verbose", "bar"), [(None, True), (1, True), (2, False)])
def test_on_a_terminal_the_bar_never_shares_a_line_with_an_epoch_line(
    data, monkeypatch, verbose, bar
):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    tfkit.train(data, verbose=verbose, **TINY)
    monkeypatch.undo()
    out = terminal.getvalue()
    assert any(mark in out for mark in BAR) == bar
    lines = out.split("\n")
    assert [line.split(" - ")[0] for line in lines if "epoch " in line] == [
        f"epoch {k}/{EPOCHS}" for k in range(1, EPOCHS + 1)
    ]
    for line in lines:
        assert not ("epoch " in line and any(mark in line for mark in BAR)), repr(line)
    if bar:
        # The bar's values are the epoch's running means, so its last one is the epoch's loss.
        for k in range(1, EPOCHS + 1):
            finished = lines[lines.index(next(x for x in lines
                                              if x.startswith(f"epoch {k}/"))) - 1]
            last_draw = finished.split("\r")[-1]
            assert shown(last_draw, "loss") == pytest.approx(
                shown(next(x for x in lines if x.startswith(f"epoch {k}/")), "loss"), rel=1e-3)


def test_an_error_mid_epoch_leaves_the_bar_line_ended(data, monkeypatch):
    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch >= 3:
                raise RuntimeError("stop mid-epoch")

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with pytest.raises(RuntimeError, match="stop mid-epoch"):
        tfkit.train(data, callbacks=[Fail()], **TINY)
    monkeypatch.undo()
    out = terminal.getvalue()
    assert any(mark in out for mark in BAR)
    assert out.endswith("\n")  # the traceback (and the next prompt) start a line of their own


def test_a_pipe_gets_each_epoch_line_as_it_is_printed(tmp_path):
    code = (
        "import os, tfkit\n"
        "from tfkit import datasets\n"
        "tfkit.train(datasets.make_linear(64), model='linear_regression', epochs=2,\n"
        "            strategy='cpu', logdir=None, export=None)\n"
        # Leaves without Python's final flush: only lines already flushed reach the pipe.
        "os._exit(0)\n"
    )
    # Python's own default for a pipe: block-buffered, as in a CI job or `| tee`.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split(" - ")[0] for line in epoch_lines(proc.stdout)] == [
        "epoch 1/2", "epoch 2/2"
    ], proc.stdout
    assert "\r" not in proc.stdout and not any(mark in proc.stdout for mark in BAR)


def test_history_holds_loss_and_metrics_and_stats_the_rest(data, positions):
    result = tfkit.train(data, learning_rate=0.01, verbose=0, **TINY)
    history, stats = result.history, positions[-1].stats
    train_keys = {k for k in history if not k.startswith("val_")}
    assert "loss" in train_keys
    assert {k for k in history if k.startswith("val_")} == {f"val_{k}" for k in train_keys}
    assert not set(history) & set(STATS)
    assert set(stats) == {"samples_per_second", "learning_rate", "grad_norm"}
    assert all(len(values) == EPOCHS for values in [*history.values(), *stats.values()])
    assert stats["learning_rate"] == pytest.approx([0.01] * EPOCHS)
    assert min(stats["samples_per_second"]) > 0 and min(stats["grad_norm"]) > 0


def test_train_result_carries_the_stats(data):
    result = tfkit.train(data, verbose=0, **TINY)
    assert set(result.stats) == set(STATS)
    assert len(result.stats["samples_per_second"]) == EPOCHS


def test_a_resumed_run_continues_history_and_stats(data, tmp_path, positions):
    options = {**TINY, "logdir": str(tmp_path), "run_name": "resume", "verbose": 0}
    first = tfkit.train(data, **{**options, "epochs": 2})
    first_stats = {k: list(v) for k, v in positions[-1].stats.items()}
    more = tfkit.train(data, **options)
    assert more.history["loss"][:2] == first.history["loss"]
    assert {k: v[:2] for k, v in positions[-1].stats.items()} == first_stats
    assert all(len(v) == EPOCHS for v in positions[-1].stats.values())


def test_train_state_round_trips_through_json_and_moves_old_stats():
    state = TrainState(step=14, history={"loss": [0.5, 0.4]}, stats={"grad_norm": [1.5, 1.2]},
                       last_loss=0.39, export_path="models/x/1")
    saved = json.loads(json.dumps({**state.saved(), "step": state.step}))
    assert TrainState.from_saved(saved) == state
    # A checkpoint saved while stats still sat in the history.
    old = TrainState.from_saved({"step": 7, "history": {"loss": [0.5], "grad_norm": [1.5]}})
    assert old.history == {"loss": [0.5]} and old.stats == {"grad_norm": [1.5]}
