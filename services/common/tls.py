"""TLS for the gRPC links, and the rule that only loopback may go without it.

Servers: ``GRPC_TLS_CERT`` + ``GRPC_TLS_KEY`` (PEM files) turn TLS on;
``GRPC_TLS_CLIENT_CA`` additionally requires clients to present a
certificate signed by that CA (mutual TLS), whose Common Name is then the
caller's identity (see caller_policy.py).
Clients: ``GRPC_TLS_CA`` (the CA that signed the servers) turns TLS on;
``GRPC_TLS_CLIENT_CERT`` + ``GRPC_TLS_CLIENT_KEY`` present a client
certificate.

Anyone who can reach the executor's port could otherwise trade any user's
account, so a server bound outside loopback refuses to start without mutual
TLS, and a client refuses a plaintext link to a non-loopback target, unless
``GRPC_INSECURE=1`` says explicitly that the network is trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import SettingsError, env_bool, env_optional

INSECURE_VARIABLE = "GRPC_INSECURE"


@dataclass(frozen=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # set: clients must present a certificate signed by it

    @property
    def authenticates_callers(self) -> bool:
        return self.client_ca is not None


@dataclass(frozen=True)
class ClientTls:
    root_certificates: bytes
    client_cert: bytes | None = None
    client_key: bytes | None = None


def _read(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{name}: cannot read {path}: {error.strerror}") from None


def server_tls_from_env(env: Mapping[str, str] | None = None) -> ServerTls | None:
    cert = env_optional("GRPC_TLS_CERT", env=env)
    key = env_optional("GRPC_TLS_KEY", env=env)
    client_ca = env_optional("GRPC_TLS_CLIENT_CA", env=env)
    if not cert and not key:
        if client_ca:
            raise SettingsError("GRPC_TLS_CLIENT_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY")
        return None
    if not cert or not key:
        raise SettingsError("GRPC_TLS_CERT and GRPC_TLS_KEY must be set together")
    return ServerTls(
        _read("GRPC_TLS_CERT", cert),
        _read("GRPC_TLS_KEY", key),
        _read("GRPC_TLS_CLIENT_CA", client_ca) if client_ca else None,
    )


def client_tls_from_env(env: Mapping[str, str] | None = None) -> ClientTls | None:
    ca = env_optional("GRPC_TLS_CA", env=env)
    cert = env_optional("GRPC_TLS_CLIENT_CERT", env=env)
    key = env_optional("GRPC_TLS_CLIENT_KEY", env=env)
    if not ca:
        if cert or key:
            raise SettingsError("GRPC_TLS_CLIENT_CERT/GRPC_TLS_CLIENT_KEY need GRPC_TLS_CA")
        return None
    if bool(cert) != bool(key):
        raise SettingsError("GRPC_TLS_CLIENT_CERT and GRPC_TLS_CLIENT_KEY must be set together")
    return ClientTls(
        _read("GRPC_TLS_CA", ca),
        _read("GRPC_TLS_CLIENT_CERT", cert) if cert else None,
        _read("GRPC_TLS_CLIENT_KEY", key) if key else None,
    )


def is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def target_hosts(target: str) -> list[str] | None:
    """The hosts a gRPC target dials (``dns:///h:p``, ``h:p``, ``ipv4:a:p,b:p``); None for a unix socket."""
    if target.startswith(("unix:", "unix-abstract:")):
        return None
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        addresses = rest.split(",")
    else:
        addresses = [target.split("///", 1)[1] if "///" in target else target.split("://", 1)[-1]]
    hosts = []
    for address in addresses:
        if address.startswith("["):   # [::1]:50051
            hosts.append(address[1:].split("]", 1)[0])
        else:
            hosts.append(address.rsplit(":", 1)[0] if address.count(":") == 1 else address)
    return hosts


def is_loopback_target(target: str) -> bool:
    hosts = target_hosts(target)
    return hosts is None or all(is_loopback_host(host) for host in hosts)


def insecure_allowed(env: Mapping[str, str] | None = None) -> bool:
    return env_bool(INSECURE_VARIABLE, False, env=env)


def require_authenticated_server(host: str, tls: ServerTls | None, env: Mapping[str, str] | None = None) -> None:
    """A server reachable from other hosts authenticates its callers (mutual TLS) or is told not to."""
    if is_loopback_host(host) or (tls is not None and tls.authenticates_callers) or insecure_allowed(env):
        return
    missing = "GRPC_TLS_CLIENT_CA" if tls is not None else "GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CLIENT_CA"
    raise SettingsError(
        f"GRPC_HOST {host} is reachable from other hosts, so callers must be authenticated: set {missing} "
        f"(mutual TLS; `make certs` creates them), or set {INSECURE_VARIABLE}=1 to serve unauthenticated "
        "on a network you trust"
    )


def require_secure_targets(targets: Iterable[str], tls: ClientTls | None, env: Mapping[str, str] | None = None) -> None:
    """A client does not talk plaintext to another host unless told to."""
    if tls is not None or insecure_allowed(env):
        return
    remote = [target for target in targets if not is_loopback_target(target)]
    if remote:
        raise SettingsError(
            f"{', '.join(remote)} is not on this host: set GRPC_TLS_CA (with GRPC_TLS_CLIENT_CERT and "
            f"GRPC_TLS_CLIENT_KEY for mutual TLS; `make certs` creates them), or set {INSECURE_VARIABLE}=1 "
            "to talk plaintext on a network you trust"
        )
