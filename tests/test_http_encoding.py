"""Compressed bodies both ways: gzip and deflate requests, answers compressed on request.

Against real server processes (the shared `tfkit serve`, which answers inference on
the direct path, and one of this module's own with the direct path off and the
threshold from a ``TFKIT_`` variable), with tritonclient and raw HTTP, and in-process
on both paths.
"""

import functools
import gzip
import json
import pathlib
import shutil
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import requests
from conftest import TESTDATA, ServerProcess, triton_http_client

from serving import encoding
from serving.errors import InvalidArgument, PayloadTooLarge

try:
    import tritonclient.http as tritonclient_http
except ImportError:  # the in-process and raw HTTP tests do not need it
    tritonclient_http = None

TIMEOUT = 60
MIB = 1024 * 1024
PREDICT = "/v1/models/half_plus_two:predict"
ROWS = [float(i) for i in range(4000)]
BODY = json.dumps({"instances": ROWS}).encode()
OWN_MAX_REQUEST_MB = 8
OWN_MIN_BYTES = 64
BOMB_INFLATED = 1024 * MIB


def _zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@functools.cache
def _bomb(coding: str) -> bytes:
    """One valid gzip member or zlib stream, about 1 MB, of 1 GiB of spaces.

    After a full flush the compressor starts afresh, so every further MiB of spaces
    compresses to the same block: it is repeated rather than compressed 1,024 times.
    """
    chunk = b" " * MIB
    gzipped = coding == "gzip"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS if gzipped else
                                  zlib.MAX_WBITS)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()[:-8 if gzipped else -4]  # its trailer is for 2 MiB
    checksum = zlib.crc32 if gzipped else zlib.adler32
    value = 0 if gzipped else 1
    for _ in range(BOMB_INFLATED // MIB):
        value = checksum(chunk, value)
    trailer = (struct.pack("<II", value, BOMB_INFLATED % 2**32) if gzipped
               else struct.pack(">I", value))
    return first + block * (BOMB_INFLATED // MIB - 1) + end + trailer


# --- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory):
    """``direct``: the shared `tfkit serve` (defaults, one worker). ``flask``: ``python -m
    serving`` with one worker, the direct path off, 64-byte threshold and an 8 MiB body
    limit; it starts while the shared ones do."""
    repo = tmp_path_factory.mktemp("encoding-models")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", repo / "half_plus_two")
    log = tmp_path_factory.mktemp("encoding-logs") / "flask.log"
    own = ServerProcess(
        ["--models", str(repo), "--workers", "1", "--file_system_poll_wait_seconds", "0",
         "--max_request_mb", str(OWN_MAX_REQUEST_MB)], log,
        env={"TFKIT_DIRECT_INFERENCE": "false",
             "TFKIT_RESPONSE_COMPRESSION_MIN_BYTES": str(OWN_MIN_BYTES)},
    )
    try:
        shared = request.getfixturevalue("tfkit_servers")["open"]
        own.wait_ready(PREDICT.removesuffix(":predict"))
        yield {"direct": shared, "flask": own}
    finally:
        own.stop()


@pytest.fixture(params=["direct", "flask"])
def server(request, servers):
    return servers[request.param]


def _post(server, body, headers, stream=False):
    return requests.post(server.url + PREDICT, data=body, headers=headers, timeout=TIMEOUT,
                         stream=stream)


def _plain(server) -> bytes:
    response = _post(server, BODY, {"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers
    return response.content


# --- answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("coding", "decompress"), [("gzip", gzip.decompress),
                                                    ("deflate", zlib.decompress)])
def test_4000_row_answer_is_compressed_on_request(server, coding, decompress):
    plain = _plain(server)
    response = _post(server, BODY, {"Accept-Encoding": coding}, stream=True)
    wire = response.raw.read(decode_content=False)  # the bytes as sent
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == coding
    assert response.headers["Vary"] == "Accept-Encoding"
    assert int(response.headers["Content-Length"]) == len(wire)
    assert len(wire) < len(plain) / 2
    assert decompress(wire) == plain


def test_plain_large_answer_says_it_varies(server):
    response = _post(server, BODY, {"Accept-Encoding": "identity"})
    assert response.headers["Vary"] == "Accept-Encoding"
    assert int(response.headers["Content-Length"]) == len(response.content)


@pytest.mark.parametrize(("name", "compressed"), [("direct", False), ("flask", True)])
def test_threshold_comes_from_the_config(servers, name, compressed):
    """A 20-row answer (~150 bytes) is under the default 1 KiB but over the 64 bytes
    the ``flask`` server got from TFKIT_RESPONSE_COMPRESSION_MIN_BYTES."""
    body = json.dumps({"instances": ROWS[:20]}).encode()
    response = _post(servers[name], body, {"Accept-Encoding": "gzip"}, stream=True)
    wire = response.raw.read(decode_content=False)
    assert OWN_MIN_BYTES < len(json.dumps({"predictions": [r / 2 + 2 for r in ROWS[:20]]}))
    assert (response.headers.get("Content-Encoding") == "gzip") is compressed
    assert ("Vary" in response.headers) is compressed
    assert json.loads(gzip.decompress(wire) if compressed else wire)["predictions"][:2] == \
        [2.0, 2.5]


# --- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(("header", "encode"), [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", _zlib),  # zlib-wrapped, as RFC 9110 and tritonclient have it
    ("deflate", _raw_deflate),  # bare deflate, as some clients send
    ("deflate, gzip", lambda data: gzip.compress(_zlib(data))),  # in the order applied
], ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "deflate-then-gzip"])
def test_compressed_request_bodies(server, header, encode):
    response = _post(server, encode(BODY), {"Content-Encoding": header,
                                            "Accept-Encoding": "identity"})
    assert response.status_code == 200, response.text
    assert response.content == _plain(server)


