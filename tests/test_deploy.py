"""The cluster example in deploy/: it parses and says what a TFJob needs."""

import pathlib
import shlex

import yaml

from tfkit.cli import _parser

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"


def _documents():
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "tfjob.yaml").read_text())}


def test_tfjob_runs_tfkit_train_on_several_workers():
    job = _documents()["TFJob"]
    assert job["apiVersion"] == "kubeflow.org/v1"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] >= 2
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow"
    assert container["command"] == ["tfkit", "train"]
    # The flags are real: tfkit's own parser accepts them.
    args = _parser().parse_args(["train", *container["args"]])
    assert args.logdir.startswith("/shared/") and args.export.startswith("/shared/")
    assert args.run_name  # a fixed run name, so a restarted job resumes


def test_shared_volume_is_mounted_by_workers_and_tensorboard():
    docs = _documents()
    claim = docs["PersistentVolumeClaim"]["metadata"]["name"]
    pods = [docs["TFJob"]["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"],
            docs["Deployment"]["spec"]["template"]["spec"]]
    for pod in pods:
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
        assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/shared"
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]


def test_dockerfile_installs_the_package():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    runs = [shlex.split(line)[1:] for line in lines if line.startswith("RUN ")]
    assert ["pip", "install", "--no-cache-dir", "."] in runs
