"""KServe V2's gRPC protocol: ``grpc_predict_v2.proto`` and the modules generated from it.

The proto is ``docs/predict-api/v2/grpc_predict_v2.proto`` of github.com/kserve/kserve
(commit aaac4e294dae2c7b1aa1886447793f3aa1c30912), under the Apache License 2.0
(``LICENSE``, KServe's). The two modules beside it are grpcio-tools 1.85.4's output,
regenerated from the repository root with::

    python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \\
        serving/protos/grpc_predict_v2.proto

(``tests/test_grpc_protos.py`` checks that this gives the committed files.)
"""
