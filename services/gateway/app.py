"""HTTP surface of the gateway: the cron endpoint, the monitoring report, the health check and the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.common import metrics
from services.common.mongo_metrics import COMMAND_LISTENER
from services.gateway.auth import BearerAuthenticator, CronAuthenticator
from services.gateway.clients import ServiceClients
from services.gateway.dashboard.routes import Dashboard, routes as dashboard_routes
from services.gateway.observability import TickObserver, TickReport, record_tick_metrics
from services.gateway.replays import DeliveryReplayStore
from services.gateway.request_body import declared_body_size, read_body
from services.gateway.repository import BotRepository, DatabaseUnavailable
from services.gateway.results import iso_utc, response_body, summarize
from services.gateway.settings import GatewaySettings
from services.gateway.status_report import build_status_report
from services.gateway.tick import TickConfig, TickRunner
from services.notifications.dispatcher import WebhookDispatcher

log = logging.getLogger(__name__)

RUN_BOTS_PATH = "/api/cron/run-bots"
STATUS_PATH = "/api/status"
WEBHOOK_CLOSE_SECONDS = 5.0  # at shutdown, queued webhook events get this long to go out
MAX_BODY_BYTES = 64 * 1024  # the cron sends no body; Upstash may send a small one
RETRY_AFTER_SECONDS = "30"
LATE_WRITE_GRACE_SECONDS = 5.0   # at shutdown, a tick's results write cut off by its deadline may finish
UNAUTHORIZED = {"success": False, "error": "Unauthorized"}


def too_large() -> JSONResponse:
    return JSONResponse({"success": False, "error": "Request body too large"}, status_code=413)


def create_app(
    settings: GatewaySettings,
    *,
    repository: BotRepository | None = None,
    clients: ServiceClients | None = None,
) -> Starlette:
    """The ASGI app. Tests may hand in their own repository/clients; otherwise they are built at start-up."""
    authenticator = CronAuthenticator(settings)
    status_reader = BearerAuthenticator(settings.status_token) if settings.status_token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # gRPC aio channels belong to the running event loop: build them here, once.
        repo = repository or BotRepository.connect(
            settings.mongodb_uri, settings.mongodb_db, timeout_ms=settings.mongodb_timeout_ms
        )
        stubs = clients or ServiceClients.connect(settings.market_addr, settings.strategy_addr, settings.executor_addr)
        app.state.repository = repo
        app.state.clients = stubs
        app.state.runner = TickRunner(TickConfig.from_settings(settings), repo, stubs)
        # Monitoring has its own small client: its reads and writes never queue behind the tick's.
        monitoring: AsyncMongoClient = AsyncMongoClient(
            settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=settings.mongodb_timeout_ms, maxPoolSize=10,
            event_listeners=[COMMAND_LISTENER],
        )
        monitoring_db = monitoring[settings.mongodb_db]
        dispatcher = WebhookDispatcher(monitoring_db, allowed_networks=settings.webhook_allowed_networks)
        observer = TickObserver(monitoring_db, dispatcher, ip_weight=stubs.ip_weight)
        replays = DeliveryReplayStore(monitoring_db)
        app.state.monitoring_db = monitoring_db
        app.state.observer = observer
        app.state.replays = replays
        app.state.dashboard = dashboard = Dashboard.build(monitoring_db, settings.dashboard, settings.tick_deadline_seconds)
        # In the background: a database that is down at start-up must not hold up the start.
        indexing = asyncio.gather(observer.ensure_indexes(), replays.ensure_index(), dashboard.ensure_indexes())
        try:
            yield
        finally:
            indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):   # retrieved, so never logged as lost
                await indexing
            await app.state.runner.close(LATE_WRITE_GRACE_SECONDS)
            await dispatcher.close(WEBHOOK_CLOSE_SECONDS)
            await monitoring.close()
            if clients is None:
                await stubs.close()
            if repository is None:
                await repo.close()

    async def authenticate(request: Request) -> Response | None:
        """None when the caller may proceed, else the response to send (401, or 413 for a huge signed body)."""
        authorization = request.headers.get("authorization")
        signature = request.headers.get("upstash-signature")
        body = b""
        if authenticator.needs_body(authorization, signature):
            # A signed delivery covers the raw body: read it (bounded) to check the signature.
            read = await read_body(request, MAX_BODY_BYTES)
            if read is None:
                return too_large()
            body = read
        decision = authenticator.is_authorized(authorization, signature, body)
        if not decision.authorized:
            log.info("unauthorized call", extra={"reason": decision.reason, "path": request.url.path})
            return JSONResponse(UNAUTHORIZED, status_code=401)
        if declared_body_size(request, MAX_BODY_BYTES) > MAX_BODY_BYTES:
            return too_large()
        if decision.delivery is not None and decision.delivery_expires is not None:
            return await refuse_replay(request, decision.delivery, decision.delivery_expires)
        return None

    async def refuse_replay(request: Request, delivery: str, expires: datetime) -> Response | None:
        """A signed delivery runs one tick: a second use of its signature is refused (401)."""
        replays: DeliveryReplayStore = request.app.state.replays
        try:
            first = await replays.first_use(delivery, expires, datetime.now(UTC))
        except DatabaseUnavailable as error:
            log.error("delivery replay check failed: database unavailable", extra={"reason": str(error)})
            return JSONResponse({"success": False, "error": "Database unavailable"}, status_code=503,
                                headers={"Retry-After": RETRY_AFTER_SECONDS})
        if first:
            return None
        log.warning("replayed delivery refused", extra={"delivery": delivery, "path": request.url.path})
        return JSONResponse(UNAUTHORIZED, status_code=401)

    async def run_bots(request: Request) -> Response:
        """Every answer is counted by status code: a cron that gets 401s (a rotated secret) or 503s is an alert."""
        try:
            response = await _run_bots(request)
        except Exception:
            metrics.CRON_RESPONSES_TOTAL.labels(code="500").inc()
            raise
        metrics.CRON_RESPONSES_TOTAL.labels(code=str(response.status_code)).inc()
        return response

    async def _run_bots(request: Request) -> Response:
        if request.method not in ("GET", "POST"):  # Starlette adds HEAD to GET routes: a probe must not run a tick
            return PlainTextResponse("Method Not Allowed", status_code=405, headers={"Allow": "GET, POST"})
        # Authentication comes first: an unauthenticated caller costs no database work.
        refusal = await authenticate(request)
        if refusal is not None:
            return refusal
        runner: TickRunner = request.app.state.runner
        observer: TickObserver = request.app.state.observer
        tick_id = uuid.uuid4().hex
        started_at, started = datetime.now(UTC), time.monotonic()
        try:
            outcome = await runner.run(tick_id)
        except DatabaseUnavailable as error:
            log.error("tick could not start: database unavailable", extra={"tickId": tick_id, "reason": str(error)})
            report = TickReport.database_unavailable(tick_id, started_at, time.monotonic() - started)
            record_tick_metrics(report)
            return JSONResponse(
                {"success": False, "error": "Database unavailable", "timestamp": iso_utc(datetime.now(UTC))},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
                background=BackgroundTask(observer.after_tick, report),
            )
        report = TickReport.from_outcome(outcome, time.monotonic() - started)
        record_tick_metrics(report)
        # The tick record and webhooks go out after the response: they can never hold it up.
        after = BackgroundTask(observer.after_tick, report)
        if outcome.no_active_bots:
            log.info("tick finished: no active bots", extra={"tickId": outcome.tick_id})
            return JSONResponse(response_body(outcome.started_at, [], message="No active bots"), background=after)
        body = response_body(outcome.started_at, outcome.results, error=outcome.persist_error)
        log.info(
            "tick finished",
            extra={"tickId": outcome.tick_id, "summary": summarize(outcome.results), **_rounded(outcome.timings)},
        )
        return JSONResponse(body, background=after)

    async def status(request: Request) -> Response:
        # Its own token: the cron secret and Upstash signatures (held by a third party) run ticks, they
        # do not read every user's positions.
        if status_reader is None or not status_reader.is_authorized(request.headers.get("authorization")):
            reason = "no valid status token" if status_reader is not None else "STATUS_TOKEN is not set"
            log.info("unauthorized call", extra={"reason": reason, "path": request.url.path})
            return JSONResponse(UNAUTHORIZED, status_code=401)
        try:
            report = await build_status_report(request.app.state.monitoring_db)
        except PyMongoError as error:
            log.error("status report failed: database unavailable", extra={"error": type(error).__name__})
            return JSONResponse(
                {"success": False, "error": "Database unavailable"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        return JSONResponse(report)

    async def healthz(request: Request) -> JSONResponse:
        repo: BotRepository = request.app.state.repository
        stubs: ServiceClients = request.app.state.clients
        try:
            await repo.ping()
            database = "ok"
        except DatabaseUnavailable:
            database = "unavailable"
        services = await stubs.health(timeout=1.0)
        healthy = database == "ok"
        degraded = any(status != "SERVING" for status in services.values())
        return JSONResponse(
            {
                "status": "ok" if healthy and not degraded else ("degraded" if healthy else "unavailable"),
                "database": database,
                "services": services,
            },
            status_code=200 if healthy else 503,
        )

    return Starlette(
        routes=[
            Route(RUN_BOTS_PATH, run_bots, methods=["GET", "POST"]),
            Route(STATUS_PATH, status, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            *dashboard_routes(),
        ],
        lifespan=lifespan,
    )


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in timings.items()}
