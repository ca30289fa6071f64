"""The Open Inference Protocol (KServe V2) over the inference core, without Flask.

Health, server and model metadata, and ``infer`` with JSON tensors and the
binary tensor extension: the request JSON may be followed by raw tensor bytes
(``Inference-Header-Content-Length`` gives the JSON's length; each binary input
carries ``parameters.binary_data_size``), and outputs asked for with
``parameters.binary_data`` (or the request's ``binary_data_output``) come back
the same way. Inputs and outputs are a signature's (``serving_default`` unless
the request's ``parameters.signature_name`` names another); shapes include the
batch dimension, so requests go through the same batcher as ``:predict``.

Triton's extensions that its clients call (model configuration, the repository
index, statistics) are in ``triton_extensions``; the tensors' JSON and binary
forms in ``open_inference_tensors``.
"""

from __future__ import annotations

import importlib.metadata
import weakref

from serving import json_codec
from serving.errors import InvalidArgument, NotFound
from serving.inference import InferenceCore
from serving.metrics import REST
from serving.open_inference_tensors import (  # noqa: F401 - DATATYPES: public here
    DATATYPES,
    PLATFORM,
    InferResponse,
    Table,
    decode_inputs,
    encode_outputs,
    parameters_of,
    protocol_tensor,
    requested_outputs,
    split_body,
)
from serving.repository import VersionStatus
from serving.servable import DEFAULT_SIGNATURE, Servable
from serving.triton_extensions import (  # noqa: F401 - BACKEND, Conflict, Unavailable: public here
    BACKEND,
    Conflict,
    TritonExtensions,
    Unavailable,
)

SERVER_NAME = "tfkit"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")


class OpenInference(TritonExtensions):
    """Answers the Open Inference Protocol from the same models and batcher as TF Serving's API.

    Args:
        core: The TF Serving inference core (repository, metrics, batcher).

    Example:
        >>> v2 = OpenInference(core)                                # doctest: +SKIP
        >>> v2.infer("mlp", None, b'{"inputs": [...]}').body        # doctest: +SKIP
    """

    def __init__(self, core: InferenceCore) -> None:
        self.core = core
        self._tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        try:
            version = importlib.metadata.version("tfkit")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        self._server_metadata = json_codec.dumps(
            {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}
        )

    def server_metadata(self) -> bytes:
        """``GET /v2``."""
        return self._server_metadata

    def server_ready(self) -> bool:
        """``GET /v2/health/ready``: there are models, and each has a version being served."""
        return self.core.repository.ready()

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """``GET /v2/models/{name}[/versions/{v}]/ready``.

        Raises:
            NotFound: No such model.
        """
        number = self.core.version_number(name, version, None)
        self.core.repository.status(name)  # raises NotFound for an unknown model
        return bool(self._available(name, number))

    def model_metadata(self, name: str, version: str | None = None,
                       entrypoint: str = REST) -> bytes:
        """``GET /v2/models/{name}[/versions/{v}]``: the default signature's tensors."""

        def answer() -> bytes:
            number = self.core.version_number(name, version, None)
            with self.core.repository.servable(name, number) as servable:
                table = self._table(servable, DEFAULT_SIGNATURE)
                return json_codec.dumps({
                    "name": name,
                    "versions": [str(v) for v in sorted(self._available(name))],
                    "platform": PLATFORM,
                    "inputs": [t.metadata() for t in table.inputs.values()],
                    "outputs": [t.metadata() for t in table.outputs.values()],
                })

        return self.core.observed(name, "metadata", answer, entrypoint=entrypoint)

    def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None = None,
        entrypoint: str = REST,
    ) -> InferResponse:
        """``POST /v2/models/{name}[/versions/{v}]/infer``.

        Args:
            name: Model name.
            version: Version number as text, or None for the latest.
            body: The request body: JSON, then binary tensor data if ``header_length``.
            header_length: ``Inference-Header-Content-Length``: bytes of JSON at the start.
            entrypoint: How the request came (REST or GRPC), for the metrics.

        Raises:
            ServingError: A malformed request, an unknown model, or a failed run.
        """

        def answer() -> InferResponse:
            doc, binary = split_body(body, header_length)
            if not isinstance(doc.get("id", ""), str):
                raise InvalidArgument("'id' must be a string")
            parameters = parameters_of(doc.get("parameters"), "parameters")
            signature_name = parameters.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise InvalidArgument("parameters.signature_name must be a string")
            number = self.core.version_number(name, version, None)
            with self.core.servable(name, number) as servable:
                signature = servable.signature(signature_name)
                table = self._table(servable, signature.name)
                arrays = decode_inputs(doc, table, binary, name)
                wanted = requested_outputs(doc, table, parameters, name)
                outputs = self.core.run(name, servable, signature, arrays, list(wanted))
                return encode_outputs(doc, name, servable.version, table, outputs, wanted)

        return self.core.observed(name, "infer", answer, infer=True, entrypoint=entrypoint)

    def _states(self, name: str, version: int | None = None) -> list[VersionStatus]:
        try:
            return self.core.repository.status(name, version)
        except NotFound:
            return []

    def _available(self, name: str, version: int | None = None) -> set[int]:
        return {s.version for s in self._states(name, version) if s.state == "AVAILABLE"}

    def _table(self, servable: Servable, signature_name: str) -> Table:
        tables = self._tables.get(servable)
        if tables is None:
            tables = self._tables.setdefault(servable, {})
        table = tables.get(signature_name)
        if table is None:
            signature = servable.signature(signature_name)
            proto = servable.signature_defs[signature.name]
            table = tables[signature_name] = Table(
                inputs={a: protocol_tensor(s, proto.inputs[a].tensor_shape)
                        for a, s in signature.inputs.items()},
                outputs={a: protocol_tensor(s, proto.outputs[a].tensor_shape)
                         for a, s in signature.outputs.items()},
            )
        return table
