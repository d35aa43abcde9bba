"""Webhook deliveries cannot reach inside the gateway's network, nor hold a worker or its memory.

Real local servers only. The ``connections`` fixture records every TCP connect this
process attempts and refuses any that would leave the machine, so even a
regression here never sends a packet to 10.0.0.1 or 169.254.169.254.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from services.common.metrics import WEBHOOK_DELIVERIES_TOTAL
from services.notifications.dispatcher import RetryPolicy, WebhookDispatcher
from services.notifications.egress import IPNetwork, parse_networks
from services.notifications.registry import new_webhook_document
from tests.notifications.certificates import issue_server_certificate
from tests.notifications.receiver import RawReceiver, Receiver, start_receiver
from tests.notifications.test_dispatcher import FAST_RETRY, trade_log

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")
ONE_SHOT = RetryPolicy(max_attempts=1, request_timeout=1.0)


def count(outcome: str) -> float:
    return WEBHOOK_DELIVERIES_TOTAL.labels(outcome=outcome)._value.get()


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """(host, port) of every TCP connect attempted; those outside loopback fail before leaving the machine."""
    attempts: list[tuple[str, int]] = []
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host, port = str(address[0]), int(address[1])
            attempts.append((host, port))
            if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
                raise ConnectionRefusedError(errno.ECONNREFUSED, f"test guard: no connection to {host}")
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts




async def store_hook(db: AsyncDatabase, user_id: ObjectId, url: str, receiver: Receiver | None = None) -> dict:
    """A registration holding ``url`` as is, as if stored before registration checked it (or by a name
    that pointed elsewhere then): only the delivery-time check stands between it and the network."""
    document = {**new_webhook_document(user_id, "https://hooks.example.com/placeholder"), "url": url}
    await db.webhooks.insert_one(document)
    if receiver is not None:
        receiver.secrets[urlsplit(url).path] = document["secret"]
    return document


async def deliver_one(
    db: AsyncDatabase, user_id: ObjectId, *, allowed: tuple[IPNetwork, ...] = (), retry: RetryPolicy = FAST_RETRY,
    client: httpx.AsyncClient | None = None, drain: float = 10.0,
) -> float:
    """Send one TRADE event to ``user_id``'s webhooks; the seconds until every delivery ended."""
    dispatcher = WebhookDispatcher(db, allowed_networks=allowed, retry=retry, client=client)
    started = time.perf_counter()
    try:
        dispatcher.enqueue([trade_log(user_id, ObjectId(), "TRADE", "INFO", "OPEN_LONG")])
        assert await dispatcher.drain(drain), "the delivery did not end in time"
        return time.perf_counter() - started
    finally:
        await dispatcher.close(timeout=0.1)


# --- nothing internal is reached ------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/hooks/direct?token=t0ps3cret",
        "http://localhost:{port}/hooks/by-name",          # a name that resolves to loopback
        "http://2130706433:{port}/hooks/decimal",          # 127.0.0.1 as one number
        "http://0x7f.0.0.1:{port}/hooks/hex",
        "http://0177.0.0.1:{port}/hooks/octal",
        "http://[::ffff:127.0.0.1]:{port}/hooks/mapped",   # IPv4-mapped IPv6
        "http://[::1]:{port}/hooks/ipv6-loopback",
        "http://169.254.169.254/latest/meta-data/",        # cloud metadata
        "http://10.0.0.1/hooks/private",
        "http://192.168.1.1:8080/hooks/private",
        "http://[fd00::1]/hooks/unique-local",
        "http://0.0.0.0:{port}/hooks/unspecified",
    ],
)
async def test_internal_targets_are_blocked_before_any_connection(
    db, receiver, connections, caplog, template: str
) -> None:
    user = ObjectId()
    url = template.format(port=receiver.port)
    await store_hook(db, user, url, receiver)
    blocked, failed, delivered = count("blocked"), count("failed"), count("delivered")

    with caplog.at_level("WARNING", logger="services.notifications"):
        await deliver_one(db, user)

    assert count("blocked") == blocked + 1
    assert (count("failed"), count("delivered")) == (failed, delivered)
    assert receiver.deliveries == []
    target = urlsplit(url)
    assert not [attempt for attempt in connections
                if attempt[1] == receiver.port or not ipaddress.ip_address(attempt[0]).is_loopback]
    refused = [record for record in caplog.records if record.getMessage() == "webhook target refused"]
    assert len(refused) == 1  # not retried
    assert refused[0].levelname == "WARNING"
    assert refused[0].target == (f"http://{target.netloc}" if target.port else f"http://{target.netloc}:80")
    logged = " ".join(str(record.__dict__) for record in caplog.records)
    assert target.path not in logged and "t0ps3cret" not in logged


async def test_the_allow_list_lets_a_local_receiver_through_by_name(db, receiver) -> None:
    user = ObjectId()
    await store_hook(db, user, f"http://localhost:{receiver.port}/hooks/local", receiver)
    delivered = count("delivered")

    await deliver_one(db, user, allowed=LOOPBACK)

    [delivery] = receiver.for_path("/hooks/local")
    assert delivery.signature_valid
    assert delivery.headers["host"] == f"localhost:{receiver.port}"  # connected to the address, named the host
    assert delivery.headers["accept-encoding"] == "identity"
    assert count("delivered") == delivered + 1


async def test_an_allow_list_for_other_networks_does_not_open_loopback(db, receiver) -> None:
    user = ObjectId()
    await store_hook(db, user, receiver.url("/hooks/elsewhere"), receiver)
    blocked = count("blocked")

    await deliver_one(db, user, allowed=parse_networks("10.20.0.0/16"))

    assert count("blocked") == blocked + 1 and receiver.deliveries == []


