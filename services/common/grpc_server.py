"""Bootstrap shared by the three gRPC services.

``serve()`` builds a grpc.aio server with the service's servicers, the
standard health service (``grpc.health.v1``, per service name and overall)
and server reflection, so ``grpcurl HOST:PORT list`` works.
On SIGTERM/SIGINT it enters graceful shutdown: health turns NOT_SERVING so
load balancers stop routing, in-flight calls drain for ``grace`` seconds.

With mutual TLS every call of a service's own methods is checked against the
binding's caller policy (the client certificate's Common Name); plaintext is
only for loopback or an explicit ``GRPC_INSECURE=1`` (see tls.py). Probes
that cannot present a certificate (Kubernetes' gRPC probes, compose health
checks) use ``GRPC_HEALTH_PORT``: a second, plaintext port that serves
grpc.health.v1 and nothing else.

Every unary method goes through ``_wrap_unary``: the caller's tick and bot
ids from metadata land in the logging context, project errors become their
status code (with internal addresses taken out of the message), anything
unexpected becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.caller_policy import CallerPolicy, peer_identity
from services.common.errors import RETRY_AFTER_METADATA_KEY, ResourceExhausted, TradebotError
from services.common.jsonlog import bot_instance_id_var, tick_id_var
from services.common.public_errors import without_addresses
from services.common.settings import env_int
from services.common.tls import ServerTls, require_authenticated_server, server_tls_from_env

log = logging.getLogger(__name__)

TICK_ID_METADATA_KEY = "x-tick-id"
BOT_INSTANCE_ID_METADATA_KEY = "x-bot-instance-id"
# A status message travels in a trailer; HTTP/2 peers drop trailers over 16 KiB and the
# caller would see RESOURCE_EXHAUSTED "Stream removed" instead of the real status.
# Errors echo the bad value (a 100 kB symbol), so the message is cut to this length.
MAX_STATUS_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer and how to attach it: ``add(servicer, server)``, its full proto name, and which
    caller identities may call each of its methods once callers are authenticated."""

    full_name: str
    servicer: Any
    add: Callable[[Any, grpc.aio.Server], None]
    callers: CallerPolicy = field(default_factory=dict)


@dataclass(frozen=True)
class ServerOptions:
    """How a service is reached: TLS (None: plaintext) and the plaintext health-only port (None: none)."""

    tls: ServerTls | None = None
    health_port: int | None = None

    @classmethod
    def from_env(cls, host: str, env: Mapping[str, str] | None = None) -> ServerOptions:
        """Raises SettingsError when ``host`` is reachable from other hosts without mutual TLS."""
        tls = server_tls_from_env(env)
        require_authenticated_server(host, tls, env)
        health_port = env_int("GRPC_HEALTH_PORT", 0, minimum=0, maximum=65535, env=env)
        return cls(tls, health_port or None)


class _CallerCheck:
    """Full method name -> identities allowed; methods of the bound services not listed are refused."""

    def __init__(self, bindings: Sequence[ServiceBinding]) -> None:
        self._services = {binding.full_name for binding in bindings}
        self._allowed = {
            f"/{binding.full_name}/{method}": identities
            for binding in bindings
            for method, identities in binding.callers.items()
        }

    def refusal(self, method: str, context: grpc.aio.ServicerContext) -> str | None:
        service = method.lstrip("/").split("/", 1)[0]
        if service not in self._services:
            return None   # health, reflection: a verified certificate is enough
        identity = peer_identity(context)
        if identity is not None and identity in self._allowed.get(method, frozenset()):
            return None
        return f"caller {identity or 'without a certificate name'!r} may not call {method.lstrip('/')}"


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else None
    return None


def bounded_status_message(message: str) -> str:
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    return message[: MAX_STATUS_MESSAGE_CHARS - 15] + "... (truncated)"


