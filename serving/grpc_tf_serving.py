"""TF Serving's gRPC ``PredictionService`` and ``ModelService`` over the inference core.

Each method turns the request's protos into the core's plain values, calls the
same core as ``/v1`` (repository, batching, metrics, version policy), and builds
TF Serving's answer, echoing the model spec with the version that answered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.errors import InvalidArgument
from serving.grpc_tensors import to_array, to_proto
from serving.inference import InferenceCore, classifications, regressions
from serving.metrics import GRPC
from serving.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, Signature

Gate = Callable[..., Any]  # grpc_server.Gate: token check, and ServingError → gRPC status
_SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers
_VERBS = {CLASSIFY_METHOD: "classify", REGRESS_METHOD: "regress"}
_STATUS_CODES = get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name[
    "status"].message_type.fields_by_name["error_code"].enum_type


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict, Classify, Regress, MultiInference,
    GetModelMetadata.

    Args:
        core: The inference core the REST API answers from too.
        gate: Checks the token and turns a ``ServingError`` into the call's gRPC status.
    """

    def __init__(self, core: InferenceCore, gate: Gate) -> None:
        self.core = core
        self.gate = gate

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        spec = request.model_spec
        core = self.core

        def answer() -> predict_pb2.PredictResponse:
            core.check_rows(_rows(request.inputs))
            number = _version(core, spec)
            with core.servable(spec.name, number) as servable:
                signature = servable.signature(spec.signature_name)
                arrays = _inputs(request.inputs, signature, spec.name)
                aliases = _output_filter(request.output_filter, signature)
                outputs = core.run(spec.name, servable, signature, arrays, aliases)
                version = servable.version
            response = predict_pb2.PredictResponse(
                model_spec=_spec(spec.name, version, signature.name)
            )
            for alias, array in outputs.items():
                to_proto(array, response.outputs[alias])
            return response

        return _call(self, context, spec.name, "predict", answer, infer=True)

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        spec = request.model_spec

        def answer() -> classification_pb2.ClassificationResponse:
            version, examples, outputs = self._examples(spec, request.input, "classify")
            response = classification_pb2.ClassificationResponse(
                model_spec=_spec(spec.name, version, spec.signature_name or DEFAULT_SIGNATURE)
            )
            _fill_classifications(response.result, outputs, len(examples))
            return response

        return _call(self, context, spec.name, "classify", answer, infer=True)

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        spec = request.model_spec

        def answer() -> regression_pb2.RegressionResponse:
            version, examples, outputs = self._examples(spec, request.input, "regress")
            response = regression_pb2.RegressionResponse(
                model_spec=_spec(spec.name, version, spec.signature_name or DEFAULT_SIGNATURE)
            )
            _fill_regressions(response.result, outputs, len(examples))
            return response

        return _call(self, context, spec.name, "regress", answer, infer=True)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):
        tasks = request.tasks
        name = tasks[0].model_spec.name if tasks else ""

        def answer() -> inference_pb2.MultiInferenceResponse:
            _check_tasks(tasks)
            response = inference_pb2.MultiInferenceResponse()
            serialized = _Examples(request.input)
            for task in tasks:
                spec, verb = task.model_spec, _VERBS[task.method_name]
                version, examples, outputs = self._examples(spec, serialized, verb)
                result = response.results.add(
                    model_spec=_spec(spec.name, version, spec.signature_name or DEFAULT_SIGNATURE)
                )
                if verb == "classify":
                    _fill_classifications(result.classification_result, outputs, len(examples))
                else:
                    _fill_regressions(result.regression_result, outputs, len(examples))
            return response

        return _call(self, context, name, "multi_inference", answer, infer=True)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        spec = request.model_spec
        core = self.core

        def answer() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.metadata_field:
                raise InvalidArgument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != _SIGNATURE_DEF:
                    raise InvalidArgument(f"Metadata field {field} is not supported")
            number = _version(core, spec)
            with core.repository.servable(spec.name, number) as servable:
                signatures = get_model_metadata_pb2.SignatureDefMap()
                for key, signature_def in servable.signature_defs.items():
                    signatures.signature_def[key].CopyFrom(signature_def)
                response = get_model_metadata_pb2.GetModelMetadataResponse(
                    model_spec=_spec(spec.name, servable.version, None)
                )
            response.metadata[_SIGNATURE_DEF].Pack(signatures)
            return response

        return _call(self, context, spec.name, "metadata", answer)

    def _examples(self, spec: model_pb2.ModelSpec, source: Any, verb: str):
        examples = source if isinstance(source, _Examples) else _Examples(source)
        self.core.check_rows(examples.count)
        number = _version(self.core, spec)
        return self.core.run_examples(spec.name, number, spec.signature_name, examples, verb)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus (open, as a health check is).

    ``HandleReloadConfigRequest`` answers UNIMPLEMENTED: the repository and the
    ``--model_config_file`` are polled instead.
    """

    def __init__(self, core: InferenceCore, gate: Gate) -> None:
        self.core = core
        self.gate = gate

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        spec = request.model_spec
        core = self.core

        def answer() -> get_model_status_pb2.GetModelStatusResponse:
            states = core.repository.status(spec.name, _version(core, spec))
            response = get_model_status_pb2.GetModelStatusResponse()
            for state in states:
                status = response.model_version_status.add(
                    version=state.version,
                    state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
                )
                status.status.error_code = _STATUS_CODES.values_by_name[state.error_code].number
                status.status.error_message = state.error_message
            return response

        return _call(self, context, spec.name, "status", answer, open_=True)


def _call(service: Any, context, name: str, api: str, answer: Callable[[], Any],
          infer: bool = False, open_: bool = False) -> Any:
    """One call through the gate (token, errors), counted as a gRPC request of ``api``."""
    return service.gate(
        context, lambda: service.core.observed(name, api, answer, infer, entrypoint=GRPC),
        open_=open_,
    )


class _Examples:
    """A request's ``Input`` as serialized tf.Examples, made once, when first asked for.

    With ``example_list_with_context`` the context's bytes go before each example's:
    parsing the two as one message merges them, and an example's own feature wins,
    as in TF Serving.
    """

    def __init__(self, source: input_pb2.Input) -> None:
        self._source = source
        kind = source.WhichOneof("kind")
        self._list = (
            source.example_list.examples if kind == "example_list"
            else source.example_list_with_context.examples if kind else []
        )
        self.count = len(self._list)
        self._serialized: list[bytes] | None = None

    def __call__(self) -> list[bytes]:
        if self._serialized is None:
            if not self._list:
                raise InvalidArgument("Input is empty.")
            context = b""
            if self._source.WhichOneof("kind") == "example_list_with_context":
                context = self._source.example_list_with_context.context.SerializeToString()
            self._serialized = [context + e.SerializeToString() for e in self._list]
        return self._serialized


def _version(core: InferenceCore, spec: model_pb2.ModelSpec) -> int | None:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return core.version_number(spec.name, str(spec.version.value), None)
    if choice == "version_label":
        return core.version_number(spec.name, None, spec.version_label)
    return None


@functools.lru_cache(maxsize=1024)
def _spec(name: str, version: int, signature_name: str | None) -> model_pb2.ModelSpec:
    """The answer's model spec (its constructor copies this one: it is never changed)."""
    spec = model_pb2.ModelSpec(name=name, version=wrappers_pb2.Int64Value(value=version))
    if signature_name is not None:
        spec.signature_name = signature_name
    return spec


