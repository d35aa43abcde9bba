"""The whole system with mutual TLS on every gRPC link, as compose and Kubernetes run it: a tick
succeeds through it, and callers without the right certificate get nowhere."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography.fernet import Fernet
from pymongo import MongoClient
from tradebot.v1 import executor_pb2, executor_pb2_grpc, market_pb2, market_pb2_grpc

from services.devstack import certs
from services.devstack.processes import free_port
from services.devstack.seed import seed_demo
from services.devstack.stack import GRPC_SERVICES, Stack, StackConfig, StackPorts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_stack(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, str]]:
    tls_dir = tmp_path_factory.mktemp("certs")
    certs.generate(tls_dir)
    database = f"mtls_{uuid.uuid4().hex[:10]}"
    fernet_key = Fernet.generate_key().decode()
    with MongoClient(mongo_uri) as client:
        seed_demo(client[database], fernet_key)   # a paper user and the four preset bots
    config = StackConfig(
        mongodb_uri=mongo_uri, cron_secret="mtls-cron-" + secrets.token_urlsafe(32), credentials_keys=fernet_key,
        mongodb_db=database, ports=StackPorts.free(), tls_dir=tls_dir,
        health_ports={name: free_port() for name in GRPC_SERVICES},
        env={"gateway": {"TICK_USE_AI": "false", "TICK_DEADLINE_SECONDS": "60"}},
    )
    stack = Stack(config)
    try:
        stack.start()
        yield stack, tls_dir, database
    finally:
        stack.stop()
        with MongoClient(mongo_uri) as client:
            client.drop_database(database)


def _channel(address: str, tls_dir: Path, identity: str | None, ca: str = "ca") -> grpc.Channel:
    key = None if identity is None else (tls_dir / f"{identity}.key").read_bytes()
    chain = None if identity is None else (tls_dir / f"{identity}.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials((tls_dir / f"{ca}.crt").read_bytes(), key, chain)
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def test_a_tick_runs_every_bot_through_mutual_tls(tls_stack, mongo_uri: str):
    stack, _, database = tls_stack
    config = stack.config
    response = httpx.get(config.gateway_url + "/api/cron/run-bots",
                         headers={"Authorization": f"Bearer {config.cron_secret}"}, timeout=60)
    assert response.status_code == 200, response.text
    summary = response.json()["summary"]
    assert summary["totalBots"] == 4 and summary["successful"] == 4 and summary["failed"] == 0, response.json()
    with MongoClient(mongo_uri) as client:
        analyses = list(client[database].tradelogs.find({"logType": "ANALYSIS"}))
    # The executor read each price from the market service over its own mutual-TLS link.
    assert len(analyses) == 4 and all(float(log["data"]["price"]) > 0 for log in analyses)


def test_callers_without_the_right_certificate_are_refused(tls_stack):
    stack, tls_dir, _ = tls_stack
    executor, market = stack.config.address("executor"), stack.config.address("market")
    with grpc.insecure_channel(executor) as plaintext, pytest.raises(grpc.RpcError) as refused:
        executor_pb2_grpc.ExecutorStub(plaintext).RunCycle(executor_pb2.RunCycleRequest(tick_id="t"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # The gateway's name on a certificate from another CA does not pass the handshake.
    rogue = certs.make_authority(tls_dir, name="rogue-ca", file_name="rogue-ca")
    certs.issue(tls_dir, "gateway", rogue, server=False, file_name="rogue-gateway")
    with _channel(executor, tls_dir, "rogue-gateway") as channel, pytest.raises(grpc.RpcError) as wrong_ca:
        executor_pb2_grpc.ExecutorStub(channel).RunCycle(executor_pb2.RunCycleRequest(tick_id="t"), timeout=5)
    assert wrong_ca.value.code() == grpc.StatusCode.UNAVAILABLE
    # Valid certificates of other identities: the market service may not trade, the operator may look.
    for identity in ("market", "strategy", "operator"):
        with _channel(executor, tls_dir, identity) as channel, pytest.raises(grpc.RpcError) as denied:
            executor_pb2_grpc.ExecutorStub(channel).RunCycle(executor_pb2.RunCycleRequest(tick_id="t"), timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity
    with _channel(market, tls_dir, "operator") as channel:
        price = market_pb2_grpc.MarketDataStub(channel).GetPrice(market_pb2.GetPriceRequest(symbol="BTCUSDT"), timeout=5)
    assert float(price.price) > 0