def _wrap_unary(method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
                callers: _CallerCheck | None):
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        tick_token = tick_id_var.set(_metadata_value(context, TICK_ID_METADATA_KEY))
        bot_token = bot_instance_id_var.set(_metadata_value(context, BOT_INSTANCE_ID_METADATA_KEY))
        started = time.perf_counter()
        try:
            refusal = callers.refusal(method, context) if callers is not None else None
            if refusal is not None:
                log.warning("caller refused", extra={"method": method, "reason": refusal})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
            return await behavior(request, context)
        except TradebotError as error:
            if isinstance(error, ResourceExhausted):
                context.set_trailing_metadata(((RETRY_AFTER_METADATA_KEY, f"{error.retry_after:.3f}"),))
            log.info("rpc failed", extra={"method": method, "code": error.code.name, "reason": error.message})
            # The message leaves the process (lastError, TradeLogs, webhooks): no pod or host addresses.
            await context.abort(error.code, bounded_status_message(without_addresses(error.message)))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unexpected error in rpc", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}")
        finally:
            elapsed = time.perf_counter() - started
            for hook in _latency_hooks:
                hook(method, elapsed)
            tick_id_var.reset(tick_token)
            bot_instance_id_var.reset(bot_token)

    return handler


# Observers of every RPC's latency (the metrics module registers one).
_latency_hooks: list[Callable[[str, float], None]] = []


def add_latency_hook(hook: Callable[[str, float], None]) -> None:
    _latency_hooks.append(hook)


class _ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, callers: _CallerCheck | None) -> None:
        self._callers = callers

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler_call_details.method, handler.unary_unary, self._callers),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcService:
    """A started server; ``port`` is the bound port (useful with port 0 in tests), ``health_port``
    the plaintext health-only port when one was asked for."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, port: int,
                 health_server: grpc.aio.Server | None = None, health_port: int | None = None) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port
        self.health_server = health_server
        self.health_port = health_port

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def start_server(
    bindings: Sequence[ServiceBinding],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ServerTls | None = None,
    health_port: int | None = None,
) -> GrpcService:
    callers = _CallerCheck(bindings) if tls is not None and tls.authenticates_callers else None
    server = grpc.aio.server(
        interceptors=[_ErrorMappingInterceptor(callers)],
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
            # Clients re-resolve DNS only when a connection ends: closing
            # connections after a minute lets scaled-out replicas join the
            # round robin. The grace lets an in-flight call finish first.
            ("grpc.max_connection_age_ms", 60_000),
            ("grpc.max_connection_age_grace_ms", 300_000),
        ],
    )
    for binding in bindings:
        binding.add(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [binding.full_name for binding in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key, tls.cert_chain)],
            root_certificates=tls.client_ca,
            require_client_auth=tls.client_ca is not None,
        )
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    health_server, health_bound = None, None
    if health_port is not None:
        health_server, health_bound = await _start_health_server(health_servicer, host, health_port)
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcService(server, health_servicer, bound, health_server, health_bound)


async def _start_health_server(health_servicer: health.aio.HealthServicer, host: str,
                               port: int) -> tuple[grpc.aio.Server, int]:
    """grpc.health.v1 alone, in plaintext: what a probe may see without a certificate."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}")
    await server.start()
    return server, bound


async def serve(
    service_name: str,
    bindings: Sequence[ServiceBinding],
    *,
    host: str,
    port: int,
    options: ServerOptions,
    grace: float = 10.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight calls and stop.

    ``options`` comes from ``ServerOptions.from_env(host)``, read with the service's settings so a
    missing certificate stops start-up with the variable's name.
    """
    service = await start_server(bindings, host=host, port=port, tls=options.tls, health_port=options.health_port)
    if options.tls is None or not options.tls.authenticates_callers:
        log.warning("serving without caller authentication (loopback or GRPC_INSECURE=1)",
                    extra={"grpcService": service_name})
    log.info("serving", extra={"grpcService": service_name, "address": f"{host}:{service.port}",
                               "tls": options.tls is not None, "healthPort": service.health_port})
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await stop_requested.wait()
    log.info("shutting down", extra={"graceSeconds": grace})
    await service.stop(grace)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
