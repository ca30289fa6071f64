"""tfkit: train Keras models with a transparent tf.distribute loop, watch them learn, serve them."""

from tfkit import datasets
from tfkit import models
from tfkit.checkpoints import NonFiniteLossError
from tfkit.config import TrainConfig
from tfkit.data import DataSpec
from tfkit.distribute import describe as devices
from tfkit.export import export_model as export
from tfkit.interrupts import TrainingInterrupted
from tfkit.memory import MemoryEstimate
from tfkit.memory import OutOfMemoryError
from tfkit.memory import estimate_memory
from tfkit.train import TrainResult
from tfkit.text import generate
from tfkit.train import train

__all__ = [
    "DataSpec",
    "MemoryEstimate",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "datasets",
    "devices",
    "estimate_memory",
    "export",
    "generate",
    "models",
    "train",
]

__version__ = "0.1.0"
