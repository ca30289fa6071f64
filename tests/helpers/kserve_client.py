"""KServe's own Python client (``InferenceRESTClient``, V2) against a running server.

Run in a virtual environment that has kserve (its protobuf and pandas pins clash with
TensorFlow's), by ``tests/test_kserve_client.py``:

    python kserve_client.py http://127.0.0.1:8501 http://127.0.0.1:8502

The first server has half_plus_two; the second no model at all. Prints one JSON
object: each call's result, or for a call that raised, the exception's type, the
HTTP status and the message.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

TIMEOUT = 10


async def _outcome(call):
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - reported to the test, which checks it
        response = getattr(exc, "response", None)
        return {"raised": type(exc).__name__, "status": getattr(response, "status_code", None),
                "message": str(exc)}


def _request(binary: bool) -> InferRequest:
    tensor = InferInput("x", [3, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[1.0], [2.0], [5.0]], np.float32), binary_data=binary)
    return InferRequest("half_plus_two", [tensor], request_id=f"kserve-{binary}")


def _answer(response) -> dict:
    (output,) = response.outputs
    return {"model_name": response.model_name, "id": response.id, "name": output.name,
            "datatype": output.datatype, "shape": list(output.shape),
            "data": output.as_numpy().ravel().tolist()}


async def main(served: str, empty: str) -> dict:
    config = RESTConfig(protocol="v2", timeout=TIMEOUT, retries=0)
    async with InferenceRESTClient(config) as client:
        results = {
            "live": await _outcome(client.is_server_live(served)),
            "ready": await _outcome(client.is_server_ready(served)),
            "model_ready": await _outcome(client.is_model_ready(served, "half_plus_two")),
            "unknown_model_ready": await _outcome(client.is_model_ready(served, "nope")),
            "empty_live": await _outcome(client.is_server_live(empty)),
            "empty_ready": await _outcome(client.is_server_ready(empty)),
            "unknown_model_infer": await _outcome(client.infer(
                served, {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                     "data": [1.0]}]}, model_name="nope")),
        }
        for binary in (False, True):
            response = await _outcome(client.infer(served, _request(binary), "half_plus_two"))
            results[f"infer_binary_{binary}".lower()] = (
                response if isinstance(response, dict) else _answer(response))
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:3]))))
