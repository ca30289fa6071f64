"""KServe V2's gRPC ``inference.GRPCInferenceService`` over the Open Inference layer.

``ModelInfer`` hands the request to the same ``OpenInference.infer`` as
``POST /v2/models/{name}/infer``, in its binary tensor form: each input's
``raw_input_contents`` (or typed ``contents``, packed the same way) becomes its
binary data, and every output is asked for as binary data, which becomes
``raw_output_contents``. So both transports check and run a request alike.

Outputs come back in ``raw_output_contents``, as Triton answers, unless the
request sent its inputs as typed ``contents`` and did not set the
``binary_data_output`` parameter: then in typed ``contents`` (where the datatype
has a field; FP16 and BF16 have none, and an answer with one is all raw).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from serving.errors import InvalidArgument
from serving.grpc_tensors import V2_TYPES, fill_v2_contents, v2_contents_bytes
from serving.metrics import GRPC
from serving.open_inference import OpenInference
from serving.protos import grpc_predict_v2_pb2 as pb
from serving.protos.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceServicer

Gate = Callable[..., Any]


class InferenceService(GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService``: health, metadata and ``ModelInfer``.

    Args:
        v2: The Open Inference layer the ``/v2`` REST routes answer from.
        gate: Checks the token and turns a ``ServingError`` into the call's gRPC status.
    """

    def __init__(self, v2: OpenInference, gate: Gate) -> None:
        self.v2 = v2
        self.gate = gate

    def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return self.gate(
            context, lambda: pb.ServerReadyResponse(ready=self.v2.server_ready()), open_=True
        )

    def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return self.gate(context, lambda: pb.ModelReadyResponse(
            ready=self.v2.model_ready(request.name, request.version or None)
        ))

    def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return self.gate(
            context, lambda: pb.ServerMetadataResponse(**orjson.loads(self.v2.server_metadata()))
        )

    def ModelMetadata(self, request: pb.ModelMetadataRequest, context):
        def answer() -> pb.ModelMetadataResponse:
            doc = orjson.loads(self.v2.model_metadata(request.name, request.version or None,
                                                      entrypoint=GRPC))
            return pb.ModelMetadataResponse(
                name=doc["name"], versions=doc["versions"], platform=doc["platform"],
                inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["inputs"]],
                outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in doc["outputs"]],
            )

        return self.gate(context, answer)

    def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        def answer() -> pb.ModelInferResponse:
            body, header_length, typed = _binary_request(request)
            result = self.v2.infer(request.model_name, request.model_version or None, body,
                                   header_length, entrypoint=GRPC)
            return _response(result.body, result.header_length, typed)

        return self.gate(context, answer)


def _parameters(parameters: Any) -> dict[str, Any]:
    return {key: getattr(value, value.WhichOneof("parameter_choice"))
            for key, value in parameters.items() if value.WhichOneof("parameter_choice")}


def _binary_request(request: pb.ModelInferRequest) -> tuple[bytes, int, bool]:
    """The request as ``/infer``'s body: JSON, then every input's bytes.

    Returns:
        The body, the JSON's length, and whether outputs go back as typed contents.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"expected {len(request.inputs)} raw_input_contents, one per input, "
            f"got {len(raw)}"
        )
    parameters = _parameters(request.parameters)
    inputs, chunks = [], []
    for i, tensor in enumerate(request.inputs):
        data = raw[i] if raw else v2_contents_bytes(tensor.contents, tensor.datatype, tensor.name)
        inputs.append({
            "name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
            "parameters": {**_parameters(tensor.parameters), "binary_data_size": len(data)},
        })
        chunks.append(data)
    typed = not raw and parameters.get("binary_data_output") is not True
    doc: dict[str, Any] = {"inputs": inputs, "parameters": {**parameters,
                                                            "binary_data_output": True}}
    if request.id:
        doc["id"] = request.id
    if request.outputs:
        doc["outputs"] = [
            {"name": o.name, "parameters": {**_parameters(o.parameters), "binary_data": True}}
            for o in request.outputs
        ]
    header = orjson.dumps(doc)
    return header + b"".join(chunks), len(header), typed


def _response(body: bytes, header_length: int | None, typed: bool) -> pb.ModelInferResponse:
    doc = orjson.loads(body[:header_length] if header_length else body)
    view = memoryview(body)[header_length or len(body):]
    entries = doc["outputs"]
    typed = typed and all(V2_TYPES.get(e["datatype"], (None, None))[1] for e in entries)
    response = pb.ModelInferResponse(
        model_name=doc["model_name"], model_version=doc["model_version"], id=doc.get("id", "")
    )
    offset = 0
    for entry in entries:
        size = entry["parameters"]["binary_data_size"]
        raw = bytes(view[offset:offset + size])
        offset += size
        output = response.outputs.add(
            name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]
        )
        if not typed:
            response.raw_output_contents.append(raw)
        else:
            fill_v2_contents(output.contents, raw, entry["datatype"])
    return response
