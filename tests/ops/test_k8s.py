"""Kubernetes manifests validated offline against the API schemas, then for what the platform needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.processes import REPO_ROOT

KUBERNETES_VERSION = "1.33.0"
MANIFESTS = REPO_ROOT / "deploy" / "k8s"
GRPC_SERVICES = {
    "market": (50051, "tradebot.v1.MarketData"),
    "strategy": (50052, "tradebot.v1.Strategy"),
    "executor": (50053, "tradebot.v1.Executor"),
}
SECRET_OWNERS = {"CRON_SECRET": "gateway", "STATUS_TOKEN": "gateway", "CREDENTIALS_KEYS": "executor",
                 "OPENAI_API_KEY": "strategy"}
# The kubelet's gRPC probes cannot present a client certificate: they ask this plaintext,
# health-only port, the same in every pod.
HEALTH_PORT = 50050
TLS_DIR = "/etc/tradebot/tls"
SERVER_TLS = {"GRPC_TLS_CERT": f"{TLS_DIR}/tls.crt", "GRPC_TLS_KEY": f"{TLS_DIR}/tls.key",
              "GRPC_TLS_CLIENT_CA": f"{TLS_DIR}/ca.crt"}
CLIENT_TLS = {"GRPC_TLS_CA": f"{TLS_DIR}/ca.crt", "GRPC_TLS_CLIENT_CERT": f"{TLS_DIR}/tls.crt",
              "GRPC_TLS_CLIENT_KEY": f"{TLS_DIR}/tls.key"}


def resource_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


def load_all() -> list[dict[str, Any]]:
    return [doc for path in resource_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in load_all() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("path", resource_files(), ids=lambda path: path.name)
def test_manifest_matches_the_kubernetes_schema(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents
    for document in documents:
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in resource_files())


@pytest.mark.parametrize("name", ["gateway", *GRPC_SERVICES])
def test_deployment_runs_non_root_with_resources(name: str) -> None:
    deployment = find("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    main = container(deployment)
    assert main["image"].endswith(f"/tradebot/{name}:0.1.0")
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind])


def env_values(main: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in main.get("env", []) if "value" in item}


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_service_has_native_grpc_probes_and_a_headless_service(name: str) -> None:
    port, full_name = GRPC_SERVICES[name]
    deployment = find("Deployment", name)
    main = container(deployment)
    assert {item["containerPort"] for item in main["ports"]} >= {port, HEALTH_PORT}
    # The probes ask the plaintext health port: the service port wants a client certificate.
    assert main["readinessProbe"]["grpc"] == {"port": HEALTH_PORT, "service": full_name}
    assert main["livenessProbe"]["grpc"]["port"] == HEALTH_PORT
    assert main["startupProbe"]["grpc"]["port"] == HEALTH_PORT
    assert env_values(main)["GRPC_PORT"] == str(port)
    assert env_values(main)["GRPC_HEALTH_PORT"] == str(HEALTH_PORT)
    service = find("Service", name)
    assert service["spec"]["clusterIP"] == "None", "headless, so DNS returns every pod for round_robin"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [item["port"] for item in service["spec"]["ports"]] == [port]


def test_gateway_reaches_every_replica_through_dns() -> None:
    config = find("ConfigMap", "tradebot-config")["data"]
    for name, (port, _) in GRPC_SERVICES.items():
        address = config[f"{name.upper()}_ADDR"]
        assert address == f"dns:///{name}.tradebot.svc.cluster.local:{port}"
    refs = [ref["configMapRef"]["name"] for ref in container(find("Deployment", "gateway"))["envFrom"]
            if "configMapRef" in ref]
    assert refs == ["tradebot-config"]


@pytest.mark.parametrize("name", ["market", "strategy"])
def test_market_and_strategy_autoscale(name: str) -> None:
    hpa = find("HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # An HPA on CPU needs CPU requests to compute utilisation.
    assert "cpu" in container(find("Deployment", name))["resources"]["requests"]


def test_each_secret_is_a_template_mounted_only_where_it_is_used() -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in load_all() if doc["kind"] == "Secret"}
    for key, owner in SECRET_OWNERS.items():
        holders = [name for name, secret in secrets.items() if key in secret.get("stringData", {})]
        assert len(holders) == 1, f"{key} in {holders}"
        # Placeholders are empty: an unfilled template must not run with a guessable secret.
        assert secrets[holders[0]]["stringData"][key] == ""
        users = {doc["metadata"]["name"] for doc in load_all() if doc["kind"] == "Deployment"
                 and any(ref.get("secretRef", {}).get("name") == holders[0] for ref in container(doc)["envFrom"])}
        assert users == {owner}, f"{key} reaches {users}"


def test_gateway_is_exposed_for_upstash() -> None:
    service = find("Service", "gateway")
    ingress = find("Ingress", "gateway")
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert any("/api/cron/run-bots".startswith(path["path"]) for path in paths)
    for path in paths:
        backend = path["backend"]["service"]
        assert backend["name"] == "gateway"
        assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
    assert ingress["spec"]["tls"], "Upstash calls over HTTPS"
    # A tick may take TICK_DEADLINE_SECONDS; the proxy must wait at least that long.
    deadline = int(find("ConfigMap", "tradebot-config")["data"]["TICK_DEADLINE_SECONDS"])
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > deadline
    probe = container(find("Deployment", "gateway"))["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"


def test_signed_upstash_url_is_the_ingress_url() -> None:
    # QStash signs the URL it delivers to; the gateway checks against CRON_PUBLIC_URL.
    url = find("ConfigMap", "tradebot-config")["data"]["CRON_PUBLIC_URL"]
    ingress = find("Ingress", "gateway")
    (rule,) = ingress["spec"]["rules"]
    assert url == f"https://{rule['host']}/api/cron/run-bots"
    assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]


@pytest.mark.parametrize("name", ["gateway", *GRPC_SERVICES])
def test_a_node_drain_keeps_a_pod_serving(name: str) -> None:
    deployment = find("Deployment", name)
    budget = find("PodDisruptionBudget", name)
    assert budget["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def tls_volume(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The container's mount of TLS_DIR and the pod volume behind it."""
    (mount,) = [item for item in container(deployment)["volumeMounts"] if item["mountPath"] == TLS_DIR]
    (volume,) = [item for item in deployment["spec"]["template"]["spec"]["volumes"] if item["name"] == mount["name"]]
    return mount, volume


