"""Who may call what: the caller's identity is its client certificate's Common Name.

Mutual TLS proves that a caller holds a certificate from the platform's CA;
this says which of those identities may call each method. Only the gateway
drives trades, so only the gateway's certificate may call
``Executor/RunCycle``; the executor reads market data; an ``operator``
certificate explores with grpcurl but never trades. A method a service does
not list is refused (default deny). Health and reflection need only a
verified certificate.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

GATEWAY = "gateway"
EXECUTOR = "executor"
OPERATOR = "operator"

# Method name (without the service) -> identities allowed to call it.
CallerPolicy = Mapping[str, frozenset[str]]


def allow_all_methods(methods: tuple[str, ...], *identities: str) -> CallerPolicy:
    return {method: frozenset(identities) for method in methods}


def service_methods(descriptor_service_name: str) -> tuple[str, ...]:
    """The method names of a proto service, from the generated descriptors."""
    from google.protobuf import descriptor_pool

    service = descriptor_pool.Default().FindServiceByName(descriptor_service_name)
    return tuple(method.name for method in service.methods)


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The verified client certificate's Common Name, or None on a link without one."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
