"""The dashboard's HTTP surface: pages, their JSON twins under ``/dashboard/api``, login, logout, halt, resume.

Every page and data endpoint needs a session (pages answer 401 with the login form, the API 401 JSON);
every POST that changes something needs the session's CSRF token and, when the browser sends one, an
``Origin`` of this very site. The session cookie is HttpOnly, SameSite=Strict, and Secure unless the
dashboard is reached on localhost.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.common.trading_control_actions import InvalidControlRequest, halt, resume
from services.gateway.dashboard import pages, reads
from services.gateway.dashboard.alerts import alertmanager_alerts, fleet_checks
from services.gateway.dashboard.sessions import LoginThrottle, Session, SessionStore, password_matches, tokens_match
from services.gateway.dashboard.settings import DashboardSettings
from services.gateway.request_body import read_body
from services.gateway.status_report import bots_by_status, trading_controls

log = logging.getLogger(__name__)

SESSION_COOKIE = "tb_session"
LOGIN_COOKIE = "tb_login"        # the login form's CSRF token (double submit): no session exists yet
MAX_FORM_BYTES = 16 * 1024
CALIBRATION_CACHE_SECONDS = 60.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chrome sends "Origin: null" on form posts, which the
    # same-origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Dashboard:
    """What the routes share: the database, the sessions, the throttle and a little cached calibration."""

    db: AsyncDatabase[dict[str, Any]]
    settings: DashboardSettings
    tick_deadline_seconds: float
    sessions: SessionStore
    throttle: LoginThrottle
    calibration_cache: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def build(cls, db: AsyncDatabase[dict[str, Any]], settings: DashboardSettings,
              tick_deadline_seconds: float) -> Dashboard:
        return cls(db, settings, tick_deadline_seconds,
                   SessionStore(db, settings.password, timedelta(hours=settings.session_hours)),
                   LoginThrottle(db, settings.login_attempts, timedelta(seconds=settings.login_window_seconds)))

    async def ensure_indexes(self) -> None:
        try:
            await self.sessions.ensure_indexes()
            await self.throttle.ensure_indexes()
            await reads.ensure_indexes(self.db)
        except Exception as error:   # a missing index costs speed, never correctness
            log.warning("could not create the dashboard's indexes", extra={"error": type(error).__name__})


def _dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _secure(request: Request) -> bool:
    return (request.url.hostname or "") not in LOCAL_HOSTS


def html(body: str, status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})})


def api(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code, headers=SECURITY_HEADERS)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=SECURITY_HEADERS)


async def _session(request: Request) -> Session | None:
    return await _dashboard(request).sessions.find(request.cookies.get(SESSION_COOKIE), datetime.now(UTC))


def _login_page(request: Request, status_code: int, message: str | None = None) -> HTMLResponse:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = html(pages.login(message, token, _dashboard(request).settings.password is not None), status_code)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, path="/dashboard", httponly=True, samesite="strict",
                        secure=_secure(request))
    return response


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form (first value of each field), or None when too large."""
    body = await read_body(request, MAX_FORM_BYTES)
    if body is None:
        return None
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None   # "null": a sandboxed or privacy-stripped context; refuse it
    return urlsplit(origin).netloc == request.headers.get("host", "")


