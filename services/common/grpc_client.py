"""Channels to the other services: created once, reused, load-balanced.

A ``dns:///host:port`` target resolves every replica behind a name and
``round_robin`` spreads calls over them, so scaling a service out needs no
change here. Plain ``host:port`` targets get the ``dns:///`` prefix.
"""

from __future__ import annotations

import json

import grpc

from services.common.errors import RETRY_AFTER_METADATA_KEY
from services.common.tls import ClientTls, client_tls_from_env, require_secure_targets

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        # Transparent retry of calls that never reached a server (connection
        # refused while a replica restarts); never of calls that may have run.
        "methodConfig": [
            {
                "name": [{}],
                "waitForReady": False,
            }
        ],
    }
)


def normalise_target(address: str) -> str:
    if "://" in address or address.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return address
    return f"dns:///{address}"


_FROM_ENV = object()


def make_channel(address: str, *, tls: ClientTls | None | object = _FROM_ENV) -> grpc.aio.Channel:
    """A channel to ``address``; TLS from ``tls`` or, by default, the GRPC_TLS_* environment.

    Raises SettingsError for a plaintext channel to another host unless GRPC_INSECURE=1."""
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        # gRPC's default reconnect backoff grows to 120 s: a service restarted by its
        # supervisor would sit unreachable for minutes. Cap it so the next tick finds it.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]
    target = normalise_target(address)
    client_tls = client_tls_from_env() if tls is _FROM_ENV else tls
    require_secure_targets([target], client_tls if isinstance(client_tls, ClientTls) else None)
    if client_tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    assert isinstance(client_tls, ClientTls)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=client_tls.root_certificates,
        private_key=client_tls.client_key,
        certificate_chain=client_tls.client_cert,
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


def retry_after(error: grpc.aio.AioRpcError) -> str | None:
    """The ``retry-after-seconds`` trailer a RESOURCE_EXHAUSTED answer carries (grpc_server sets it)."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA_KEY:
            return value if isinstance(value, str) else None
    return None
