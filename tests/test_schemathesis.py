"""The OpenAPI document against a live server: schemathesis's generated requests, all its checks.

Every documented operation is called with the examples from the document, the coverage
phase's boundary and wrong-method requests, and fuzzed requests, on a ``python -m serving``
process serving TF Serving's reference models; each answer must be one the document
describes (status, content type, headers, body schema), and the document must accept
no request the server refuses nor describe a request the server refuses as valid.
Settings (seed, per-operation expectations) are in ``tests/schemathesis.toml``, shared
with the command-line run in the README.
"""

import collections
import pathlib
import shutil

import pytest
import schemathesis
from conftest import REFERENCE_MODELS, TESTDATA
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

CONFIG = pathlib.Path(__file__).with_name("schemathesis.toml")
DOCUMENT = pathlib.Path(__file__).resolve().parents[1] / "serving" / "openapi.json"
MAX_EXAMPLES = 36  # fuzzed cases per operation, on top of the examples and coverage cases
MIN_CASES = 2000  # requests over the whole document, as the README says
REQUEST_TIMEOUT = 30  # seconds; a hung request fails its case rather than the whole run
# Served name → folder in tests/data/tfserving_testdata; two_versions has labels.
MODELS = ("half_plus_two", "half_plus_three", "two_versions")
LABELS = {"stable": 123, "canary": 124}

cases_sent: collections.Counter = collections.Counter()


def _model_config(repo: pathlib.Path) -> pathlib.Path:
    entries = []
    for name in MODELS:
        shutil.copytree(TESTDATA / REFERENCE_MODELS[name], repo / name)
        extra = ""
        if name == "two_versions":
            versions = " ".join(f"versions: {v}" for v in LABELS.values())
            labels = " ".join(
                f'version_labels {{ key: "{k}" value: {v} }}' for k, v in LABELS.items()
            )
            extra = f" model_version_policy {{ specific {{ {versions} }} }} {labels}"
        entries.append(
            f'config {{ name: "{name}" base_path: "{repo / name}" '
            f'model_platform: "tensorflow"{extra} }}'
        )
    path = repo / "models.config"
    path.write_text("model_config_list {\n  " + "\n  ".join(entries) + "\n}\n")
    return path


@pytest.fixture(scope="module")
def live_server(start_server, tmp_path_factory):
    repo = tmp_path_factory.mktemp("schemathesis-models")
    return start_server(
        ["--model_config_file", str(_model_config(repo)), "--file_system_poll_wait_seconds", "0"],
        "/v1/models/half_plus_two",
    )


@pytest.fixture(scope="module")
def base_url(live_server):
    yield live_server.url
    sent = sum(cases_sent.values())
    print(f"\nschemathesis: {sent} cases over {len(cases_sent)} operations")
    if len(cases_sent) == len(OPERATIONS):  # the whole document ran (not a -k subset)
        assert sent > MIN_CASES, f"{sent} cases: the README promises over {MIN_CASES:,}"


# The kept document (test_openapi.py holds the served one equal to it); schemathesis's
# lazy fixture loading does not run under pytest 9, so requests get the URL per call.
schema = schemathesis.openapi.from_path(DOCUMENT, config=SchemathesisConfig.from_path(CONFIG))
OPERATIONS = [result.ok().label for result in schema.get_all_operations()]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_server_answers_as_documented(case, base_url):
    cases_sent[case.operation.label] += 1
    case.call_and_validate(base_url=base_url, timeout=REQUEST_TIMEOUT)
