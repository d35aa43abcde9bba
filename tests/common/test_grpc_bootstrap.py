"""The shared gRPC bootstrap: status mapping, health, reflection, TLS and mTLS."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.common.grpc_client import make_channel, normalise_target
from services.common.grpc_server import ServerOptions, ServiceBinding, start_server
from services.common.settings import SettingsError
from services.common.tls import (
    ClientTls,
    ServerTls,
    client_tls_from_env,
    require_secure_targets,
    server_tls_from_env,
)
from services.devstack import certs
from tests.support.grpcurl import grpcurl
from tradebot.v1 import market_pb2, market_pb2_grpc


class ScriptedMarket(market_pb2_grpc.MarketDataServicer):
    """Raises whatever the symbol names, so every mapping path can be driven."""

    async def GetPrice(self, request, context):
        if request.symbol == "INVALID":
            raise InvalidArgument("symbol INVALID is not traded")
        if request.symbol == "BUSY":
            raise ResourceExhausted("weight budget spent", retry_after=12.5)
        if request.symbol == "DOWN":
            raise Unavailable("exchange unreachable")
        if request.symbol == "BUG":
            raise RuntimeError("secret-ish internal detail")
        if request.symbol == "SLOW":
            await asyncio.sleep(0.5)
        return market_pb2.GetPriceResponse(symbol=request.symbol, price="1.5")


def binding() -> ServiceBinding:
    # With mutual TLS only the gateway's certificate may call GetPrice; the others are not listed (refused).
    return ServiceBinding("tradebot.v1.MarketData", ScriptedMarket(), market_pb2_grpc.add_MarketDataServicer_to_server,
                          {"GetPrice": frozenset({"gateway"})})


@pytest.fixture
async def plain_server():
    service = await start_server([binding()])
    yield service
    await service.stop(0)


async def call(port: int, symbol: str, tls: ClientTls | None = None):
    async with make_channel(f"localhost:{port}", tls=tls) as channel:
        stub = market_pb2_grpc.MarketDataStub(channel)
        return await stub.GetPrice(market_pb2.GetPriceRequest(symbol=symbol), timeout=5)


@pytest.mark.parametrize(
    ("symbol", "code", "text"),
    [
        ("INVALID", grpc.StatusCode.INVALID_ARGUMENT, "symbol INVALID is not traded"),
        ("BUSY", grpc.StatusCode.RESOURCE_EXHAUSTED, "weight budget spent"),
        ("DOWN", grpc.StatusCode.UNAVAILABLE, "exchange unreachable"),
        ("BUG", grpc.StatusCode.INTERNAL, "internal error in /tradebot.v1.MarketData/GetPrice"),
    ],
)
async def test_errors_map_to_status_codes_without_tracebacks(plain_server, symbol, code, text):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(plain_server.port, symbol, tls=None)
    assert caught.value.code() == code
    assert caught.value.details() == text
    assert "Traceback" not in caught.value.details()


async def test_resource_exhausted_carries_retry_after(plain_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(plain_server.port, "BUSY", tls=None)
    trailing = dict(caught.value.trailing_metadata() or ())
    assert float(trailing["retry-after-seconds"]) == pytest.approx(12.5)


async def test_health_serving_then_not_serving_during_drain():
    service = await start_server([binding()])
    async with make_channel(f"127.0.0.1:{service.port}", tls=None) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "tradebot.v1.MarketData"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        slow = asyncio.ensure_future(
            market_pb2_grpc.MarketDataStub(channel).GetPrice(market_pb2.GetPriceRequest(symbol="SLOW"), timeout=5)
        )
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(service.stop(grace=3))
        reply = await slow  # an in-flight call finishes during the drain
        assert reply.price == "1.5"
        await stopping
    assert (await service.health.Check(health_pb2.HealthCheckRequest(service=""), None)).status == (
        health_pb2.HealthCheckResponse.NOT_SERVING
    )


async def test_grpcurl_lists_services_through_reflection(plain_server):
    listed = await asyncio.to_thread(grpcurl, f"127.0.0.1:{plain_server.port}", "list")
    assert listed.returncode == 0, listed.stderr
    assert {"tradebot.v1.MarketData", "grpc.health.v1.Health"} <= set(listed.stdout.split())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = certs.make_authority(directory)
    other = certs.make_authority(directory, name="other-ca", file_name="other-ca")
    return {
        "ca": ca.files,
        "server": certs.issue(directory, "market", ca, server=True),
        "client": certs.issue(directory, "gateway", ca, server=False),
        "operator": certs.issue(directory, "operator", ca, server=False),
        # The gateway's name, signed by a CA the server does not trust.
        "rogue_client": certs.issue(directory, "gateway", other, server=False, file_name="rogue"),
    }


def client_tls(pki, name: str) -> ClientTls:
    return ClientTls(pki["ca"].cert.read_bytes(), pki[name].cert.read_bytes(), pki[name].key.read_bytes())


def server_env(pki, mutual: bool) -> dict[str, str]:
    env = {"GRPC_TLS_CERT": str(pki["server"].cert), "GRPC_TLS_KEY": str(pki["server"].key)}
    if mutual:
        env["GRPC_TLS_CLIENT_CA"] = str(pki["ca"].cert)
    return env


async def test_tls_link_accepts_trusted_clients_and_refuses_plaintext(pki):
    service = await start_server([binding()], tls=server_tls_from_env(server_env(pki, mutual=False)))
    try:
        client = client_tls_from_env({"GRPC_TLS_CA": str(pki["ca"].cert)})
        assert (await call(service.port, "BTCUSDT", tls=client)).price == "1.5"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(service.port, "BTCUSDT", tls=None)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await service.stop(0)


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki):
    service = await start_server([binding()], tls=server_tls_from_env(server_env(pki, mutual=True)))
    try:
        good = client_tls_from_env({
            "GRPC_TLS_CA": str(pki["ca"].cert),
            "GRPC_TLS_CLIENT_CERT": str(pki["client"].cert),
            "GRPC_TLS_CLIENT_KEY": str(pki["client"].key),
        })
        assert (await call(service.port, "BTCUSDT", tls=good)).price == "1.5"
        no_cert = ClientTls(root_certificates=pki["ca"].cert.read_bytes())
        rogue = ClientTls(pki["ca"].cert.read_bytes(), pki["rogue_client"].cert.read_bytes(),
                          pki["rogue_client"].key.read_bytes())
        for tls in (no_cert, rogue):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(service.port, "BTCUSDT", tls=tls)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await service.stop(0)


async def test_only_the_identities_a_method_lists_may_call_it(pki):
    service = await start_server([binding()], tls=server_tls_from_env(server_env(pki, mutual=True)))
    try:
        assert (await call(service.port, "BTCUSDT", tls=client_tls(pki, "client"))).price == "1.5"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(service.port, "BTCUSDT", tls=client_tls(pki, "operator"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'operator' may not call tradebot.v1.MarketData/GetPrice" in caught.value.details()
        # A method the service does not list is refused even to the gateway (default deny).
        async with make_channel(f"localhost:{service.port}", tls=client_tls(pki, "client")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as unlisted:
                await market_pb2_grpc.MarketDataStub(channel).GetStats(market_pb2.GetStatsRequest(), timeout=5)
            assert unlisted.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Health (and reflection) need only a certificate from the CA.
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await service.stop(0)


async def test_the_health_port_is_plaintext_health_and_nothing_else(pki):
    tls = server_tls_from_env(server_env(pki, mutual=True))
    service = await start_server([binding()], tls=tls, health_port=0)
    try:
        assert service.health_port and service.health_port != service.port
        async with make_channel(f"127.0.0.1:{service.health_port}", tls=None) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tradebot.v1.MarketData"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await market_pb2_grpc.MarketDataStub(channel).GetPrice(market_pb2.GetPriceRequest(symbol="X"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        listed = await asyncio.to_thread(grpcurl, f"127.0.0.1:{service.health_port}", "list")
        assert listed.returncode != 0   # no reflection there
    finally:
        await service.stop(0)
    async with make_channel(f"127.0.0.1:{service.health_port}", tls=None) as channel:   # stopped with the server
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_a_server_reachable_from_other_hosts_refuses_to_start_without_mutual_tls(pki):
    with pytest.raises(SettingsError, match="GRPC_HOST 0.0.0.0 is reachable from other hosts"):
        ServerOptions.from_env("0.0.0.0", {})
    with pytest.raises(SettingsError, match="set GRPC_TLS_CLIENT_CA"):
        ServerOptions.from_env("10.1.2.3", server_env(pki, mutual=False))   # TLS without client certificates
    assert ServerOptions.from_env("0.0.0.0", server_env(pki, mutual=True)).tls is not None
    assert ServerOptions.from_env("0.0.0.0", {"GRPC_INSECURE": "1"}).tls is None   # said explicitly
    assert ServerOptions.from_env("127.0.0.1", {}).tls is None and ServerOptions.from_env("::1", {}).tls is None
    assert ServerOptions.from_env("127.0.0.1", {"GRPC_HEALTH_PORT": "50050"}).health_port == 50050


def test_a_client_refuses_plaintext_to_another_host(pki):
    for target in ("dns:///market:50051", "10.0.0.5:50051", "ipv4:127.0.0.1:1,10.0.0.5:2"):
        with pytest.raises(SettingsError, match="is not on this host"):
            require_secure_targets([target], None, {})
        with pytest.raises(SettingsError):
            make_channel(target, tls=None)
    for target in ("127.0.0.1:50051", "localhost:50051", "dns:///localhost:1", "ipv6:[::1]:50051", "unix:/tmp/s"):
        require_secure_targets([target], None, {})
    require_secure_targets(["dns:///market:50051"], None, {"GRPC_INSECURE": "1"})
    require_secure_targets(["dns:///market:50051"], client_tls(pki, "client"), {})


def test_half_configured_tls_refuses_to_start(pki):
    with pytest.raises(SettingsError, match="GRPC_TLS_CERT and GRPC_TLS_KEY"):
        server_tls_from_env({"GRPC_TLS_CERT": str(pki["server"].cert)})
    with pytest.raises(SettingsError, match="need GRPC_TLS_CA"):
        client_tls_from_env({"GRPC_TLS_CLIENT_CERT": str(pki["client"].cert)})
    assert server_tls_from_env({}) is None and client_tls_from_env({}) is None
    assert isinstance(server_tls_from_env(server_env(pki, True)), ServerTls)


class CountingMarket(market_pb2_grpc.MarketDataServicer):
    """One replica: counts the calls it answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetPrice(self, request, context):
        self.calls += 1
        return market_pb2.GetPriceResponse(symbol=request.symbol, price="1.5")


async def test_one_channel_spreads_its_calls_over_every_replica_round_robin():
    # A plain host:port becomes a dns:/// target, whose resolver returns every replica's address;
    # two addresses given directly stand for that here (localhost resolves to one address only).
    assert normalise_target("market:50051") == "dns:///market:50051"
    replicas = [CountingMarket(), CountingMarket()]
    servers = [await start_server([ServiceBinding("tradebot.v1.MarketData", replica,
                                                  market_pb2_grpc.add_MarketDataServicer_to_server)])
               for replica in replicas]  # fmt: skip
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in servers)
        async with make_channel(target, tls=None) as channel:
            stub = market_pb2_grpc.MarketDataStub(channel)
            for _ in range(20):
                await stub.GetPrice(market_pb2.GetPriceRequest(symbol="BTCUSDT"), timeout=5, wait_for_ready=True)
    finally:
        for server in servers:
            await server.stop(0)
    # Every replica takes a share (pick_first would send all 20 to one; round_robin alternates
    # once both connections are up, the first calls may all land on the first one ready).
    assert sum(replica.calls for replica in replicas) == 20
    assert all(replica.calls >= 5 for replica in replicas), [replica.calls for replica in replicas]
