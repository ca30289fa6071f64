"""Dynamic batching's parameters: TF Serving's ``BatchingParameters``, from a file or the config."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

from serving.model_config import _parse_text_proto


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's ``BatchingParameters``, with its field names and defaults.

    Attributes:
        enabled: Merge concurrent requests (``--enable_batching``).
        max_batch_size: Most rows in one merged run; a larger request runs alone.
        batch_timeout_micros: How long a batch may wait to fill; only spent while
            other requests are still being parsed (an idle server never waits).
        num_batch_threads: Runs of one model signature at the same time.
        max_enqueued_batches: Queue bound, in batches of ``max_batch_size`` rows;
            a request beyond it is refused with 503 (TF Serving's UNAVAILABLE).
        allowed_batch_sizes: Merged runs are padded up to one of these sizes
            (increasing, the last equal to ``max_batch_size``); empty: no padding.
    """

    enabled: bool = True
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    max_enqueued_batches: int = 10
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for field in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(
                "allowed_batch_sizes must increase and end with max_batch_size "
                f"({self.max_batch_size}), got {sizes}"
            )

    @classmethod
    def from_file(cls, path: str | pathlib.Path, **overrides: object) -> BatchingParameters:
        """Reads TF Serving's ``--batching_parameters_file`` (text-proto).

        Example file::

            max_batch_size { value: 64 }
            batch_timeout_micros { value: 1000 }
            num_batch_threads { value: 2 }
            max_enqueued_batches { value: 100 }
            allowed_batch_sizes: 16
            allowed_batch_sizes: 64

        ``thread_pool_name`` and ``pad_variable_length_inputs`` are accepted and
        ignored (requests of different lengths run as separate batches instead).

        Raises:
            ValueError: The file does not parse or has an unknown field.
        """
        try:
            tree = _parse_text_proto(pathlib.Path(path).read_text())
        except ValueError as exc:
            raise ValueError(f"Invalid batching parameters file '{path}': {exc}") from None
        values: dict[str, object] = {}
        for key, node in tree.items():
            if key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                       "max_enqueued_batches"):
                values[key] = int(node["value"] if isinstance(node, dict) else node)
            elif key == "allowed_batch_sizes":
                values[key] = tuple(int(v) for v in (node if isinstance(node, list) else [node]))
            elif key not in ("thread_pool_name", "pad_variable_length_inputs"):
                raise ValueError(f"Invalid batching parameters file '{path}': unknown field {key}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parameters_from_config(config: Mapping[str, object]) -> BatchingParameters:
    """Batching parameters from the app config: the file first, then single knobs.

    Keys: ``ENABLE_BATCHING``, ``BATCHING_PARAMETERS_FILE``, ``MAX_BATCH_SIZE``,
    ``BATCH_TIMEOUT_MICROS``, ``NUM_BATCH_THREADS``, ``MAX_ENQUEUED_BATCHES``
    (None or absent: the file's value, else TF Serving's default).
    """
    knobs = {
        field: config.get(field.upper())
        for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                      "max_enqueued_batches")
    }
    knobs = {k: int(v) for k, v in knobs.items() if v is not None}
    enabled = bool(config.get("ENABLE_BATCHING", True))
    if config.get("BATCHING_PARAMETERS_FILE"):
        return BatchingParameters.from_file(
            config["BATCHING_PARAMETERS_FILE"], enabled=enabled, **knobs
        )
    return BatchingParameters(enabled=enabled, **knobs)