# --- redirects, big answers, slow answers ---------------------------------------------------------


@pytest.mark.parametrize("client_follows", [False, True], ids=["own-client", "client-that-follows-redirects"])
async def test_a_redirect_is_not_followed_and_counts_as_rejected(db, receiver, caplog, client_follows: bool) -> None:
    user = ObjectId()
    await store_hook(db, user, receiver.url("/hooks/moved"), receiver)
    receiver.redirects["/hooks/moved"] = receiver.url("/hooks/new-home")  # allowed, and listening
    rejected, delivered = count("rejected"), count("delivered")
    # A redirect would skip the address check, so not even a client passed in that follows them may.
    client = httpx.AsyncClient(follow_redirects=True) if client_follows else None

    try:
        with caplog.at_level("WARNING", logger="services.notifications"):
            await deliver_one(db, user, allowed=LOOPBACK, client=client)
    finally:
        if client is not None:
            await client.aclose()

    assert len(receiver.for_path("/hooks/moved")) == 1        # asked once, not retried
    assert receiver.for_path("/hooks/new-home") == []          # not followed
    assert (count("rejected"), count("delivered")) == (rejected + 1, delivered)
    [record] = [r for r in caplog.records if r.getMessage() == "webhook rejected the event"]
    assert record.status == 302


@functools.cache
def gzip_of_zeros(mebibytes: int) -> bytes:
    """A gzip stream that inflates to ``mebibytes`` MiB of zeros, built 1 MiB at a time (about 1 KiB per MiB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join([*(compressor.compress(chunk) for _ in range(mebibytes)), compressor.flush()])


async def test_a_gzip_bomb_answer_is_neither_read_whole_nor_inflated(db) -> None:
    bomb = gzip_of_zeros(256)
    assert len(bomb) < 1024 * 1024

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(bomb))
        for offset in range(0, len(bomb), 16 * 1024):
            writer.write(bomb[offset:offset + 16 * 1024])
            await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # until the client hangs up

    user = ObjectId()
    delivered = count("delivered")
    async with RawReceiver(answer) as bomber:
        await store_hook(db, user, bomber.url("/hooks/bomb"))
        tracemalloc.start()
        try:
            elapsed = await deliver_one(db, user, allowed=LOOPBACK)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await asyncio.wait_for(bomber.finished.wait(), 5)

    assert bomber.requests == 1
    assert count("delivered") == delivered + 1   # the status is all that counts
    assert elapsed < 2
    # Inflating it whole would take 256 MiB (twice that while joining); the capped raw read takes a few.
    assert peak < 16 * 1024 * 1024, f"peak traced memory {peak / 2**20:.0f} MiB"


async def test_a_trickling_receiver_is_cut_off_at_the_total_bound(db, caplog) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        await writer.drain()
        for _ in range(200):  # one byte every 0.3 s: each read is quick, the whole answer never ends
            if writer.is_closing():
                return
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.3)

    user = ObjectId()
    failed, delivered = count("failed"), count("delivered")
    async with RawReceiver(answer) as trickler:
        await store_hook(db, user, trickler.url("/hooks/slow"))
        with caplog.at_level("WARNING", logger="services.notifications"):
            elapsed = await deliver_one(db, user, allowed=LOOPBACK, retry=ONE_SHOT, drain=3)

    assert trickler.requests == 1
    assert 0.9 < elapsed < 1.5
    assert (count("failed"), count("delivered")) == (failed + 1, delivered)
    [record] = [r for r in caplog.records if r.getMessage() == "webhook delivery failed after retries"]
    assert record.lastOutcome == "timeout"


# --- https: the pinned address is verified as the registered host name ----------------------------


async def https_delivery(db: AsyncDatabase, tmp_path: Path, **names: tuple[str, ...]) -> Receiver:
    """One delivery to https://localhost:PORT/ whose server certificate carries ``names``."""
    certificate = issue_server_certificate(tmp_path, **names)
    receiver = Receiver()
    server, task = await start_receiver(
        receiver, ssl_certfile=str(certificate.certfile), ssl_keyfile=str(certificate.keyfile)
    )
    client = httpx.AsyncClient(verify=certificate.client_context())
    try:
        user = ObjectId()
        await store_hook(db, user, receiver.url("/hooks/tls", scheme="https", host="localhost"), receiver)
        await deliver_one(db, user, allowed=LOOPBACK, retry=ONE_SHOT, client=client)
    finally:
        await client.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
    return receiver


async def test_https_is_verified_against_the_registered_host_name(db, tmp_path) -> None:
    delivered = count("delivered")
    # The certificate names localhost only: verifying against the connected address would fail.
    receiver = await https_delivery(db, tmp_path, dns_names=("localhost",))
    [delivery] = receiver.for_path("/hooks/tls")
    assert delivery.signature_valid and delivery.headers["host"] == f"localhost:{receiver.port}"
    assert count("delivered") == delivered + 1


async def test_https_refuses_a_certificate_for_the_address_but_not_the_host_name(db, tmp_path) -> None:
    failed, delivered = count("failed"), count("delivered")
    # Valid for 127.0.0.1, where the connection goes, but not for "localhost", the name registered.
    receiver = await https_delivery(db, tmp_path, dns_names=("elsewhere.test",), ip_addresses=("127.0.0.1",))
    assert receiver.deliveries == []
    assert (count("failed"), count("delivered")) == (failed + 1, delivered)
