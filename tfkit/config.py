"""The one frozen configuration of a training run, validated on creation."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

TASKS = ("auto", "regression", "binary", "multiclass")
# The optimizers tfkit makes by name (tfkit.optimizers.make, the CLI, the memory estimate),
# each with the state it keeps per trainable weight, in copies of the weights.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1, "rmsprop": 1}
OPTIMIZERS = tuple(OPTIMIZER_SLOTS)
LR_SCHEDULES = ("constant", "cosine")
STRATEGY_NAMES = ("auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu")
MISSING_POLICIES = ("drop", "impute")
COLUMN_TYPES = ("numeric", "categorical")
NAN_POLICIES = ("stop", "restore")
MIXED_PRECISIONS = (None, "mixed_float16", "mixed_bfloat16")
VERBOSITY = (0, 1, 2)  # Keras's: silent, progress bar (terminal) + epoch line, epoch line only
CPU_N = re.compile(r"^cpu:(\d+)$")  # strategy "cpu:N": N logical CPU devices


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; `tfkit.train(**kwargs)` builds one of these.

    A field's trailing comment is also its flag's text in `tfkit train --help`.

    Example:
        >>> cfg = TrainConfig(data="penguins", target="species", epochs=5)
        >>> cfg.batch_size
        32
    """

    data: Any = "penguins"  # bundled name | DataFrame | (X, y) | CSV path | tf.data.Dataset
    target: str | None = None  # column to predict; bundled datasets bring their own
    model: Any = "mlp"  # builder name | keras.Model | callable(spec) -> keras.Model
    task: str = "auto"  # what the model predicts; auto: inferred from the target
    loss: Any = None  # Keras loss name or object; None: a compiled model's, else the task's
    metrics: Any = None  # Keras metric names/objects; None: a compiled model's, else the task's
    column_types: dict | None = None  # {"zip": "categorical", "rooms": "numeric"}: overrides
    validation_data: Any = None  # same kinds as data; when given, replaces validation_split
    class_weight: dict | None = None  # {class name or id: weight}; missing classes weigh 1
    sample_weight: str | None = None  # a table column of per-row weights (not a feature)
    standardize_target: bool = True  # regression: learn (y - mean) / std, answer in y's units
    epochs: int = 20  # passes over the training rows
    batch_size: int = 32  # global batch, split across replicas
    learning_rate: float = 1e-3  # the optimizer's step size (the start, with a schedule)
    optimizer: str = "adam"  # Keras optimizer
    lr_schedule: str = "constant"  # cosine: down to ~0 by the last epoch, which settles
    validation_split: float = 0.2  # share of the rows held out to validate
    seed: int = 0  # shuffling, the split and initial weights
    strategy: Any = "auto"  # tf.distribute strategy; cpu:N: N logical CPUs (or a Strategy)
    steps_per_execution: int | None = None  # None: chosen from the epoch length
    clip_norm: float | None = None  # clip by the global norm across all replicas
    early_stopping_patience: int | None = None  # epochs without val_loss improvement
    missing: str = "drop"  # rows with a missing value: drop them or impute (median / "missing")
    logdir: str | None = "tensorboard_logs"  # TensorBoard runs go here; None: no logs
    run_name: str | None = None  # default: <dataset>-<model>-<timestamp>
    export: str | None = "models"  # model repository; None skips export
    model_name: str | None = None  # folder under the repository; default: the dataset's name
    log_every_steps: int = 10  # step-level scalars in TensorBoard
    histogram_every_steps: int = 50  # weight/gradient histograms and update ratios; 0: off
    profile: bool = False  # a profiler trace of a few calls, for TensorBoard's Profile tab
    checkpoint_every_steps: int | None = None  # None: by time (several workers: each epoch)
    checkpoint_every_seconds: float = 120.0  # saving costs ~0.1 s; a clock keeps it rare
    keep_checkpoints: int = 3  # the newest ones kept
    checkpoint_dir: str | None = None  # default: <logdir>/<run_name>/checkpoints
    resume: bool = True  # same run name: continue from its last checkpoint
    deterministic: bool | None = None  # op determinism; None: on for CPU-only runs
    on_nan: str = "stop"  # non-finite loss: stop, or restore the last checkpoint at half the lr
    max_nan_restores: int = 3  # on_nan=restore: restores before giving up
    mixed_precision: str | None = None  # "mixed_float16" (GPU) or "mixed_bfloat16" (TPU, CPU)
    jit_compile: bool = False  # compile steps with XLA; measured slower on CPU for small models
    fused_update: bool = True  # plain Adam/SGD update in fused kernels (FusedAdam); same weights
    in_memory_input: bool = True  # CPU devices: batches gathered in the compiled loop
    verbose: int | None = None  # 0 silent, 1 bar + epoch lines, 2 epoch lines; None: 1 on a tty
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # passed to the builder
    window: int | None = None  # steps per example: a series' input window, a text's context

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every_steps", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(
                f"validation_split must be in [0, 1), got {self.validation_split!r}"
            )
        _check_choice("task", self.task, TASKS)
        if self.verbose is not None and (self.verbose not in VERBOSITY):
            raise ValueError(f"verbose must be 0, 1, 2 or None (1 on a terminal, else 2); "
                             f"got {self.verbose!r}")
        for name in ("column_types", "class_weight"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict or None; got {type(value).__name__}")
        for column, kind in (self.column_types or {}).items():
            if kind not in COLUMN_TYPES:
                raise ValueError(
                    f"column_types[{column!r}] must be one of {', '.join(COLUMN_TYPES)}; "
                    f"got {kind!r}"
                )
        for label, weight in (self.class_weight or {}).items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"class_weight[{label!r}] must be a number >= 0; got {weight!r}")
        if self.sample_weight is not None and not isinstance(self.sample_weight, str):
            raise ValueError(f"sample_weight must be a column name or None; "
                             f"got {type(self.sample_weight).__name__}")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("missing", self.missing, MISSING_POLICIES)
        _check_choice("on_nan", self.on_nan, NAN_POLICIES)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        if self.checkpoint_every_steps is not None and (
            isinstance(self.checkpoint_every_steps, bool)
            or not isinstance(self.checkpoint_every_steps, int)
            or self.checkpoint_every_steps <= 0
        ):
            raise ValueError(
                f"checkpoint_every_steps must be a positive integer or None, "
                f"got {self.checkpoint_every_steps!r}"
            )
        if not self.checkpoint_every_seconds > 0:
            raise ValueError(
                f"checkpoint_every_seconds must be > 0, got {self.checkpoint_every_seconds!r}"
            )
        if isinstance(self.strategy, str):
            if self.strategy not in STRATEGY_NAMES and not CPU_N.match(self.strategy):
                allowed = ", ".join(STRATEGY_NAMES + ("cpu:N",))
                raise ValueError(
                    f"strategy must be one of {allowed} or a tf.distribute.Strategy, "
                    f"got {self.strategy!r}"
                )
            match = CPU_N.match(self.strategy)
            if match and int(match.group(1)) < 1:
                raise ValueError(f"strategy 'cpu:N' needs N >= 1, got {self.strategy!r}")
        if self.histogram_every_steps < 0:
            raise ValueError(
                f"histogram_every_steps must be >= 0 (0 turns histograms off), "
                f"got {self.histogram_every_steps!r}"
            )
        if self.steps_per_execution is not None and self.steps_per_execution <= 0:
            raise ValueError(
                f"steps_per_execution must be a positive integer or None, "
                f"got {self.steps_per_execution!r}"
            )
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm!r}")
        if self.window is not None and (
            isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1
        ):
            raise ValueError(
                f"window must be a positive integer or None (the data's default), "
                f"got {self.window!r}"
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"early_stopping_patience must be >= 1 or None, "
                f"got {self.early_stopping_patience!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (objects shown by their type name)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or isinstance(value, (bool, int, float, str)):
                out[field.name] = value
            elif isinstance(value, dict):
                out[field.name] = {k: repr(v) for k, v in value.items()}
            else:
                out[field.name] = f"<{type(value).__name__}>"
        return out


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
