"""The cluster examples in deploy/: they parse and agree with the code they run.

Ports, paths and flags are checked against the server itself: the container's args
go through ``tfkit serve``'s own parser and ``run_serve`` (with gunicorn replaced by a
recorder), and the probe paths are asked of the app those args configure.
"""

import argparse
import ipaddress
import pathlib
import posixpath
import re
import shlex

import pytest
import yaml

from serving import cli as serving_cli
from serving import metric_snapshots
from tfkit.cli import _parser

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"
TOKEN = "deploy-test-token"  # what the Secret would hold
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
# KServe's conventions for a custom predictor (its pkg/constants): the container it reads
# STORAGE_URI and PROTOCOL from, where it mounts STORAGE_URI, its default port, and the
# argument it takes the model's name from (another spelling would go unseen).
KSERVE_CONTAINER = "kserve-container"
KSERVE_MODEL_DIR = "/mnt/models"
KSERVE_PORT = 8080
KSERVE_MODEL_NAME_ARG = "--model_name"
SERVERS = ["deployment", "inferenceservice"]


def _documents(name="tfjob.yaml"):
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / name).read_text())}


def _pod(server):
    """The pod spec running `tfkit serve` and its container."""
    if server == "deployment":
        pod = _documents("serve.yaml")["Deployment"]["spec"]["template"]["spec"]
    else:  # a KServe predictor is a pod spec with KServe's fields beside it
        pod = _documents("kserve.yaml")["InferenceService"]["spec"]["predictor"]
    return pod, pod["containers"][0]


class _ServeParser(argparse.ArgumentParser):
    """`python -m serving`'s flags (what `tfkit serve` runs), without abbreviations."""

    def error(self, message):
        raise AssertionError(f"tfkit serve refuses these arguments: {message}")


def _serve_parser():
    parser = _ServeParser(allow_abbrev=False)
    serving_cli.add_serve_arguments(parser)
    return parser


class _Volumes:
    """A pod's mounts as empty temporary folders, and paths mapped between the two."""

    def __init__(self, mounts):
        self.mounts = mounts  # mount path in the pod -> its folder here
        for folder in mounts.values():
            folder.mkdir()

    def local(self, path):
        for mount, folder in self.mounts.items():
            if path == mount or path.startswith(mount + "/"):
                return str(folder) + path[len(mount):]
        return path

    def in_pod(self, path):
        for mount, folder in self.mounts.items():
            if path == str(folder) or path.startswith(f"{folder}/"):
                return mount + path[len(str(folder)):]
        return path


@pytest.fixture()
def launch(monkeypatch, tmp_path):
    """Starts `tfkit serve` as a pod would, with gunicorn replaced by a recorder.

    Each volume (and KServe's model folder) is an empty temporary folder, the init
    containers' ``mkdir -p`` runs first, and the Secret's variable is set. Returns
    gunicorn's options, the bound host and port, the app config in the pod's paths
    (``config``) and in the temporary folders (``local_config``).
    """

    def launch(server):
        pod, container = _pod(server)
        assert container["command"][0] == "tfkit"
        assert _parser("serve").parse_args(container["command"][1:]).run is serving_cli.run_serve
        mounts = {m["mountPath"]: tmp_path / m["name"] for m in container.get("volumeMounts", [])}
        if server == "inferenceservice":
            mounts[KSERVE_MODEL_DIR] = tmp_path / "storage-uri"
        volumes = _Volumes(mounts)
        for init in pod.get("initContainers", []):
            assert init["command"][:2] == ["mkdir", "-p"], "only mkdir is run here"
            for path in init["command"][2:]:
                pathlib.Path(volumes.local(path)).mkdir(parents=True, exist_ok=True)
        started = {}

        class Recorder:  # stands in for gunicorn: records what it was given, listens nowhere
            def __init__(self, options, app_config):
                started.update(options=options, local_config=app_config)

            def run(self):
                pass

        monkeypatch.setattr(serving_cli, "_GunicornServer", Recorder)
        monkeypatch.setattr(serving_cli, "_check_address_free", lambda host, port: None)
        # No workers are forked here, and this process has imported prometheus_client.
        monkeypatch.setattr(metric_snapshots, "share_with_workers", lambda directory: None)
        for var in container.get("env", []):
            monkeypatch.setenv(var["name"], var.get("value", TOKEN))
        args = []
        for arg in container["args"]:
            flag, equals, value = arg.partition("=")
            args.append(flag + equals + volumes.local(value) if equals else arg)
        assert serving_cli.run_serve(_serve_parser().parse_args(args)) == 0
        host, _, port = started["options"]["bind"].rpartition(":")
        started["host"], started["port"] = host, int(port)
        started["config"] = {key: volumes.in_pod(value) if isinstance(value, str) else value
                             for key, value in started["local_config"].items()}
        return started

    return launch