def test_unknown_content_encoding_is_415_naming_the_supported_ones(server):
    response = _post(server, BODY, {"Content-Encoding": "br"})
    assert response.status_code == 415
    assert response.headers["Accept-Encoding"] == "gzip, deflate"
    assert response.json() == {"error": "Content-Encoding 'br' is not supported: send gzip, "
                                        "deflate or an uncompressed body"}


def test_bombs_are_valid_and_small():
    for coding in ("gzip", "deflate"):
        assert len(_bomb(coding)) < 1.1 * MIB
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else zlib.MAX_WBITS)
        inflated = 0
        data = _bomb(coding)
        while data:  # in bounded steps: the test must not hold the GiB either
            inflated += len(decoder.decompress(data, 64 * MIB))
            data = decoder.unconsumed_tail
        assert decoder.eof and inflated == BOMB_INFLATED


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize(("name", "limit_mb"), [("direct", 64), ("flask", OWN_MAX_REQUEST_MB)])
def test_decompression_bomb_is_413(servers, coding, name, limit_mb):
    response = _post(servers[name], _bomb(coding), {"Content-Encoding": coding})
    assert response.status_code == 413, response.text
    assert f"the server accepts at most {limit_mb} MiB" in response.json()["error"]


def _peak_rss_kib(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_bomb_is_never_inflated_whole_in_the_server(servers, coding):
    """1 MB that inflates to 1 GiB: the one worker's peak memory grows by far less."""
    server = servers["flask"]
    pid = server.worker_pid()
    # Reset the peak to the current size (Linux's clear_refs "5"), so an earlier
    # request's peak cannot hide this one's.
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _peak_rss_kib(pid)
    response = _post(server, _bomb(coding), {"Content-Encoding": coding})
    assert response.status_code == 413
    grown_kib = _peak_rss_kib(pid) - before
    assert grown_kib < 256 * 1024, f"worker's peak RSS grew {grown_kib} KiB"


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_inflate_stops_at_the_cap(coding):
    bomb = _bomb(coding)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            encoding.inflate(bomb, coding, MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB


@pytest.mark.parametrize(("data", "coding", "message"), [
    (_zlib(b"abc") + b"junk", "deflate", "data follows its end"),
    (_zlib(b"abc" * 100)[:10], "deflate", "deflate body is truncated"),
    (b"\x00\x01plain", "deflate", "not valid deflate data"),
])
def test_bad_deflate_bodies(data, coding, message):
    with pytest.raises(InvalidArgument, match=message):
        encoding.inflate(data, coding, MIB)


# --- tritonclient ------------------------------------------------------------------------


@pytest.fixture()
def triton(server):
    yield from triton_http_client(server, TIMEOUT)


def _infer(triton, binary, seen, **compression):
    x = np.asarray(ROWS, np.float32).reshape(-1, 1)
    tensor = tritonclient_http.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = tritonclient_http.InferRequestedOutput("y", binary_data=binary)
    # The client hides the answer's headers; its HTTP stub shows them.
    stub = triton._client_stub  # noqa: SLF001 - test-only peek at the raw response
    post = stub.post

    def recording_post(*args, **kwargs):
        response = post(*args, **kwargs)
        seen.append(response.get("Content-Encoding"))
        return response

    stub.post = recording_post
    try:
        return triton.infer("half_plus_two", [tensor], outputs=[output], **compression)
    finally:
        stub.post = post


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("request_coding", "response_coding"), [
    ("gzip", None), ("deflate", None), (None, "gzip"), (None, "deflate"), ("gzip", "gzip"),
    ("deflate", "gzip"),
])
def test_tritonclient_compression_gives_the_same_answer(triton, binary, request_coding,
                                                        response_coding):
    plain_seen, seen = [], []
    plain = _infer(triton, binary, plain_seen)
    result = _infer(triton, binary, seen, request_compression_algorithm=request_coding,
                    response_compression_algorithm=response_coding)
    assert plain_seen == [None]
    assert seen == [response_coding]
    np.testing.assert_array_equal(result.as_numpy("y"), plain.as_numpy("y"))
    np.testing.assert_array_equal(result.as_numpy("y")[:3, 0], [2.0, 2.5, 3.0])
    assert result.get_response() == plain.get_response()


# --- in-process, both paths --------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["direct", "flask"])
def app(request, secret_repo):
    from serving import create_app

    return create_app({"MODELS": str(secret_repo / "small"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
                       "DIRECT_INFERENCE": request.param})


NEGOTIATION = [
    # (Accept-Encoding, rows, the coding answered with; None: plain)
    (None, 4000, None),
    ("gzip", 4000, "gzip"),
    ("deflate", 4000, "deflate"),
    ("gzip, deflate, br", 4000, "gzip"),
    ("deflate;q=1, gzip;q=0.5", 4000, "deflate"),
    ("gzip;q=0", 4000, None),
    ("gzip;q=0, deflate", 4000, "deflate"),
    ("GZIP;Q=0", 4000, None),
    ("*", 4000, "gzip"),
    ("*;q=0", 4000, None),
    ("*, gzip;q=0", 4000, "deflate"),
    ("identity", 4000, None),
    ("gzip;q=0.5, identity", 4000, None),  # identity preferred
    ("br, zstd", 4000, None),
    ("gzip;q=junk", 4000, None),
    ("gzip", 3, None),  # under the threshold
    ("gzip, deflate;q=0.5", 3, None),  # a q-value parsed, identity still acceptable
    ("gzip, identity;q=0", 3, "gzip"),  # identity refused: compressed however small
    ("*;q=0, deflate", 3, "deflate"),
]


@pytest.mark.parametrize(("accept", "rows", "coding"), NEGOTIATION)
def test_accept_encoding_is_honoured(app, accept, rows, coding):
    client = app.test_client()
    body = {"instances": ROWS[:rows]}
    plain = client.post(PREDICT, json=body)
    response = client.post(PREDICT, json=body, headers={} if accept is None else
                           {"Accept-Encoding": accept})
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == coding
    assert int(response.headers["Content-Length"]) == len(response.data)
    varies = coding is not None or rows == 4000
    assert response.headers.get_all("Vary") == (["Accept-Encoding"] if varies else [])
    decoded = {"gzip": gzip.decompress, "deflate": zlib.decompress}.get(coding, bytes)
    assert decoded(response.data) == plain.data


def test_non_inference_answers_are_compressed_too(app):
    """The OpenAPI document (tens of KiB) is a Flask answer on either path."""
    client = app.test_client()
    plain = client.get("/openapi.json")
    response = client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(response.data) == plain.data
    assert len(response.data) < len(plain.data) / 2


def test_threshold_from_the_environment(secret_repo, monkeypatch):
    from serving import create_app

    monkeypatch.setenv("TFKIT_RESPONSE_COMPRESSION_MIN_BYTES", "-1")  # never
    app = create_app({"MODELS": str(secret_repo / "small"), "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
    assert app.config["RESPONSE_COMPRESSION_MIN_BYTES"] == -1
    response = app.test_client().post(PREDICT, json={"instances": ROWS},
                                      headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in response.headers and "Vary" not in response.headers
    assert json.loads(response.data)["predictions"][:2] == [2.0, 2.5]