Handler = Callable[[Request, Session], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page: the login form (401) without a session, a 503 page when MongoDB fails."""
    async def endpoint(request: Request) -> Response:
        try:
            session = await _session(request)
            if session is None:
                return _login_page(request, 200 if request.url.path == "/dashboard" else 401)
            return await handler(request, session)
        except PyMongoError as error:
            log.error("dashboard page failed: database unavailable", extra={"error": type(error).__name__})
            return html(pages.message("Database unavailable", "MongoDB did not answer; try again shortly.", None), 503)
    return endpoint


def data(reader: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """A data endpoint: 401 without a session, 404 when the reader finds nothing, 503 when MongoDB fails."""
    async def endpoint(request: Request) -> Response:
        try:
            if await _session(request) is None:
                return api({"success": False, "error": "Unauthorized"}, 401)
            result = await reader(request)
        except PyMongoError:
            return api({"success": False, "error": "Database unavailable"}, 503)
        return api({"success": False, "error": "Not found"}, 404) if result is None else api(result)
    return endpoint


def action(handler: Callable[[Request, Session, dict[str, str]], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A POST that changes something: session, same origin and the session's CSRF token, or refused."""
    async def endpoint(request: Request) -> Response:
        try:
            session = await _session(request)
            if session is None:
                return _login_page(request, 401, "Your session has ended: log in again.")
            form = await _form(request)
            if form is None:
                return html(pages.message("Refused", "The form is too large.", session.csrf), 413)
            if not _same_origin(request) or not tokens_match(form.get("csrf"), session.csrf):
                log.warning("dashboard action refused: CSRF check failed",
                            extra={"path": request.url.path, "client": _client(request)})
                return html(pages.message("Refused", "This form is not from your session (CSRF check failed).",
                                          session.csrf), 403)
            return await handler(request, session, form)
        except PyMongoError as error:
            log.error("dashboard action failed: database unavailable", extra={"error": type(error).__name__})
            return html(pages.message("Database unavailable", "MongoDB did not answer: nothing was changed or "
                                      "the change is incomplete; check the fleet view.", None), 503)
    return endpoint


# --- login and logout -------------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    dashboard = _dashboard(request)
    form = await _form(request)
    if form is None:
        return _login_page(request, 413, "The form is too large.")
    if not _same_origin(request) or not tokens_match(form.get("login_csrf"), request.cookies.get(LOGIN_COOKIE)):
        return _login_page(request, 403, "The login form expired: try again.")
    client, now = _client(request), datetime.now(UTC)
    try:
        wait = await dashboard.throttle.retry_after(client, now)
        if wait is not None:
            log.warning("dashboard login throttled", extra={"client": client, "retryAfter": wait})
            response = _login_page(request, 429, f"Too many failed logins: try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        if not password_matches(form.get("password", ""), dashboard.settings.password):
            await dashboard.throttle.failed(client, now)
            log.warning("dashboard login failed", extra={"client": client})
            return _login_page(request, 401, "Wrong password.")
        await dashboard.throttle.succeeded(client)
        session = await dashboard.sessions.open(client, now)
    except PyMongoError:
        return _login_page(request, 503, "The database is unavailable: try again shortly.")
    log.info("dashboard login", extra={"client": client})
    response = _redirect("/dashboard")
    response.set_cookie(SESSION_COOKIE, session.token, max_age=int(dashboard.settings.session_hours * 3600),
                        path="/dashboard", httponly=True, samesite="strict", secure=_secure(request))
    response.delete_cookie(LOGIN_COOKIE, path="/dashboard")
    return response


async def logout(request: Request, session: Session, form: dict[str, str]) -> Response:
    await _dashboard(request).sessions.close(session.token)
    log.info("dashboard logout", extra={"client": _client(request)})
    response = _redirect("/dashboard")
    response.delete_cookie(SESSION_COOKIE, path="/dashboard", httponly=True, samesite="strict", secure=_secure(request))
    return response


# --- reads ------------------------------------------------------------------------------------------------

async def fleet_data(request: Request) -> dict[str, Any]:
    dashboard, now = _dashboard(request), datetime.now(UTC)
    ticks = await reads.recent_ticks(dashboard.db)
    controls = await trading_controls(dashboard.db, now)
    alerts = fleet_checks(ticks, controls, now, tick_interval_seconds=dashboard.settings.tick_interval_seconds,
                          tick_deadline_seconds=dashboard.tick_deadline_seconds)
    alerts += await alertmanager_alerts(dashboard.settings.alertmanager_url)
    return {"generatedAt": reads.iso(now), "controls": controls, "alerts": alerts, "ticks": ticks,
            "botsByStatus": await bots_by_status(dashboard.db),
            "problems": await reads.recent_problems(dashboard.db, now)}


def _filters(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "").strip()[:64] for name in ("status", "strategy", "symbol", "user")}


def _page_at(request: Request) -> reads.PageAt:
    return reads.PageAt.parse(request.query_params.get("after"), request.query_params.get("before"))


async def bots_data(request: Request) -> dict[str, Any]:
    filters = _filters(request)
    query = reads.bot_filter(filters["status"], filters["strategy"], filters["symbol"], filters["user"])
    return await reads.bots_page(_dashboard(request).db, query, _page_at(request))


async def bot_data(request: Request) -> dict[str, Any] | None:
    bot_id = reads.object_id(request.path_params["bot_id"])
    return None if bot_id is None else await reads.bot_detail(_dashboard(request).db, bot_id)


async def accounts_data(request: Request) -> dict[str, Any]:
    return await reads.accounts_page(_dashboard(request).db, _page_at(request), datetime.now(UTC))


async def calibration_data(request: Request) -> dict[str, Any]:
    dashboard = _dashboard(request)
    cached = dashboard.calibration_cache
    if cached is not None and time.monotonic() - cached[0] < CALIBRATION_CACHE_SECONDS:
        return cached[1]
    result = await reads.calibration(dashboard.db)
    dashboard.calibration_cache = (time.monotonic(), result)
    return result


# --- pages ------------------------------------------------------------------------------------------------

async def fleet_page(request: Request, session: Session) -> Response:
    return html(pages.fleet(await fleet_data(request), session.csrf))


async def bots_page(request: Request, session: Session) -> Response:
    return html(pages.bots(await bots_data(request), _filters(request), session.csrf))


async def bot_page(request: Request, session: Session) -> Response:
    found = await bot_data(request)
    if found is None:
        return html(pages.message("No such bot", "No bot has this id.", session.csrf), 404)
    return html(pages.bot(found, session.csrf))


async def accounts_page(request: Request, session: Session) -> Response:
    return html(pages.accounts(await accounts_data(request), session.csrf))


async def calibration_page(request: Request, session: Session) -> Response:
    return html(pages.calibration(await calibration_data(request), session.csrf))


# --- halt and resume --------------------------------------------------------------------------------------

def _operator(request: Request) -> str:
    return f"dashboard ({_client(request)})"


async def _scope(db: AsyncDatabase[dict[str, Any]], form: dict[str, str]) -> ObjectId | None | str:
    """The halt's scope: None for the fleet, a user's id, or the reason the given user cannot be one."""
    text = form.get("user", "").strip()
    if not text:
        return None
    user = reads.object_id(text)
    if user is None:
        return f"{text!r} is not a user id (24 hex characters)"
    if await db.users.find_one({"_id": user}, {"_id": 1}) is None:
        return f"no user {user}"
    return user


async def halt_action(request: Request, session: Session, form: dict[str, str]) -> Response:
    db = _dashboard(request).db
    reason, flatten = form.get("reason", ""), form.get("flatten") == "yes"
    user = await _scope(db, form)
    if isinstance(user, str):
        return html(pages.message("Not halted", user, session.csrf), 400)
    if form.get("confirm") != "yes":   # the first click only asks
        scope = {**reads.OPEN_POSITION, "status": "ACTIVE", **({} if user is None else {"userId": user})}
        positions = await db.botinstances.count_documents(scope)
        return html(pages.confirm_halt(" ".join(reason.split()), flatten, positions, session.csrf, user))
    try:
        plan = await halt(db, user=user, reason=reason, by=_operator(request), flatten=flatten, now=datetime.now(UTC))
    except InvalidControlRequest as error:
        return html(pages.message("Not halted", str(error), session.csrf), 400)
    log.warning("trading halted from the dashboard", extra={"reason": plan.document["reason"], "flatten": plan.flatten,
                                                            "scope": plan.document["scope"], "client": _client(request)})
    return _redirect("/dashboard")


async def resume_action(request: Request, session: Session, form: dict[str, str]) -> Response:
    db = _dashboard(request).db
    user = await _scope(db, form)
    if isinstance(user, str):
        return html(pages.message("Not resumed", user, session.csrf), 400)
    if form.get("confirm") != "yes":
        return html(pages.confirm_resume(await trading_controls(db, datetime.now(UTC)), session.csrf, user))
    lifted = await resume(db, user=user, by=_operator(request), now=datetime.now(UTC))
    log.warning("trading resumed from the dashboard", extra={"lifted": [item.what for item in lifted],
                                                             "client": _client(request)})
    return _redirect("/dashboard")


def routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", page(fleet_page), methods=["GET"]),
        Route("/dashboard/bots", page(bots_page), methods=["GET"]),
        Route("/dashboard/bots/{bot_id}", page(bot_page), methods=["GET"]),
        Route("/dashboard/accounts", page(accounts_page), methods=["GET"]),
        Route("/dashboard/calibration", page(calibration_page), methods=["GET"]),
        Route("/dashboard/api/fleet", data(fleet_data), methods=["GET"]),
        Route("/dashboard/api/bots", data(bots_data), methods=["GET"]),
        Route("/dashboard/api/bots/{bot_id}", data(bot_data), methods=["GET"]),
        Route("/dashboard/api/accounts", data(accounts_data), methods=["GET"]),
        Route("/dashboard/api/calibration", data(calibration_data), methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", action(logout), methods=["POST"]),
        Route("/dashboard/halt", action(halt_action), methods=["POST"]),
        Route("/dashboard/resume", action(resume_action), methods=["POST"]),
        Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
    ]