@pytest.fixture()
def app_for():
    """The app a started server would build in its worker, on the pod's (empty) volumes."""

    def app_for(started):
        from serving.app import create_app

        return create_app({**started["local_config"], "FILE_SYSTEM_POLL_WAIT_SECONDS": 0,
                           "METRICS_DIR": None})

    return app_for


def _bound(started) -> list[int]:
    """The ports a started server listens on: REST's, and gRPC's when it serves gRPC."""
    grpc_port = started["local_config"].get("GRPC_PORT")
    return sorted([started["port"], *([grpc_port] if grpc_port else [])])


def _port_number(container, port):
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    return {p.get("name"): p["containerPort"] for p in container["ports"]}[port]


def _secret_refs(container):
    return {(var["name"], ref["name"], ref["key"]) for var in container.get("env", [])
            if (ref := var.get("valueFrom", {}).get("secretKeyRef"))}


def _tfjob_export():
    """The TFJob's claim and its export folder, as a path inside the claim."""
    jobs = _documents()
    worker = jobs["TFJob"]["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    train = _parser().parse_args(["train", *worker["containers"][0]["args"]])
    mount = worker["containers"][0]["volumeMounts"][0]["mountPath"]
    return (jobs["PersistentVolumeClaim"]["metadata"]["name"],
            posixpath.relpath(train.export, mount))


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


@pytest.mark.parametrize("server", SERVERS)
def test_server_listens_on_the_container_port(server, launch):
    _, container = _pod(server)
    started = launch(server)
    # On loopback the kubelet's probes and the Service's traffic would never arrive.
    assert not ipaddress.ip_address(started["host"]).is_loopback, started["host"]
    assert sorted(port["containerPort"] for port in container["ports"]) == _bound(started)


@pytest.mark.parametrize("server", SERVERS)
def test_workers_fit_the_cpu_limit(server):
    _, container = _pod(server)
    parser = _serve_parser()
    parser.set_defaults(workers=None)
    workers = parser.parse_args(container["args"]).workers
    # Without --workers the server starts one per core of the node, not of the limit.
    assert workers is not None, "give --workers explicitly"
    cpu = str(container["resources"]["limits"]["cpu"])
    assert workers <= (float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))
    assert container["resources"]["requests"]["cpu"]  # what CPU autoscaling measures against


