"""The shared gRPC bootstrap: status mapping, health, reflection, TLS and mTLS."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.common.grpc_client import make_channel, normalise_target
from services.common.grpc_server import ServiceBinding, start_server
from services.common.tls import ClientTls, ServerTls, client_tls_from_env, server_tls_from_env
from services.common.settings import SettingsError
from tests.common.certs import issue, make_ca
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
    return ServiceBinding("tradebot.v1.MarketData", ScriptedMarket(), market_pb2_grpc.add_MarketDataServicer_to_server)


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
    ca, ca_cert, ca_key = make_ca(directory)
    other_ca, other_cert, other_key = make_ca(directory, "other-ca")
    return {
        "ca": ca,
        "server": issue(directory, "server", ca_cert, ca_key, server=True),
        "client": issue(directory, "client", ca_cert, ca_key, server=False),
        "rogue_client": issue(directory, "rogue", other_cert, other_key, server=False),
    }


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
