"""What the user sees of a run on stdout: a line per epoch, and a progress bar on a terminal."""

from __future__ import annotations

import sys
import time

import keras

from tfkit import console
from tfkit.state import STATS, TrainState


class EpochReport(keras.callbacks.Callback):
    """tfkit's progress line (Keras's `ProgbarLogger` is not added beside it).

    Each epoch ends with one line on stdout, flushed, at verbose 1 or 2. At
    verbose 1 on a terminal, Keras's `Progbar` draws the epoch's steps and
    running means while it runs; off a terminal (a notebook, a pipe, a log)
    no bar: carriage returns would pile up there. The bar's line always ends
    before anything else is printed, an error's traceback included.

    Example:
        >>> report = EpochReport(TrainState(), epochs=3, steps_per_epoch=7, verbose=2)
    """

    def __init__(self, state: TrainState, *, epochs: int, steps_per_epoch: int,
                 verbose: int | None) -> None:
        super().__init__()
        self.state, self.epochs, self.steps_per_epoch = state, epochs, steps_per_epoch
        self.verbose = console.verbosity(verbose)
        self._bar: keras.utils.Progbar | None = None
        self._open = False  # a bar line is drawn and not yet ended
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        shown = (self.verbose == 1 and console.on_terminal()
                 and keras.config.is_interactive_logging_enabled())
        # The values given are the epoch's running means already: shown as they
        # are (no metric is "stateless"), not averaged over the steps again.
        self._bar = keras.utils.Progbar(self.steps_per_epoch, stateless_metrics=()) if shown \
            else None

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        done = self.state.step % self.steps_per_epoch or self.steps_per_epoch
        values = [(k, v) for k, v in (logs or {}).items() if k not in STATS]
        self._bar.update(done, values, finalize=done >= self.steps_per_epoch)
        self._open = done < self.steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        self._end_line()
        seconds = time.perf_counter() - self._started
        console.say(epoch_line(epoch, self.epochs, seconds, self.state.history), self.verbose)
        if self.model.stop_training and epoch + 1 < self.epochs:
            console.say(f"stopped early after epoch {epoch + 1} of {self.epochs}", self.verbose)

    def on_train_abort(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._open = False


def epoch_line(epoch: int, epochs: int, seconds: float, history: dict[str, list[float]]) -> str:
    """One epoch's line: its number, its time, its loss and metrics.

    Example:
        >>> epoch_line(1, 20, 0.42, {"loss": [0.5, 0.31], "val_loss": [0.4, 0.29]})
        'epoch 2/20 - 0.4s - loss: 0.31 - val_loss: 0.29'
    """
    shown = " - ".join(f"{k}: {v[-1]:.4g}" for k, v in history.items() if v)
    return f"epoch {epoch + 1}/{epochs} - {seconds:.1f}s - {shown}"
