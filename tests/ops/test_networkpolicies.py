"""The NetworkPolicies in deploy/k8s, evaluated: which connections they allow.

A small evaluator of the NetworkPolicy semantics (networking.k8s.io/v1) runs
every policy in the namespace against a model of the cluster: the four
services' pods with the labels and ports of their Deployments, a stray pod in
the namespace, pods in other namespaces (ingress controller, Prometheus,
kube-dns, anything else), the node, MongoDB and addresses on the internet,
the private network and the cloud metadata endpoint. A connection is allowed
when the source's egress and the destination's ingress both allow it;
policies select pods of this namespace only, so others are not isolated.
``ipBlock`` is matched against pods' addresses too (pods get 10.244.0.0/16),
the conservative reading.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.support.processes import REPO_ROOT

MANIFESTS = REPO_ROOT / "deploy" / "k8s"
NAMESPACE = "tradebot"
APPS = ("gateway", "market", "strategy", "executor")
GRPC_PORTS = {"market": 50051, "strategy": 50052, "executor": 50053}
HEALTH_PORT = 50050
METRICS_PORT = 9100
HTTP_PORT = 8000
MONGO_PORT = 27017
# What the platform needs, and nothing more, between its own pods.
EXPECTED_LINKS = {
    ("gateway", "market", 50051),
    ("gateway", "strategy", 50052),
    ("gateway", "executor", 50053),
    ("executor", "market", 50051),
}
PRIVATE_ADDRESSES = ["169.254.169.254", "169.254.170.2", "10.0.0.1", "10.96.0.1", "172.16.0.1", "172.31.255.254",
                     "192.168.1.1", "100.64.0.1", "100.127.255.254", "127.0.0.1"]
PROBED_PORTS = [22, 53, 80, 443, 2379, 3306, 5432, 6443, 8000, 8080, 9100, 10250, 27017, 50050, 50051, 50052, 50053]
INTERNET = "203.0.113.7"   # stands in for Binance, OpenAI and webhook receivers


@functools.cache
def documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(MANIFESTS.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def policies() -> list[dict[str, Any]]:
    found = [doc for doc in documents() if doc["kind"] == "NetworkPolicy"]
    assert found, "no NetworkPolicy in deploy/k8s"
    return found


def namespace_labels() -> dict[str, str]:
    (namespace,) = [doc for doc in documents() if doc["kind"] == "Namespace"]
    return {"kubernetes.io/metadata.name": NAMESPACE, **namespace["metadata"].get("labels", {})}


@dataclass(frozen=True)
class Endpoint:
    name: str
    ip: str
    namespace: str | None = None          # None: not a pod (an address outside the cluster, the node)
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    namespace_labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    named_ports: dict[str, int] = field(default_factory=dict, hash=False, compare=False)


def other_pod(name: str, ip: str, namespace: str, **labels: str) -> Endpoint:
    return Endpoint(name, ip, namespace, labels, {"kubernetes.io/metadata.name": namespace})


def app_pods() -> dict[str, Endpoint]:
    pods = {}
    for index, name in enumerate(APPS):
        (deployment,) = [doc for doc in documents() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name]
        template = deployment["spec"]["template"]
        (main,) = template["spec"]["containers"]
        ports = {item["name"]: item["containerPort"] for item in main["ports"] if "name" in item}
        pods[name] = Endpoint(name, f"10.244.0.{10 + index}", NAMESPACE, template["metadata"]["labels"],
                              namespace_labels(), ports)
    return pods


def mongodb_address() -> str:
    """An address inside the MongoDB ipBlock the policies allow on 27017 (whatever it is edited to)."""
    blocks = [peer["ipBlock"]["cidr"] for policy in policies() for rule in policy["spec"].get("egress") or []
              if any(port.get("port") == MONGO_PORT for port in rule.get("ports") or [])
              for peer in rule.get("to") or [] if "ipBlock" in peer]
    assert len(blocks) == 1, f"expected one MongoDB ipBlock, found {blocks}"
    return str(next(ipaddress.ip_network(blocks[0]).hosts()))


PODS = app_pods()
STRAY = Endpoint("stray", "10.244.0.99", NAMESPACE, {"run": "debug"}, namespace_labels())
INGRESS_CONTROLLER = other_pod("ingress-nginx", "10.244.1.10", "ingress-nginx",
                               **{"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = other_pod("prometheus", "10.244.2.10", "monitoring", **{"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = other_pod("kube-dns", "10.244.3.10", "kube-system", **{"k8s-app": "kube-dns"})
ELSEWHERE = other_pod("elsewhere", "10.244.4.10", "default", app="something")
NODE = Endpoint("node", "10.0.0.10")
MONGODB = Endpoint("mongodb", mongodb_address())
PUBLIC = Endpoint("internet", INTERNET)
SOURCES = [*PODS.values(), STRAY, INGRESS_CONTROLLER, PROMETHEUS, KUBE_DNS, ELSEWHERE, NODE, PUBLIC]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        matched = {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                   "Exists": present, "DoesNotExist": not present}[operator]
        if not matched:
            return False
    return True


def peer_matches(peer: dict[str, Any], policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excluded) for excluded in block.get("except") or [])
    if endpoint.namespace is None:
        return False  # selectors name pods only
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], endpoint.namespace_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), endpoint.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        if "port" not in item:
            return True
        value = item["port"]
        if isinstance(value, str):
            if destination.named_ports.get(value) == port:
                return True
        elif value <= port <= item.get("endPort", value):
            return True
    return False


def policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def side_allows(pod: Endpoint, direction: str, peer: Endpoint, port: int, protocol: str,
                destination: Endpoint) -> bool:
    if pod.namespace != NAMESPACE:
        return True  # these policies isolate only this namespace's pods
    selecting = [policy for policy in policies() if direction in policy_types(policy)
                 and policy["metadata"]["namespace"] == NAMESPACE and selects(policy["spec"]["podSelector"], pod.labels)]
    if not selecting:
        return True
    peers_key = "to" if direction == "Egress" else "from"
    for policy in selecting:
        for rule in policy["spec"].get(direction.lower()) or []:
            peers = rule.get(peers_key)
            if peers and not any(peer_matches(item, NAMESPACE, peer) for item in peers):
                continue
            if port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def allowed(source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
    return (side_allows(source, "Egress", destination, port, protocol, destination)
            and side_allows(destination, "Ingress", source, port, protocol, destination))


# ---------------------------------------------------------------- the tests


def test_every_pod_is_denied_by_default() -> None:
    defaults = [policy for policy in policies() if policy["spec"]["podSelector"] == {}
                and set(policy_types(policy)) == {"Ingress", "Egress"}
                and not policy["spec"].get("ingress") and not policy["spec"].get("egress")]
    assert len(defaults) == 1
    assert all(policy["metadata"]["namespace"] == NAMESPACE for policy in policies())


def test_between_the_services_only_the_links_they_use_are_open() -> None:
    ports = sorted({*GRPC_PORTS.values(), HEALTH_PORT, METRICS_PORT, HTTP_PORT, MONGO_PORT, 80, 443})
    links = {(source, destination, port)
             for source, destination in itertools.permutations(APPS, 2) for port in ports
             if allowed(PODS[source], PODS[destination], port)}
    assert links == EXPECTED_LINKS


def test_only_the_gateway_reaches_the_executor() -> None:
    for source in SOURCES:
        expected = source is PODS["gateway"]
        assert allowed(source, PODS["executor"], GRPC_PORTS["executor"]) is expected, source.name


@pytest.mark.parametrize("service", ["market", "strategy"])
def test_market_and_strategy_cannot_reach_the_executor_or_mongodb(service: str) -> None:
    for port in PROBED_PORTS:
        assert not allowed(PODS[service], PODS["executor"], port), port
    # (443 to a public address is their Binance/OpenAI egress; MongoDB answers on 27017.)
    assert not allowed(PODS[service], MONGODB, MONGO_PORT)


def test_only_gateway_and_executor_reach_mongodb_and_only_on_its_port() -> None:
    # MongoDB is outside the namespace: the policies govern who here may call it.
    reach = {source.name for source in [*PODS.values(), STRAY] if allowed(source, MONGODB, MONGO_PORT)}
    assert reach == {"gateway", "executor"}
    for port in PROBED_PORTS:
        if port not in (MONGO_PORT, 80, 443):   # 80/443: the webhook and Binance egress to public addresses
            assert not allowed(PODS["gateway"], MONGODB, port) and not allowed(PODS["executor"], MONGODB, port)


@pytest.mark.parametrize("address", PRIVATE_ADDRESSES)
def test_nothing_reaches_the_metadata_endpoint_or_the_private_network(address: str) -> None:
    target = Endpoint(f"private {address}", address)
    for source, port, protocol in itertools.product([*PODS.values(), STRAY], PROBED_PORTS, ["TCP", "UDP"]):
        assert not allowed(source, target, port, protocol), f"{source.name} -> {address}:{port}/{protocol}"


def test_internet_egress_is_https_for_the_callers_of_binance_openai_and_webhooks() -> None:
    https = {name for name in APPS if allowed(PODS[name], PUBLIC, 443)}
    assert https == {"gateway", "market", "strategy", "executor"}
    plain_http = {name for name in APPS if allowed(PODS[name], PUBLIC, 80)}
    assert plain_http == {"gateway"}, "only webhooks may use plain HTTP"
    for port in (22, 53, 8080, 27017):
        assert not any(allowed(PODS[name], PUBLIC, port) for name in APPS), port
    assert not allowed(STRAY, PUBLIC, 443), "a pod without the services' labels gets no egress"


def test_every_pod_resolves_names_through_the_cluster_dns_only() -> None:
    for pod in [*PODS.values(), STRAY]:
        assert allowed(pod, KUBE_DNS, 53, "UDP") and allowed(pod, KUBE_DNS, 53, "TCP"), pod.name
        assert not allowed(pod, KUBE_DNS, 8080), pod.name
        assert not allowed(pod, PUBLIC, 53, "UDP"), pod.name
        assert not allowed(pod, ELSEWHERE, 53, "UDP"), pod.name


def test_the_ingress_controller_reaches_only_the_gateway_http_port() -> None:
    reachable = {(name, port) for name in APPS for port in PROBED_PORTS if allowed(INGRESS_CONTROLLER, PODS[name], port)}
    assert reachable - {(name, HEALTH_PORT) for name in GRPC_PORTS} == {("gateway", HTTP_PORT)}


def test_prometheus_scrapes_metrics_and_nothing_else() -> None:
    for name in APPS:
        assert allowed(PROMETHEUS, PODS[name], METRICS_PORT), name
        for port in PROBED_PORTS:
            if port not in (METRICS_PORT, HEALTH_PORT):
                assert not allowed(PROMETHEUS, PODS[name], port), (name, port)
    assert not allowed(ELSEWHERE, PODS["gateway"], METRICS_PORT), "only the monitoring namespace scrapes"


def test_the_kubelet_reaches_the_health_port_and_only_that() -> None:
    for name, port in GRPC_PORTS.items():
        assert allowed(NODE, PODS[name], HEALTH_PORT), name
        assert not allowed(NODE, PODS[name], port), name


def test_other_namespaces_reach_no_service_port() -> None:
    for source in (ELSEWHERE, KUBE_DNS, PUBLIC):
        for name in APPS:
            for port in PROBED_PORTS:
                if port != HEALTH_PORT:
                    assert not allowed(source, PODS[name], port), (source.name, name, port)


def test_policies_name_real_pods_and_ports() -> None:
    # A policy that selects nothing, or a port no container listens on, is a typo.
    for policy in policies():
        selector = policy["spec"]["podSelector"]
        assert selector == {} or any(selects(selector, pod.labels) for pod in PODS.values()), policy["metadata"]["name"]
    listening = {port for pod in PODS.values() for port in pod.named_ports.values()}
    for policy in policies():
        for rule in policy["spec"].get("ingress") or []:
            for item in rule.get("ports") or []:
                assert item["port"] in listening, (policy["metadata"]["name"], item)