@pytest.mark.parametrize("name", ["gateway", *GRPC_SERVICES])
def test_each_pod_mounts_only_its_own_tls_secret_read_only(name: str) -> None:
    deployment = find("Deployment", name)
    mount, volume = tls_volume(deployment)
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == f"{name}-tls"
    # Group-readable through fsGroup, by nobody else; the pod's user is in that group.
    assert volume["secret"]["defaultMode"] == 0o440
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    secrets = [item["secret"]["secretName"] for item in pod["volumes"] if "secret" in item]
    assert secrets == [f"{name}-tls"]


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_servers_require_mutual_tls(name: str) -> None:
    env = env_values(container(find("Deployment", name)))
    assert SERVER_TLS.items() <= env.items()
    assert env["GRPC_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", ["gateway", "executor"])
def test_grpc_clients_present_their_own_certificate(name: str) -> None:
    env = env_values(container(find("Deployment", name)))
    assert CLIENT_TLS.items() <= env.items()


def test_executor_reads_market_data_from_the_market_service() -> None:
    env = env_values(container(find("Deployment", "executor")))
    assert env["MARKET_ADDR"] == "dns:///market.tradebot.svc.cluster.local:50051"


def test_every_target_host_is_named_in_the_server_certificate() -> None:
    from services.devstack import certs

    config = find("ConfigMap", "tradebot-config")["data"]
    targets = {key: value for key, value in config.items() if key.endswith("_ADDR")}
    targets |= {f"executor:{key}": value for key, value in env_values(container(find("Deployment", "executor"))).items()
                if key.endswith("_ADDR")}
    assert len(targets) == 4
    for key, target in targets.items():
        service = key.split(":")[-1].removesuffix("_ADDR").lower()
        host = target.removeprefix("dns:///").rsplit(":", 1)[0]
        assert host in {str(name.value) for name in certs.server_names(service)}, key


def test_nothing_runs_without_authentication() -> None:
    for document in load_all():
        text = yaml.safe_dump(document)
        assert "GRPC_INSECURE" not in text, f"{document['kind']}/{document['metadata']['name']} sets GRPC_INSECURE"


def test_public_https_certificate_is_not_an_internal_identity() -> None:
    ingress = find("Ingress", "gateway")
    internal = {f"{name}-tls" for name in ["gateway", "operator", *GRPC_SERVICES]}
    assert all(entry["secretName"] not in internal for entry in ingress["spec"]["tls"])


def test_tls_secrets_are_not_templated() -> None:
    # `kubectl apply` of an empty template would overwrite the real keys.
    names = {doc["metadata"]["name"] for doc in load_all() if doc["kind"] == "Secret"}
    assert not {name for name in names if name.endswith("-tls")}
