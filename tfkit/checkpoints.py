"""Checkpoints: save every N steps or M seconds, resume exactly, never save bad weights."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

INITIAL = "initial"  # the starting weights, kept outside the rotation


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names where and what came before."""


class Checkpointer:
    """Model, optimizer and position in the data, under `<run>/checkpoints`.

    The position is the global step: the data stream is re-made from the seed
    and the steps already done are skipped, so a resumed run sees exactly the
    batches an uninterrupted one would. Beside each checkpoint a small JSON
    file keeps the history so far.

    Only the chief writes to `directory`; other workers must still take part
    in saving (it may involve collectives), so they write to a temporary
    folder that is removed.

    Example:
        >>> ckpt = Checkpointer("/tmp/run/checkpoints", model=m, optimizer=o)  # doctest: +SKIP
        >>> state = ckpt.restore()                                              # doctest: +SKIP
    """

    def __init__(
        self, directory: str, *, model: keras.Model, optimizer: keras.optimizers.Optimizer,
        chief: bool = True, every_steps: float = float("inf"), every_seconds: float = 120.0,
        keep: int = 3, keep_initial: bool = True,
    ) -> None:
        self.directory, self.chief = directory, chief
        self.keep_initial = keep_initial
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.model = model
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=self.step)
        self._write_dir = directory if chief else tempfile.mkdtemp(prefix="tfkit-ckpt-")
        self.manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir, keep)
        self._last_step = 0
        self._last_time = time.monotonic()

    def save_initial(self) -> None:
        """Keep the starting weights outside the rotation: the last resort of a rollback.

        Only with `keep_initial`: nothing else reads them.
        """
        self.step.assign(0)
        if self.chief and self.keep_initial:
            self.checkpoint.write(os.path.join(self.directory, INITIAL))

    def restore(self, back: int | None = 0) -> dict[str, Any] | None:
        """Load a checkpoint of `directory`; returns its state, or None if there is none.

        Args:
            back: 0 for the newest checkpoint, 1 for the one before it, ...
                (the oldest kept one when there are fewer); None for the
                starting weights kept by `save_initial`.
        """
        if back is None:
            initial = os.path.join(self.directory, INITIAL)
            if not tf.io.gfile.exists(initial + ".index"):
                return None
            # Written without the manager's save counter; everything else must match.
            self.checkpoint.restore(initial).expect_partial()
            self._last_step, self._last_time = 0, time.monotonic()
            return {"step": 0, "history": {}}
        state = tf.train.get_checkpoint_state(self.directory)
        if state is None or not state.all_model_checkpoint_paths:
            return None
        paths = list(state.all_model_checkpoint_paths)
        latest = paths[max(0, len(paths) - 1 - back)]
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        step = int(self.step.numpy())
        self._last_step, self._last_time = step, time.monotonic()
        state_path = _state_path(latest)
        state = {"step": step, "history": {}}
        if os.path.exists(state_path):
            with open(state_path) as f:
                state.update(json.load(f))
        return state

    def due(self, step: int) -> bool:
        return (
            step - self._last_step >= self.every_steps
            or time.monotonic() - self._last_time >= self.every_seconds
        )

    def save(self, step: int, state: dict[str, Any]) -> str | None:
        """Save at `step` (with the JSON `state`), unless a weight is not finite.

        Returns the checkpoint's path, or None when the weights were refused.
        """
        bad = _non_finite_weights(self.model)
        if bad:
            log.error("not saving a checkpoint at step %d: non-finite values in %s", step, bad)
            return None
        self.step.assign(step)
        prefix = os.path.join(self._write_dir, f"ckpt-{step}")
        # The state first, each file written whole then renamed: a crash at any
        # point leaves the previous checkpoint as the newest readable one.
        if self.chief:
            _atomic_json(_state_path(prefix), {**state, "step": step})
        path = self.manager.save(checkpoint_number=step)
        self._last_step, self._last_time = step, time.monotonic()
        if self.chief:
            self._drop_stale_states()
        else:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            os.makedirs(self._write_dir, exist_ok=True)
        return path

    def annotate(self, extra: dict[str, Any]) -> None:
        """Add keys to the newest checkpoint's state (e.g. where the model was exported)."""
        latest = self.manager.latest_checkpoint
        if latest is None or not self.chief:
            return
        path = _state_path(latest)
        state = {}
        if os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
        _atomic_json(path, {**state, **extra})

    def _drop_stale_states(self) -> None:
        kept = {_state_path(p) for p in self.manager.checkpoints}
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".state.json") and path not in kept:
                os.remove(path)

    def close(self) -> None:
        if not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)


def clear(directory: str) -> None:
    """Remove a run's checkpoints (`resume=False` starts fresh)."""
    shutil.rmtree(directory, ignore_errors=True)


def _state_path(checkpoint_prefix: str) -> str:
    return checkpoint_prefix + ".state.json"


def _atomic_json(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _non_finite_weights(model: keras.Model) -> list[str]:
    return [
        v.path for v in model.weights
        if np.issubdtype(np.dtype(v.dtype), np.floating)
        and not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
    ]
