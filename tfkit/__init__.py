"""tfkit: train Keras models with a transparent tf.distribute loop, watch them learn, serve them."""

from tfkit import datasets, models
from tfkit.config import TrainConfig
from tfkit.data import DataSpec
from tfkit.distribute import describe as devices
from tfkit.memory import MemoryEstimate
from tfkit.memory import OutOfMemoryError
from tfkit.memory import estimate_memory
from tfkit.train import TrainResult, train

__all__ = [
    "DataSpec",
    "MemoryEstimate",
    "OutOfMemoryError",
    "TrainConfig",
    "TrainResult",
    "datasets",
    "devices",
    "estimate_memory",
    "models",
    "train",
]

__version__ = "0.1.0"
