"""`tfkit serve` start-up as a real process: a missing model source stops it with a clear
message; a repository with nothing loadable runs, is not ready, and says why once."""

import os
import shutil
import subprocess
import sys

import pytest
import requests
from conftest import REPO_ROOT, TESTDATA, TFKIT_SERVE, free_port, put_version, wait_for

HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
BAD = TESTDATA / "bad_half_plus_two" / "00000123"
POLL = ["--file_system_poll_wait_seconds", "0.1", "--workers", "1"]
WAIT_SECONDS = 60
PROBES = 5  # new empty model folders, each seen by a later poll than the one before


def _serve(command: list[str], args: list[str], cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFKIT_")}
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    # Each of these servers must refuse before it binds, so the port is never opened and
    # another process taking it first cannot change the outcome.
    return subprocess.run(
        [sys.executable, *command, *args, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("command", [["-m", "serving"], TFKIT_SERVE],
                         ids=["python -m serving", "tfkit serve"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "no_such_folder"], "tfkit serve: --models no_such_folder: no such folder. "
         "Pass --models DIR"),
        ([], "tfkit serve: models (the default for --models): no such folder. Pass --models DIR"),
        (["--model_name", "m", "--model_base_path", "no/such/base"],
         "tfkit serve: --model_base_path no/such/base: no such folder."),
        (["--model_config_file", "no_such.config"],
         "tfkit serve: --model_config_file no_such.config: no such file."),
        (["--models", "a_file"], "tfkit serve: --models a_file: not a folder."),
    ],
    ids=["--models", "default models", "--model_base_path", "--model_config_file", "a file"],
)
def test_a_missing_model_source_stops_the_server_naming_it(tmp_path, command, args, message):
    (tmp_path / "a_file").write_text("not a model repository")
    done = _serve(command, args, tmp_path)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr
    if "--model_config_file" not in args:
        assert "`tfkit train --data penguins --target species --export models`" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Booting worker" not in done.stderr  # it stopped before starting any


def _status(server, name: str) -> tuple[int, dict]:
    response = requests.get(f"{server.url}/v1/models/{name}", timeout=5)
    return response.status_code, response.json()


def _log_count(server, fragment: str) -> int:
    return server.log_path.read_text(errors="replace").count(fragment)


def test_unloadable_models_are_not_ready_and_logged_once_over_many_polls(
    tmp_path, start_server
):
    repo = tmp_path / "repo"
    shutil.copytree(HALF_PLUS_TWO, repo / "half_plus_two" / "1")
    shutil.copytree(BAD, repo / "broken" / "1")
    (repo / "empty").mkdir()
    server = start_server(["--models", str(repo), *POLL], "/v1/models/half_plus_two")

    # Each probe is a new empty model folder; its status answer changes only once a poll
    # has seen it, so after the last one at least PROBES polls have run.
    for i in range(PROBES):
        (repo / f"probe{i}").mkdir()
        assert wait_for(lambda i=i: "no numbered version folder" in str(
            _status(server, f"probe{i}")[1]), WAIT_SECONDS), server.log()

    assert _log_count(server, "Failed to load broken version 1") == 1, server.log()
    assert _log_count(server, "No versions of servable empty found") == 1, server.log()
    for i in range(PROBES):
        assert _log_count(server, f"No versions of servable probe{i} found") == 1
    code, broken = _status(server, "broken")
    assert code == 200
    (state,) = broken["model_version_status"]
    assert state["state"] == "END"
    assert state["status"]["error_code"] == "NOT_FOUND"
    assert "SavedModel file does not exist at: broken/1/" in state["status"]["error_message"]
    assert str(tmp_path) not in str(broken)
    code, empty = _status(server, "empty")
    assert code == 404
    assert empty["error"] == ("Could not find any versions of model empty: no numbered "
                              "version folder (e.g. 1/) under its base path")
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code != 200


def test_a_configured_model_without_a_base_path_is_logged_once_until_it_appears(
    tmp_path, start_server
):
    shutil.copytree(HALF_PLUS_TWO, tmp_path / "half" / "1")
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "half" base_path: "half" } '
        'config { name: "ghost" base_path: "ghost" } }'
    )
    server = start_server(["--model_config_file", str(config), *POLL], "/v1/models/half")

    def next_half_version(version: int) -> None:
        # A poll witness: the configured names are fixed, so new versions of "half" show
        # that a poll ran (the config file is read once).
        put_version(HALF_PLUS_TWO, tmp_path / "half" / str(version))
        assert wait_for(lambda: _status(server, "half")[1].get("model_version_status", [{}])[0]
                        .get("version") == str(version), WAIT_SECONDS), server.log()

    for version in range(2, 2 + PROBES):
        next_half_version(version)
    code, ghost = _status(server, "ghost")
    assert (code, ghost["error"]) == (404, "Could not find any versions of model ghost: its "
                                           "base path does not exist on the server")
    assert _log_count(server, "Could not find base path") == 1, server.log()
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code != 200

    (tmp_path / "ghost").mkdir()  # the situation changes: logged again, once
    assert wait_for(lambda: "no numbered version folder" in _status(server, "ghost")[1]
                    .get("error", ""), WAIT_SECONDS)
    for version in range(2 + PROBES, 2 + 2 * PROBES):
        next_half_version(version)
    assert _log_count(server, "No versions of servable ghost found") == 1, server.log()
    assert _log_count(server, "Could not find base path") == 1, server.log()

    put_version(HALF_PLUS_TWO, tmp_path / "ghost" / "1")
    assert wait_for(lambda: _status(server, "ghost")[0] == 200, WAIT_SECONDS)
    assert wait_for(lambda: requests.get(f"{server.url}/v2/health/ready", timeout=5)
                    .status_code == 200, WAIT_SECONDS)


def test_an_empty_repository_runs_is_not_ready_and_says_so_once(tmp_path, start_server):
    repo = tmp_path / "repo"
    repo.mkdir()
    server = start_server(["--models", str(repo), *POLL], "/v2/health/live")
    assert wait_for(lambda: _log_count(server, "No models to serve") == 1, WAIT_SECONDS)
    # ModelRepository.ready() is False with no models; /v2/health/ready must say so too
    # (all() over no model names would be True).
    response = requests.get(f"{server.url}/v2/health/ready", timeout=5)
    assert (response.status_code, response.json()) == (503, {"ready": False})
    put_version(HALF_PLUS_TWO, repo / "late" / "1")
    # Its status answers 200 from the first poll that sees it, while it still loads (as
    # TF Serving's does); ready waits for it to be AVAILABLE.
    assert wait_for(lambda: _status(server, "late")[0] == 200, WAIT_SECONDS), server.log()
    assert wait_for(lambda: requests.get(f"{server.url}/v2/health/ready", timeout=5)
                    .status_code == 200, WAIT_SECONDS), server.log()
    # The in-process test in test_serving_repository.py counts the polls exactly; here
    # the empty spell lasted from start-up until "late" was served.
    assert _log_count(server, "No models to serve") == 1, server.log()
