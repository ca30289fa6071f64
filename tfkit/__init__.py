"""tfkit: train Keras models with a transparent tf.distribute loop, watch them learn, serve them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from tfkit import _quiet

# Before any tfkit module (or Keras) imports TensorFlow, whichever the user touches first.
_quiet.install()

# Public name → (module, attribute; None: the module itself). Imported on first use
# (PEP 562), so `import tfkit` and `tfkit --help` do not start TensorFlow.
_PUBLIC: dict[str, tuple[str, str | None]] = {
    "DataSpec": ("tfkit.data", "DataSpec"),
    "DataWarning": ("tfkit.data", "DataWarning"),
    "ExportError": ("tfkit.train", "ExportError"),
    "MemoryEstimate": ("tfkit.memory", "MemoryEstimate"),
    "NonFiniteLossError": ("tfkit.checkpoints", "NonFiniteLossError"),
    "OutOfMemoryError": ("tfkit.memory", "OutOfMemoryError"),
    "TrainConfig": ("tfkit.config", "TrainConfig"),
    "TrainResult": ("tfkit.train", "TrainResult"),
    "TrainingInterrupted": ("tfkit.interrupts", "TrainingInterrupted"),
    "datasets": ("tfkit.datasets", None),
    "devices": ("tfkit.distribute", "describe"),
    "estimate_memory": ("tfkit.memory", "estimate_memory"),
    "evaluate": ("tfkit.evaluate", "evaluate"),
    "export": ("tfkit.train", "export"),
    "generate": ("tfkit.text", "generate"),
    "models": ("tfkit.models", None),
    "train": ("tfkit.train", "train"),
}

__all__ = list(_PUBLIC)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'tfkit' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: tfkit.data
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps `tfkit.train` and `tfkit.export` the functions once their modules load.

    Importing a submodule sets it as an attribute of the package, and the modules
    `tfkit.train` and `tfkit.export` share their names with public functions.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        function = _PUBLIC.get(name, ("", None))[1] is not None
        if function and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
