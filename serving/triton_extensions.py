"""Triton's extensions to the Open Inference Protocol: model config, repository, statistics."""

from __future__ import annotations

from typing import NoReturn

from serving import json_codec
from serving.errors import InvalidArgument, NotFound, ServingError
from serving.open_inference_tensors import PLATFORM, json_object
from serving.servable import DEFAULT_SIGNATURE

BACKEND = "tensorflow"
# Triton's repository index states, by TF Serving's version states.
_INDEX_STATES = {"AVAILABLE": "READY", "END": "UNAVAILABLE"}


class Conflict(ServingError):
    """The request conflicts with how the server is run (HTTP 409)."""

    code = "ABORTED"


class Unavailable(ServingError):
    """Triton's answer to load and unload requests, and for a version that failed to load."""

    code = "UNAVAILABLE"


class TritonExtensions:
    """Triton's extensions, answered as Triton answers them (its messages and status codes too).

    Mixed into ``OpenInference``, whose ``core``, ``_table``, ``_available`` and
    ``_states`` they use.
    """

    def model_config(self, name: str, version: str | None = None) -> bytes:
        """``GET /v2/models/{name}[/versions/{v}]/config``: Triton's ``ModelConfig`` as JSON.

        ``max_batch_size`` is 0, so ``dims`` are the default signature's whole shapes
        (batch dimension included), as in the model metadata.

        Raises:
            ServingError: Triton's errors for an unknown model or a version not served.
        """
        number = self.core.version_number(name, version, None)
        try:
            with self.core.repository.servable(name, number) as servable:
                table = self._table(servable, DEFAULT_SIGNATURE)
        except NotFound:
            raise self._not_served(name, number) from None
        return json_codec.dumps({
            "name": name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "max_batch_size": 0,
            "input": [{"name": t.spec.alias, "data_type": _config_type(t.datatype),
                       "format": "FORMAT_NONE", "dims": t.shape}
                      for t in table.inputs.values()],
            "output": [{"name": t.spec.alias, "data_type": _config_type(t.datatype),
                        "dims": t.shape, "label_filename": ""}
                       for t in table.outputs.values()],
        })

    def repository_index(self, body: bytes) -> bytes:
        """``POST /v2/repository/index``: every model's versions and their states.

        Args:
            body: Empty, or ``{"ready": true}`` for only the versions being served.
        """
        ready_only = False
        if body.strip():
            ready_only = json_object(json_codec.parse_body(body), "the index request").get(
                "ready", False)
            if not isinstance(ready_only, bool):
                raise InvalidArgument("Invalid value for 'ready': expected a boolean")
        index = []
        for name in self.core.repository.names():
            states = self._states(name)  # none: configured, but no version folder yet
            if not states and not ready_only:
                index.append({"name": name})
            for status in sorted(states, key=lambda s: s.version):
                entry = {"name": name, "version": str(status.version),
                         "state": _INDEX_STATES.get(status.state, "UNAVAILABLE")}
                if status.error_message:
                    entry["reason"] = status.error_message
                if entry["state"] == "READY" or not ready_only:
                    index.append(entry)
        return json_codec.dumps(index)

    def model_control(self) -> NoReturn:
        """``POST /v2/repository/models/{name}/(load|unload)``: refused with Triton's words for
        a server that polls its repository; this server follows its repository by itself.

        A 409 (the request conflicts with how the repository is run), not Triton's 503:
        the refusal is permanent, and 503 tells clients and load balancers to retry later.

        Raises:
            Conflict: Always.
        """
        raise Conflict(
            "explicit model load / unload is not allowed if polling is enabled"
        )

    def statistics(self, name: str | None = None, version: str | None = None) -> bytes:
        """``GET /v2/models[/{name}[/versions/{v}]]/stats``: each served version's statistics.

        Raises:
            InvalidArgument: The model, or that version of it, is not being served.
        """
        if name is None:
            served = {model: self._available(model) for model in self.core.repository.names()}
        else:
            number = self.core.version_number(name, version, None)
            versions = self._available(name)
            if not versions:
                raise InvalidArgument(f"requested model '{name}' is not available")
            if number is not None and number not in versions:
                raise InvalidArgument(
                    f"requested model version is not available for model '{name}'"
                )
            served = {name: versions if number is None else {number}}
        stats = []
        for model, versions in served.items():
            for number in sorted(versions):
                try:
                    with self.core.repository.servable(model, number) as servable:
                        numbers = self.core.statistics(servable).as_json()
                except NotFound:  # unloaded since it was listed
                    continue
                stats.append({"name": model, "version": str(number), **numbers})
        return json_codec.dumps({"model_stats": stats})

    def _not_served(self, name: str, number: int | None) -> ServingError:
        """Triton's error for a model, or a version of it, that is not being served."""
        if not self.core.repository.has(name):
            return InvalidArgument(f"Request for unknown model: '{name}' is not found")
        if number is None:
            return NotFound(f"Request for unknown model: '{name}' has no available versions")
        if number in {s.version for s in self._states(name)}:  # it failed to load
            return Unavailable(
                f"Request for unknown model: '{name}' version {number} is not at ready state"
            )
        return NotFound(f"Request for unknown model: '{name}' version {number} is not found")


def _config_type(datatype: str) -> str:
    """A protocol datatype as a Triton model configuration's ``data_type``."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
