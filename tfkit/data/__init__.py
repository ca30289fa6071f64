"""Turn what the user hands `train(data=...)` into a data spec and tf.data pipelines.

`prepare` (dispatch.py) hands the data to the reader for its kind: tables.py,
series.py, corpus.py, arrays.py or streams.py; each builds a `DataSpec`
(spec.py). new_data.py reads later data as training read it; pipelines.py
feeds the training loop.
"""

from tfkit.data.cells import MISSING_MARKERS, NUMERIC_SHARE
from tfkit.data.dispatch import prepare
from tfkit.data.messages import DataWarning
from tfkit.data.new_data import model_inputs, prepare_like, read_features
from tfkit.data.pipelines import (
    GatheredBatches,
    eval_input_fn,
    row_batches,
    steps_per_epoch,
    train_input_fn,
)
from tfkit.data.spec import PEEK as _PEEK  # noqa: F401  (the old tfkit.data's names)
from tfkit.data.spec import DataSpec, PreparedData
from tfkit.data.spec import in_memory as _in_memory  # noqa: F401
from tfkit.data.target import CLASS_ID_RANGE, MAX_CLASSES_FOR_INTEGER_TARGET

__all__ = [
    "CLASS_ID_RANGE",
    "MAX_CLASSES_FOR_INTEGER_TARGET",
    "MISSING_MARKERS",
    "NUMERIC_SHARE",
    "DataSpec",
    "DataWarning",
    "GatheredBatches",
    "PreparedData",
    "eval_input_fn",
    "model_inputs",
    "prepare",
    "prepare_like",
    "read_features",
    "row_batches",
    "steps_per_epoch",
    "train_input_fn",
]
