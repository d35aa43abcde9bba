"""Optional TLS for the gRPC links, for deployments across hosts.

Servers: ``GRPC_TLS_CERT`` + ``GRPC_TLS_KEY`` (PEM files) turn TLS on;
``GRPC_TLS_CLIENT_CA`` additionally requires clients to present a
certificate signed by that CA (mutual TLS).
Clients: ``GRPC_TLS_CA`` (the CA that signed the servers) turns TLS on;
``GRPC_TLS_CLIENT_CERT`` + ``GRPC_TLS_CLIENT_KEY`` present a client
certificate. Unset: plaintext, for one host or a private network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import SettingsError, env_optional


@dataclass(frozen=True)
class ServerTls:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # set: clients must present a certificate signed by it


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
