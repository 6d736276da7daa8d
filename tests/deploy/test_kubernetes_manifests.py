"""deploy/kubernetes: schema-valid manifests (kubernetes-validate's bundled,
offline schemas, strict: unknown fields are errors) that run Sluice safely."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, latest_version

K8S = "deploy/kubernetes"
# The oldest and newest Kubernetes releases the installed schemas cover.
VERSIONS = sorted({all_versions()[0], latest_version()})


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization(repo) -> dict:
    return yaml.safe_load((repo / K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def resources(repo, kustomization) -> dict[tuple[str, str], dict]:
    """(kind, name) -> manifest, for every file the kustomization lists."""
    found = {}
    for filename in kustomization["resources"]:
        for doc in documents(repo / K8S / filename):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


@pytest.fixture
def offline(monkeypatch):
    """Fail any network connection: the schemas must come from the package."""

    def refuse(*args, **kwargs):
        raise AssertionError("kubernetes-validate tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pod_spec(resource: dict) -> dict:
    return resource["spec"]["template"]["spec"]


def test_kustomization_lists_every_manifest(repo, kustomization):
    manifests = {p.name for p in (repo / K8S).glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    assert kustomization["namespace"] == "sluice"
    assert [image["name"] for image in kustomization["images"]] == ["sluice"]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(resources, version, offline):
    assert len(resources) == 7
    for (kind, name), resource in resources.items():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            pytest.fail(f"{kind}/{name} invalid for {version} at {path}: {error.message}")


def test_the_validator_rejects_a_misspelt_field(resources, offline):
    """Guards the test above: strict validation catches a typo nested deep in a pod."""
    deployment = copy.deepcopy(resources["Deployment", "sluice-api"])
    pod_spec(deployment)["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_expected_resources(resources):
    assert set(resources) == {
        ("Namespace", "sluice"),
        ("ConfigMap", "sluice-config"),
        ("Secret", "sluice-secrets"),
        ("Job", "sluice-migrate"),
        ("Deployment", "sluice-api"),
        ("Deployment", "sluice-worker"),
        ("Service", "sluice-api"),
    }


def test_secrets_live_in_the_secret_and_settings_in_the_configmap(resources):
    secret = resources["Secret", "sluice-secrets"]["stringData"]
    assert {"SLUICE_DATABASE_URL", "SLUICE_JWT_SECRET"} <= set(secret)
    config = resources["ConfigMap", "sluice-config"]["data"]
    assert not {"SLUICE_DATABASE_URL", "SLUICE_JWT_SECRET", "SLUICE_SMTP_URL"} & set(config)
    assert config["SLUICE_ALLOW_SHELL"] == "0"
    assert all(key.startswith("SLUICE_") for key in config)


WORKLOADS = [
    ("Job", "sluice-migrate"),
    ("Deployment", "sluice-api"),
    ("Deployment", "sluice-worker"),
]


@pytest.mark.parametrize("key", WORKLOADS, ids=lambda k: k[1] if isinstance(k, tuple) else k)
def test_workloads_run_non_root_read_only_without_capabilities(resources, key):
    spec = pod_spec(resources[key])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        # A read-only root still needs a writable /tmp (tempfile, shell tasks).
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("key", WORKLOADS, ids=lambda k: k[1] if isinstance(k, tuple) else k)
def test_workloads_have_resources_and_config(resources, key):
    for container in pod_spec(resources[key])["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        sources = [(kind, ref["name"]) for src in container["envFrom"] for kind, ref in src.items()]
        assert sources == [("configMapRef", "sluice-config"), ("secretRef", "sluice-secrets")]
        assert container["image"] == "sluice"  # kustomization.yaml sets name and tag


def test_migrate_job_runs_migrations(resources):
    job = resources["Job", "sluice-migrate"]
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}
    assert job["spec"]["backoffLimit"] >= 1


def probe_path_and_port(container: dict, probe: str) -> tuple[str, int]:
    http = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return http["path"], ports[http["port"]]


def test_api_probes_health_for_liveness_and_ready_for_readiness(resources):
    (container,) = pod_spec(resources["Deployment", "sluice-api"])["containers"]
    port = int(container["args"][container["args"].index("--port") + 1])
    assert probe_path_and_port(container, "livenessProbe") == ("/health", port)
    assert probe_path_and_port(container, "readinessProbe") == ("/ready", port)
    assert probe_path_and_port(container, "startupProbe") == ("/health", port)


def test_worker_probes_its_metrics_port(resources):
    (container,) = pod_spec(resources["Deployment", "sluice-worker"])["containers"]
    port = int(resources["ConfigMap", "sluice-config"]["data"]["SLUICE_METRICS_PORT"])
    assert probe_path_and_port(container, "livenessProbe") == ("/metrics", port)
    assert probe_path_and_port(container, "readinessProbe") == ("/metrics", port)
    assert container["args"][0] == "worker"
    # Room to finish running jobs after SIGTERM.
    assert pod_spec(resources["Deployment", "sluice-worker"])["terminationGracePeriodSeconds"] >= 30


@pytest.mark.parametrize("name", ["sluice-api", "sluice-worker"])
def test_deployment_selectors_match_their_pods(resources, name):
    deployment = resources["Deployment", name]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_service_routes_to_api_pods_only(resources):
    service = resources["Service", "sluice-api"]["spec"]
    api = resources["Deployment", "sluice-api"]["spec"]["template"]
    worker = resources["Deployment", "sluice-worker"]["spec"]["template"]
    assert service["selector"].items() <= api["metadata"]["labels"].items()
    assert not service["selector"].items() <= worker["metadata"]["labels"].items()
    (container,) = api["spec"]["containers"]
    assert [p["targetPort"] for p in service["ports"]] == [container["ports"][0]["name"]]


def test_pods_run_as_the_images_user(resources, repo):
    """The uid in the manifests is the one the Dockerfile creates and switches to."""
    dockerfile = (repo / "Dockerfile").read_text()
    for key in WORKLOADS:
        uid = pod_spec(resources[key])["securityContext"]["runAsUser"]
        assert f"USER {uid}:" in dockerfile or f"USER {uid}\n" in dockerfile
