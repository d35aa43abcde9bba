"""The optional cert-manager variant (deploy/k8s/cert-manager/), checked for structure.

kubernetes-validate knows no cert-manager CRDs, so these tests read the YAML:
a self-signed Issuer bootstraps the CA, a CA Issuer signs one Certificate per
identity, and each Certificate matches what ``make certs`` issues and what the
Deployments mount.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml

from services.devstack import certs
from tests.support.processes import REPO_ROOT

FOLDER = REPO_ROOT / "deploy" / "k8s" / "cert-manager"
IDENTITIES = {*certs.SERVERS, *certs.CLIENTS}
# cert-manager.io/v1 Certificate fields: catch a misspelt one here, before the API server refuses it.
CERTIFICATE_FIELDS = {
    "secretName", "commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses", "otherNames", "duration",
    "renewBefore", "renewBeforePercentage", "isCA", "usages", "privateKey", "issuerRef", "secretTemplate",
    "subject", "literalSubject", "keystores", "revisionHistoryLimit", "additionalOutputFormats",
    "encodeUsagesInRequest", "nameConstraints",
}
PRIVATE_KEY_FIELDS = {"algorithm", "size", "encoding", "rotationPolicy"}
USAGES = {"signing", "digital signature", "content commitment", "key encipherment", "key agreement",
          "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
          "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel",
          "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}


def load() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((FOLDER / name).read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in load() if doc["kind"] == kind}


def identity_certificates() -> dict[str, dict[str, Any]]:
    return {doc["spec"]["commonName"]: doc for doc in of_kind("Certificate").values() if not doc["spec"].get("isCA")}


def test_kustomization_lists_every_file_and_stays_out_of_the_base() -> None:
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in FOLDER.glob("*.yaml")
                                                        if path.name != "kustomization.yaml")
    base = yaml.safe_load((FOLDER.parent / "kustomization.yaml").read_text())
    assert not any("cert-manager" in entry for entry in base["resources"]), "its CRDs may not be installed"


def test_every_document_is_cert_manager_v1_in_the_namespace() -> None:
    documents = load()
    assert {doc["kind"] for doc in documents} == {"Issuer", "Certificate"}
    for doc in documents:
        assert doc["apiVersion"] == "cert-manager.io/v1"
        assert doc["metadata"]["namespace"] == "tradebot"


def test_a_self_signed_issuer_bootstraps_the_ca_issuer() -> None:
    issuers = of_kind("Issuer")
    (self_signed,) = [name for name, doc in issuers.items() if "selfSigned" in doc["spec"]]
    (ca_issuer,) = [doc for doc in issuers.values() if "ca" in doc["spec"]]
    (ca,) = [doc for doc in of_kind("Certificate").values() if doc["spec"].get("isCA")]
    assert ca["spec"]["issuerRef"]["name"] == self_signed
    assert ca["spec"]["issuerRef"].get("kind", "Issuer") == "Issuer"
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]


def test_one_certificate_per_identity_signed_by_the_ca() -> None:
    found = identity_certificates()
    assert set(found) == IDENTITIES
    (ca_issuer,) = [name for name, doc in of_kind("Issuer").items() if "ca" in doc["spec"]]
    for name, certificate in found.items():
        spec = certificate["spec"]
        assert set(spec) <= CERTIFICATE_FIELDS, f"{name}: unknown fields {set(spec) - CERTIFICATE_FIELDS}"
        assert set(spec.get("privateKey", {})) <= PRIVATE_KEY_FIELDS
        assert spec["secretName"] == f"{name}-tls"
        assert spec["issuerRef"]["name"] == ca_issuer and spec["issuerRef"].get("kind", "Issuer") == "Issuer"
        assert set(spec["usages"]) <= USAGES
        assert "client auth" in spec["usages"], f"{name} calls other services"


@pytest.mark.parametrize("name", certs.SERVERS)
def test_server_certificates_carry_the_names_make_certs_issues(name: str) -> None:
    spec = identity_certificates()[name]["spec"]
    expected = certs.server_names(name)
    dns = [str(item.value) for item in expected if not isinstance(item.value, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    ips = [str(item.value) for item in expected if isinstance(item.value, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    assert spec["dnsNames"] == dns
    assert spec["ipAddresses"] == ips
    assert {"server auth", "client auth"} <= set(spec["usages"])


@pytest.mark.parametrize("name", certs.CLIENTS)
def test_client_certificates_cannot_serve(name: str) -> None:
    spec = identity_certificates()[name]["spec"]
    assert "server auth" not in spec["usages"]
    assert not spec.get("dnsNames") and not spec.get("ipAddresses")


def test_the_deployments_mount_the_secrets_cert_manager_writes() -> None:
    secrets = {doc["spec"]["secretName"] for doc in identity_certificates().values()}
    mounted = set()
    for path in (FOLDER.parent).glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment":
                mounted |= {volume["secret"]["secretName"] for volume in doc["spec"]["template"]["spec"]["volumes"]
                            if "secret" in volume}
    assert mounted == secrets - {"operator-tls"}