@pytest.mark.parametrize("server", SERVERS)
def test_probes_are_health_routes_answered_without_the_token(server, launch, app_for):
    _, container = _pod(server)
    started = launch(server)  # with the Secret's variable set, as the pod has it
    app = app_for(started)
    client = app.test_client()
    # The variable the manifest fills from the Secret is the one the server reads.
    assert client.get("/monitoring/prometheus/metrics").status_code == 401
    metrics = client.get("/monitoring/prometheus/metrics",
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200
    assert {"livenessProbe", "readinessProbe"} <= container.keys()
    urls = app.url_map.bind("localhost")
    for kind in PROBES:
        if kind not in container:
            continue
        probe = container[kind]["httpGet"]
        assert _port_number(container, probe["port"]) == started["port"], kind
        urls.match(probe["path"], method="GET")  # raises NotFound or MethodNotAllowed
        status = client.get(probe["path"]).status_code  # probes carry no token
        assert status != 401, kind
        if kind != "readinessProbe":  # alive with no model yet, or the pod is restarted
            assert 200 <= status < 400, (kind, status)
    assert container["livenessProbe"]["httpGet"]["path"] != (
        container["readinessProbe"]["httpGet"]["path"])


def test_deployment_serves_what_the_tfjob_exports(launch):
    pod, container = _pod("deployment")
    models = launch("deployment")["config"]["MODELS"]
    mounts = [m for m in container["volumeMounts"]
              if posixpath.commonpath([m["mountPath"], models]) == m["mountPath"]]
    assert len(mounts) == 1, f"--models={models} is on no volume"
    mount = mounts[0]
    assert mount.get("readOnly") is True
    volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
    claim, export = _tfjob_export()
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert posixpath.relpath(models, mount["mountPath"]) == export
    # The folder exists before the server starts, even before the first export.
    init = pod["initContainers"][0]
    assert init["command"] == ["mkdir", "-p", models]
    assert {(m["name"], m["mountPath"]) for m in init["volumeMounts"]} == {
        (mount["name"], mount["mountPath"])}


def test_service_and_autoscaler_point_at_the_deployment(launch):
    docs = _documents("serve.yaml")
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    _, container = _pod("deployment")
    started = launch("deployment")
    assert started["local_config"]["GRPC_PORT"] == 8500  # TF Serving's gRPC port, as a Service
    assert sorted(_port_number(container, p["targetPort"]) for p in service["ports"]) == _bound(
        started)
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    [metric] = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container["resources"]["requests"]


def test_inference_service_is_a_v2_custom_predictor(launch, app_for):
    isvc = _documents("kserve.yaml")["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    _, container = _pod("inferenceservice")
    assert container["name"] == KSERVE_CONTAINER
    env = {var["name"]: var.get("value") for var in container["env"]}
    # A custom container's protocol is this variable; protocolVersion is the built-in runtimes'.
    assert env["PROTOCOL"] == "v2"
    started = launch("inferenceservice")
    assert started["port"] == KSERVE_PORT
    config = started["config"]
    assert config["MODEL_BASE_PATH"] == KSERVE_MODEL_DIR
    name = config["MODEL_NAME"]
    assert f"{KSERVE_MODEL_NAME_ARG}={name}" in container["args"]
    # The server answers the V2 inference route for the model KServe names.
    urls = app_for(started).url_map.bind("localhost")
    urls.match(f"/v2/models/{name}/infer", method="POST")
    claim, export = _tfjob_export()
    assert env["STORAGE_URI"] == f"pvc://{claim}/{export}/{name}"


def test_readme_says_how_to_apply_each_file_and_make_the_secret():
    readme = (DEPLOY / "README.md").read_text()
    applied = set(re.findall(r"kubectl apply -f deploy/(\S+)", readme))
    assert applied == {path.name for path in DEPLOY.glob("*.yaml")}
    created = set(re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", readme))
    wanted = {ref[1:] for server in SERVERS for ref in _secret_refs(_pod(server)[1])}
    assert wanted and created == wanted


@pytest.mark.parametrize("name", ["serve.yaml", "kserve.yaml", "tfjob.yaml"])
def test_manifests_match_the_kubernetes_schemas(name):
    validator = pytest.importorskip("kubernetes_validate")
    version = validator.latest_version()
    for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
        if doc["kind"] == "InferenceService":  # no schema for it; its containers are core ones
            pod = {"containers": doc["spec"]["predictor"]["containers"]}
            doc = {"apiVersion": "v1", "kind": "Pod", "metadata": doc["metadata"], "spec": pod}
        if doc["kind"] == "TFJob":
            continue  # Kubeflow's kind: the schemas hold Kubernetes' own
        validator.validate(doc, version, strict=True)  # strict: an unknown field fails too
