"""Channels to the other services: created once, reused, load-balanced.

A ``dns:///host:port`` target resolves every replica behind a name and
``round_robin`` spreads calls over them, so scaling a service out needs no
change here. Plain ``host:port`` targets get the ``dns:///`` prefix.
"""

from __future__ import annotations

import json

import grpc

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


def make_channel(
    address: str,
    *,
    root_certificates: bytes | None = None,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
) -> grpc.aio.Channel:
    options = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    target = normalise_target(address)
    if root_certificates is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_certificates, private_key=client_key, certificate_chain=client_cert
    )
    return grpc.aio.secure_channel(target, credentials, options=options)
