"""Model repository: version policies, config files, and polling that swaps versions safely."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from conftest import TESTDATA, put_version, wait_for

from serving.errors import NotFound
from serving.model_config import ModelSource, VersionPolicy, load_model_config
from serving.repository import ModelRepository

HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three" / "00000123"
BAD = TESTDATA / "bad_half_plus_two" / "00000123"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(), {9}),
        (VersionPolicy("latest", num_versions=2), {5, 9}),
        (VersionPolicy("all"), {1, 5, 9}),
        (VersionPolicy("specific", versions=(1, 7)), {1}),
    ],
)
def test_version_policies(policy, expected):
    assert policy.select([5, 1, 9]) == expected


def test_text_proto_config(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("""
model_config_list {
  config {
    name: 'a'  # comment
    base_path: "/srv/a"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "b" base_path: "rel/b" model_version_policy { latest { num_versions: 3 } } }
}
""")
    a, b = load_model_config(path)
    assert a == ModelSource("a", a.base_path, VersionPolicy("specific", versions=(1, 2)),
                            (("stable", 1), ("canary", 2)))
    assert str(a.base_path) == "/srv/a"
    assert b.base_path == tmp_path / "rel" / "b"
    assert b.policy == VersionPolicy("latest", num_versions=3)


def test_json_config(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"model_config_list": {"config": [{
        "name": "a", "base_path": "/srv/a",
        "model_version_policy": {"all": {}}, "version_labels": {"stable": 4},
    }]}}))
    (source,) = load_model_config(path)
    assert source.policy == VersionPolicy("all")
    assert source.label_version("stable") == 4


@pytest.mark.parametrize(
    "text",
    ["model_config_list { config { name: 'a' ", "model_config_list { config { nam: 'a' } }",
     "model_config_list { config { name: 'a' base_path: 'b' "
     "model_version_policy { newest {} } } }"],
)
def test_bad_config_is_refused(tmp_path, text):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError):
        load_model_config(path)


@pytest.fixture()
def repo(tmp_path):
    base = tmp_path / "hot"
    base.mkdir()
    shutil.copytree(HALF_PLUS_TWO, base / "1")
    repository = ModelRepository(lambda: [ModelSource("hot", base)], poll_seconds=0)
    repository.poll()
    return repository, base


def _served(repository):
    with repository.servable("hot") as servable:
        return servable.version


def test_new_version_replaces_the_old_one(repo):
    repository, base = repo
    (base / ".tmp-2-abcd").mkdir()  # an export in progress is not a version
    shutil.copytree(HALF_PLUS_THREE, base / "2")
    with repository.servable("hot") as old:
        repository.poll()
        # The request holding version 1 still runs while version 2 takes over.
        sig = old.signature("")
        x = np.array([[1.0]], np.float32)
        assert old.call((sig.inputs["x"].tensor_name,), (sig.outputs["y"].tensor_name,),
                        [x])[0].tolist() == [[2.5]]
    assert _served(repository) == 2
    assert [s.version for s in repository.status("hot")] == [2]


def test_broken_version_is_never_served(repo):
    repository, base = repo
    shutil.copytree(BAD, base / "2")
    repository.poll()
    assert _served(repository) == 1
    states = {s.version: s for s in repository.status("hot")}
    assert states[1].state == "AVAILABLE"
    assert states[2].state == "END"
    assert states[2].error_code == "NOT_FOUND"
    repository.poll()  # not retried while the folder is unchanged
    assert _served(repository) == 1


def test_fixed_version_is_retried(repo):
    repository, base = repo
    (base / "2").mkdir()
    repository.poll()
    assert _served(repository) == 1
    shutil.copytree(HALF_PLUS_THREE, base / "2", dirs_exist_ok=True)
    os.utime(base / "2", (1, 1))
    repository.poll()
    assert _served(repository) == 2


def test_removed_version_stops_being_served(repo):
    repository, base = repo
    shutil.copytree(HALF_PLUS_THREE, base / "2")
    repository.poll()
    shutil.rmtree(base / "2")
    repository.poll()
    assert _served(repository) == 1
    with pytest.raises(NotFound):
        with repository.servable("hot", version=2):
            pass


def test_removed_model_stops_being_served(tmp_path):
    shutil.copytree(HALF_PLUS_TWO, tmp_path / "m" / "1")
    sources = [ModelSource("m", tmp_path / "m")]
    repository = ModelRepository(lambda: list(sources), poll_seconds=0)
    repository.poll()
    assert repository.names() == ["m"]
    sources.clear()
    repository.poll()
    assert repository.names() == []
    with pytest.raises(NotFound, match=r"Latest\(m\)"):
        with repository.servable("m"):
            pass


def test_polling_thread_picks_up_new_versions(tmp_path):
    import time

    shutil.copytree(HALF_PLUS_TWO, tmp_path / "m" / "1")
    repository = ModelRepository(lambda: [ModelSource("m", tmp_path / "m")], poll_seconds=0.1)
    repository.poll()
    repository.start()
    try:
        put_version(HALF_PLUS_THREE, tmp_path / "m" / "2")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [s.version for s in repository.status("m")] != [2]:
            time.sleep(0.05)
        assert [s.version for s in repository.status("m")] == [2]
    finally:
        repository.stop()


def _take_away(version):
    """A version taken away at once: renamed out of the way, then deleted."""
    gone = version.parent / f".{version.name}.gone"
    os.rename(version, gone)
    shutil.rmtree(gone)


# Polls each problem test waits through after start-up: the problem must be logged once.
POLLS = 6
POLL_SECONDS = 0.02


@pytest.fixture()
def polled_app(caplog):
    """``create_app`` with a fast poll; its poller is stopped after the test."""
    from serving import create_app

    caplog.set_level(logging.INFO, logger="serving")
    repositories = []

    def make(config):
        app = create_app({"FILE_SYSTEM_POLL_WAIT_SECONDS": POLL_SECONDS, "TESTING": True,
                          **config})
        repositories.append(app.extensions["tfkit_serving"].repository)
        return app, repositories[-1]

    yield make
    for repository in repositories:
        repository.stop()


def _wait_polls(repository, more=POLLS):
    target = repository.polls + more
    assert wait_for(lambda: repository.polls >= target, 60), repository.polls


def _logged(caplog, fragment):
    return sum(fragment in record.getMessage() for record in caplog.records)


def _config(tmp_path, name, base_path, policy=""):
    path = tmp_path / "models.config"
    path.write_text(f'model_config_list {{ config {{ name: "{name}" base_path: "{base_path}" '
                    f"{policy} }} }}")
    return {"MODEL_CONFIG_FILE": str(path)}


@pytest.mark.parametrize(
    ("situation", "logged", "status", "answer"),
    [
        ("missing repository folder", "Cannot list the model repository: [Errno 2]", None, None),
        ("empty repository folder", "No models to serve: the model repository has no model "
         "folders", None, None),
        ("model without versions", "No versions of servable m found under base path", 404,
         "Could not find any versions of model m: no numbered version folder (e.g. 1/) under "
         "its base path"),
        ("every version fails to load", "Failed to load m version 1 from", 200,
         "SavedModel file does not exist at: m/1/"),
        ("configured base path missing", "Could not find base path", 404,
         "Could not find any versions of model m: its base path does not exist on the server"),
        ("policy names no version on disk", "but its model_version_policy serves only "
         "versions 7", 404, "its model_version_policy serves versions 7, none of which is on "
         "disk"),
    ],
)
def test_a_repository_without_a_loadable_model_is_not_ready_and_says_why_once(
    tmp_path, polled_app, caplog, situation, logged, status, answer
):
    repo = tmp_path / "repo"
    config = {"MODELS": str(repo)}
    if situation != "missing repository folder":
        repo.mkdir()
    if situation == "model without versions":
        (repo / "m").mkdir()
    elif situation == "every version fails to load":
        shutil.copytree(BAD, repo / "m" / "1")
    elif situation == "configured base path missing":
        config = _config(tmp_path, "m", repo / "m")
    elif situation == "policy names no version on disk":
        shutil.copytree(HALF_PLUS_TWO, repo / "m" / "1")
        config = _config(tmp_path, "m", repo / "m",
                         "model_version_policy { specific { versions: 7 } }")
    app, repository = polled_app(config)
    _wait_polls(repository)
    assert _logged(caplog, logged) == 1, caplog.text
    assert not repository.ready()
    if status is not None:
        response = app.test_client().get("/v1/models/m")
        assert response.status_code == status, response.json
        text = json.dumps(response.json)
        assert answer in text
        assert str(tmp_path) not in text
    if status == 200:  # TF Serving's answer for a version that failed to load
        (state,) = response.json["model_version_status"]
        assert state["state"] == "END"
        assert state["status"]["error_code"] == "NOT_FOUND"


def test_a_changed_situation_is_logged_again_and_a_loaded_model_makes_it_ready(
    tmp_path, polled_app, caplog
):
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    _, repository = polled_app({"MODELS": str(repo)})
    _wait_polls(repository)
    put_version(BAD, repo / "m" / "1")  # the poller runs: a half-copied version would be a
    _wait_polls(repository)              # third situation, logged as well
    _take_away(repo / "m" / "1")
    _wait_polls(repository)
    assert _logged(caplog, "No versions of servable m found") == 2, caplog.text
    assert _logged(caplog, "Failed to load m version 1") == 1, caplog.text
    assert not repository.ready()
    put_version(HALF_PLUS_TWO, repo / "m" / "2")
    _wait_polls(repository)
    assert repository.ready()
    assert [s.state for s in repository.status("m")] == ["AVAILABLE"]
    assert _logged(caplog, "No versions of servable m found") == 2, caplog.text
