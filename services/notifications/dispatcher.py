"""Sending TradeLog events to users' webhooks without ever holding up a tick.

The gateway calls ``enqueue(entries)`` after the tick's results are written.
``enqueue`` only filters and puts entries on a bounded in-memory queue (it
never awaits), and drops with a warning when the queue is full: a slow or
dead receiver must not delay trading. Worker tasks look up the user's
webhooks in MongoDB and POST each event with bounded retries: exponential
back-off on 5xx, timeouts and connection errors; none on 4xx or 3xx (the
receiver refused the payload, sending it again will not change that).

Receivers are untrusted, so each attempt is fenced in (see egress.py):
the host is resolved here and every address vetted before anything is sent,
the connection goes to the vetted address itself, redirects are never
followed, at most ``RESPONSE_BYTES_CAP`` raw bytes of the answer are read
(never decompressed), and one deadline bounds the whole attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from bson import ObjectId
from bson.decimal128 import Decimal128
from pymongo.asynchronous.database import AsyncDatabase

from services.common.jsonlog import register_secret
from services.common.metrics import WEBHOOK_DELIVERIES_TOTAL
from services.notifications.egress import (
    ALLOWED_SCHEMES,
    DEFAULT_PORTS,
    EgressRefused,
    IPNetwork,
    resolve_permitted,
)
from services.notifications.registry import COLLECTION, event_for, for_operators, subscribes
from services.notifications.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)

log = logging.getLogger(__name__)

# Only the status matters; the body is read (raw, undecoded) just far enough to end the exchange cleanly.
RESPONSE_BYTES_CAP = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4            # first try included
    initial_backoff: float = 0.5     # seconds before the 2nd attempt; doubles each time
    max_backoff: float = 8.0
    # Seconds for one whole attempt: DNS, connect, TLS, send, the answer's headers and (capped) body.
    request_timeout: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_backoff, self.initial_backoff * (2 ** (attempt - 1)))


def _json_default(value: Any) -> Any:
    if isinstance(value, ObjectId | Decimal | Decimal128):
        return str(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def build_payload(entry: Mapping[str, Any], event: str, delivery_id: str) -> bytes:
    """The exact bytes POSTed (and signed) for one event."""
    payload = {
        "id": delivery_id,
        "event": event,
        "tradeLogId": entry.get("_id"),
        "userId": entry.get("userId"),
        "botInstanceId": entry.get("botInstanceId"),
        "logType": entry.get("logType"),
        "severity": entry.get("severity"),
        "action": entry.get("action"),
        "message": entry.get("message"),
        "data": entry.get("data") or {},
        "createdAt": entry.get("createdAt") or datetime.now(UTC),
    }
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode("utf-8")


def _safe_target(url: str) -> str:
    """Where a delivery went, for logs: scheme, host and port only (paths and queries may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return "<malformed URL>"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class _Target:
    """A webhook URL split into what is sent where: the host it names and the port to connect to."""

    url: httpx.URL
    host: str        # ASCII (IDNA) form, no brackets: resolved, and the TLS server name
    port: int

    @classmethod
    def parse(cls, raw: str) -> _Target:
        try:
            url = httpx.URL(raw)
        except httpx.InvalidURL:
            raise EgressRefused("the URL cannot be parsed") from None
        if url.scheme not in ALLOWED_SCHEMES:
            raise EgressRefused(f"scheme {url.scheme!r} is not http or https")
        host = url.raw_host.decode("ascii")
        if not host:
            raise EgressRefused("the URL has no host")
        return cls(url, host, url.port or DEFAULT_PORTS[url.scheme])

    def pinned(self, address: str) -> httpx.URL:
        """The URL with its host replaced by a vetted address: httpx then connects there, with no lookup."""
        return self.url.copy_with(host=address)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")  # host[:port] as written, no credentials


@dataclass(frozen=True)
class _QueuedEvent:
    entry: Mapping[str, Any]
    event: str


class WebhookDispatcher:
    def __init__(
        self,
        db: AsyncDatabase,
        *,
        client: httpx.AsyncClient | None = None,
        queue_size: int = 1000,
        workers: int = 4,
        retry: RetryPolicy = RetryPolicy(),
        allowed_networks: Sequence[IPNetwork] = (),
    ) -> None:
        """``allowed_networks``: non-public networks that webhooks may reach all the same (operator's choice)."""
        self._webhooks = db[COLLECTION]
        self._owns_client = client is None
        # An explicit transport ignores HTTP(S)_PROXY: a proxy would do its own DNS lookup and connect,
        # bypassing the vetted address. No keep-alive: a TLS connection made for one host name must not
        # carry a request for another name that resolved to the same address.
        self._client = client or httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
        )
        self._allowed_networks = tuple(allowed_networks)
        self._queue: asyncio.Queue[_QueuedEvent] = asyncio.Queue(maxsize=queue_size)
        self._worker_count = workers
        self._retry = retry
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        """Start the worker tasks (``enqueue`` does it on first use inside a running loop)."""
        if not self._workers:
            self._workers = [
                asyncio.get_running_loop().create_task(self._work(), name=f"webhook-worker-{index}")
                for index in range(self._worker_count)
            ]

    def enqueue(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Queue the notifiable entries among ``entries``; returns how many were queued. Never waits."""
        if self._closed:
            return 0
        self.start()
        queued = 0
        for entry in entries:
            event = event_for(entry)
            if event is None:
                continue
            try:
                self._queue.put_nowait(_QueuedEvent(dict(entry), event))
                queued += 1
            except asyncio.QueueFull:
                WEBHOOK_DELIVERIES_TOTAL.labels(outcome="dropped").inc()
                log.warning(
                    "webhook queue full, event dropped",
                    extra={"event": event, "queueSize": self._queue.maxsize},
                )
        return queued

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued event is handled; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting events, give queued ones ``timeout`` seconds, then stop the workers."""
        self._closed = True
        if self._workers:
            await self.drain(timeout)
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        if self._owns_client:
            await self._client.aclose()

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                for webhook in await self._subscribers(item):
                    await self._deliver(webhook, item)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # one bad event must not kill the worker
                log.warning("webhook delivery crashed", extra={"event": item.event, "error": type(error).__name__})
            finally:
                self._queue.task_done()

    async def _subscribers(self, item: _QueuedEvent) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        user_id = item.entry.get("userId")
        if user_id is not None:
            # Registrations may hold the id as ObjectId or as its string.
            forms: list[Any] = [user_id, str(user_id)]
            if ObjectId.is_valid(str(user_id)):
                forms.append(ObjectId(str(user_id)))
            found += [webhook async for webhook in self._webhooks.find({"userId": {"$in": forms}, "isActive": True})]
        if for_operators(item.entry):   # halts, resumes and breaker trips also reach the operators
            found += [webhook async for webhook in self._webhooks.find({"operator": True, "isActive": True})]
        return [webhook for webhook in found if subscribes(webhook, item.entry, item.event)]

    async def _deliver(self, webhook: Mapping[str, Any], item: _QueuedEvent) -> None:
        secret = str(webhook["secret"])
        register_secret(secret)
        delivery_id = uuid.uuid4().hex  # the same across retries: receivers can de-duplicate on it
        body = build_payload(item.entry, item.event, delivery_id)
        context = {"webhookId": str(webhook.get("_id")), "target": _safe_target(str(webhook["url"])),
                   "event": item.event, "delivery": delivery_id}
        for attempt in range(1, self._retry.max_attempts + 1):
            timestamp = str(int(time.time()))  # re-signed per attempt so retries stay within tolerance
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "tradebot-webhooks/1",
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                TIMESTAMP_HEADER: timestamp,
                EVENT_HEADER: item.event,
                DELIVERY_HEADER: delivery_id,
            }
            try:
                async with asyncio.timeout(self._retry.request_timeout):
                    status = await self._attempt(str(webhook["url"]), body, headers)
            except EgressRefused as refusal:
                # Not retried: the same name would most likely resolve to the same place.
                WEBHOOK_DELIVERIES_TOTAL.labels(outcome="blocked").inc()
                log.warning("webhook target refused", extra={**context, "reason": str(refusal)})
                return
            except (TimeoutError, httpx.TimeoutException):  # TimeoutError first: it is an OSError too
                outcome = "timeout"
            except (httpx.TransportError, OSError) as error:  # OSError: the name did not resolve
                outcome = type(error).__name__
            else:
                outcome = f"HTTP {status}"
                if 200 <= status < 300:
                    WEBHOOK_DELIVERIES_TOTAL.labels(outcome="delivered").inc()
                    return
                if status < 500:  # 4xx, and 3xx: redirects are never followed
                    WEBHOOK_DELIVERIES_TOTAL.labels(outcome="rejected").inc()
                    log.warning("webhook rejected the event", extra={**context, "status": status})
                    return
            if attempt < self._retry.max_attempts:
                await asyncio.sleep(self._retry.backoff(attempt))
        WEBHOOK_DELIVERIES_TOTAL.labels(outcome="failed").inc()
        log.warning("webhook delivery failed after retries",
                    extra={**context, "attempts": self._retry.max_attempts, "lastOutcome": outcome})

    async def _attempt(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """One POST to ``url`` through a vetted address; returns the answer's status code.

        Raises EgressRefused for a target that must not be reached. The caller bounds the time.
        """
        target = _Target.parse(url)
        addresses = await resolve_permitted(target.host, target.port, self._allowed_networks)
        failure: httpx.ConnectError | None = None
        for address in addresses:  # every one is vetted; the next is tried only if this one refuses the connection
            try:
                return await self._post(target, str(address), body, headers)
            except httpx.ConnectError as error:
                failure = error
        assert failure is not None  # resolve_permitted returns at least one address
        raise failure

    async def _post(self, target: _Target, address: str, body: bytes, headers: Mapping[str, str]) -> int:
        request_headers = {**headers, "Host": target.host_header, "Accept-Encoding": "identity"}
        async with self._client.stream(
            "POST",
            target.pinned(address),
            content=body,
            headers=request_headers,
            follow_redirects=False,  # even on a client passed in: a redirect would skip the address check
            timeout=self._retry.request_timeout,
            # TLS: SNI and certificate verification use the host name the user registered, not the address.
            extensions={"sni_hostname": target.host},
        ) as response:
            read = 0
            async for chunk in response.aiter_raw():  # raw: a compressed answer is never inflated
                read += len(chunk)
                if read >= RESPONSE_BYTES_CAP:
                    break
            return response.status_code
