"""The model zoo: small versions of the big names (ResNet, LSTM/GRU, temporal convolutions, GPT).

Each builder takes a `DataSpec` and size arguments with defaults that train in
minutes on two CPU cores; `tfkit.models.BUILDERS` registers them by name.
"""

from tfkit.zoo.flops import flops_per_example
from tfkit.zoo.recurrent import conv1d, gru, lstm
from tfkit.zoo.resnet import resnet
from tfkit.zoo.transformer import transformer

BUILDERS = {
    "conv1d": conv1d,
    "gru": gru,
    "lstm": lstm,
    "resnet": resnet,
    "transformer": transformer,
}

__all__ = ["BUILDERS", "conv1d", "flops_per_example", "gru", "lstm", "resnet", "transformer"]
