"""The committed V2 gRPC modules are exactly what grpcio-tools makes of the committed proto."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

PROTO = "serving/protos/grpc_predict_v2.proto"
GENERATED = ("serving/protos/grpc_predict_v2_pb2.py", "serving/protos/grpc_predict_v2_pb2_grpc.py")


def test_regenerating_the_v2_modules_gives_the_committed_files(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install -e '.[test]')")
    # In a process of its own: protoc's extension next to TensorFlow's protobuf crashes.
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT}", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", str(REPO_ROOT / PROTO)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for path in GENERATED:
        assert (tmp_path / path).read_bytes() == (REPO_ROOT / path).read_bytes(), path


def test_the_proto_declares_kserve_v2s_service_and_carries_its_licence():
    text = (REPO_ROOT / PROTO).read_text()
    assert "package inference;" in text
    assert "service GRPCInferenceService" in text
    for rpc in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer"):
        assert f"rpc {rpc}(" in text
    licence = pathlib.Path(REPO_ROOT / "serving/protos/LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
