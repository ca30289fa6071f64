"""Where a run stands: the one training-state object the loop, callbacks and checkpoints share."""

from __future__ import annotations

import dataclasses
from typing import Any

# How training ran rather than what it learned: kept per epoch beside the history.
STATS = ("samples_per_second", "learning_rate", "grad_norm")


@dataclasses.dataclass
class Call:
    """The last compiled call: steps tried and run, its time, and its summed totals."""

    tried: int = 0
    ran: int = 0
    seconds: float = 0.0
    totals: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainState:
    """The global step, the epochs so far, and what this epoch has summed.

    `history` holds loss and metrics per epoch (`loss`, `accuracy`, `val_loss`,
    ...), as Keras's `History` does; `stats` holds the `STATS` per epoch. A
    checkpoint keeps `saved()`; `call_steps` is the size of the next call, which
    a callback may lower in `on_train_batch_begin` (the monitor's one-step
    inspections); `call` is the last call, for `on_train_batch_end`.
    """

    step: int = 0
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    stats: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    epoch_totals: dict[str, float] = dataclasses.field(default_factory=dict)
    last_loss: float | None = None  # the last finite per-step loss seen
    export_path: str | None = None  # where a finished run was exported
    call_steps: int = dataclasses.field(default=0, compare=False)
    call: Call = dataclasses.field(default_factory=Call, compare=False)

    def saved(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the step (the checkpointer adds that)."""
        out = {"history": self.history, "stats": self.stats,
               "epoch_totals": self.epoch_totals, "last_loss": self.last_loss}
        return {**out, "export_path": self.export_path} if self.export_path else out

    @classmethod
    def from_saved(cls, saved: dict[str, Any] | None) -> TrainState:
        """The state a checkpoint's JSON (`saved()` plus `step`) describes; None: a fresh start.

        Checkpoints saved before `stats` was kept apart hold the stats in the
        history; they move to `stats`.

        Example:
            >>> state = TrainState.from_saved(
            ...     {"step": 8, "history": {"loss": [0.5], "grad_norm": [2.0]}})
            >>> state.history, state.stats
            ({'loss': [0.5]}, {'grad_norm': [2.0]})
        """
        saved = saved or {}
        history = dict(saved.get("history") or {})
        stats = dict(saved.get("stats") or {})
        for key in STATS:
            if key in history:
                stats.setdefault(key, history.pop(key))
        return cls(step=saved.get("step", 0), history=history, stats=stats,
                   epoch_totals=dict(saved.get("epoch_totals") or {}),
                   last_loss=saved.get("last_loss"), export_path=saved.get("export_path"))

    def end_epoch(self, logs: dict[str, float]) -> None:
        """Add the epoch's metrics to the history and its stats to `stats`."""
        for key, value in logs.items():
            (self.stats if key in STATS else self.history).setdefault(key, []).append(value)
        self.epoch_totals = {}

    def last_epoch(self) -> dict[str, float]:
        """The last epoch's values for Keras callbacks: metrics, and the stats as well
        (Keras's own learning-rate callbacks add `learning_rate` to these logs too)."""
        return {k: v[-1] for k, v in {**self.history, **self.stats}.items() if v}
