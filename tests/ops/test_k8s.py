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
SECRET_OWNERS = {"CRON_SECRET": "gateway", "CREDENTIALS_KEYS": "executor", "OPENAI_API_KEY": "strategy"}


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


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_service_has_native_grpc_probes_and_a_headless_service(name: str) -> None:
    port, full_name = GRPC_SERVICES[name]
    deployment = find("Deployment", name)
    main = container(deployment)
    assert {item["containerPort"] for item in main["ports"]} >= {port}
    assert main["readinessProbe"]["grpc"] == {"port": port, "service": full_name}
    assert main["livenessProbe"]["grpc"]["port"] == port
    assert {"name": "GRPC_PORT", "value": str(port)} in main["env"]
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