def _rows(inputs: Any) -> int:
    for proto in inputs.values():
        dims = proto.tensor_shape.dim
        return dims[0].size if dims else 1
    return 0


def _inputs(inputs: Any, signature: Signature, model: str) -> dict[str, np.ndarray]:
    """The request's tensors by alias, in the signature's order (as the batcher keys them)."""
    sent, wanted = set(inputs), set(signature.inputs)
    if sent != wanted:
        for alias in sorted(sent - wanted):
            raise InvalidArgument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be "
                f"in the set {{{','.join(sorted(wanted))}}}."
            )
        raise InvalidArgument(
            f"Request inputs do not match required inputs for model `{model}`. Send extra: "
            f"{{}}. Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )
    arrays = {}
    for alias, spec in signature.inputs.items():
        array = to_array(inputs[alias], alias)
        if array.dtype != spec.np_dtype:
            # Refused here rather than by the run: a merged batch of mixed dtypes would
            # otherwise be cast to one and fail, or pass, for every request in it.
            raise InvalidArgument(
                f"Input '{alias}' takes {spec.dtype} values, but was fed "
                f"{types_pb2.DataType.Name(inputs[alias].dtype)}"
            )
        arrays[alias] = array
    return arrays


def _output_filter(names: Any, signature: Signature) -> list[str]:
    if not names:
        return list(signature.outputs)
    seen: list[str] = []
    for alias in names:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


def _check_tasks(tasks: Any) -> None:
    if not tasks:
        raise InvalidArgument("Found no tasks in MultiInferenceRequest.")
    names, signatures = set(), set()
    for task in tasks:
        names.add(task.model_spec.name)
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in signatures:
            raise InvalidArgument(f"Duplicate evaluation of signature: {signature}")
        signatures.add(signature)
        if task.method_name not in _VERBS:
            raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")
    if len(names) > 1:
        raise InvalidArgument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )


def _fill_classifications(result: Any, outputs: dict[str, np.ndarray], count: int) -> None:
    for row in classifications(outputs, count):
        classes = result.classifications.add().classes
        for label, score in row:
            classes.add(label=label, score=float(score))


def _fill_regressions(result: Any, outputs: dict[str, np.ndarray], count: int) -> None:
    for value in regressions(outputs, count):
        result.regressions.add(value=float(value))
