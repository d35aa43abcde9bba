"""The dashboard through the real Starlette app and MongoDB: login, sessions, CSRF, throttle, views, halt/resume."""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId

from services.common.settings import SettingsError
from services.common.trading_controls import COLLECTION as CONTROLS, FLEET_HALT_ID
from services.gateway.dashboard.settings import DashboardSettings
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import CRON_SECRET, Gateway, GatewayFactory
from tests.support.processes import free_port

PASSWORD = "dashboard-password-for-tests-0123"
DATA_ENDPOINTS = ("/dashboard/api/fleet", "/dashboard/api/bots", f"/dashboard/api/bots/{ObjectId()}",
                  "/dashboard/api/accounts", "/dashboard/api/calibration")
PAGES = ("/dashboard/bots", "/dashboard/accounts", "/dashboard/calibration", f"/dashboard/bots/{ObjectId()}")


@contextlib.asynccontextmanager
async def browser(gateway: Gateway, *, host: str = "localhost", client: str = "127.0.0.1",
                  scheme: str = "http") -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client on the gateway's app, as a browser on ``host`` from address ``client``."""
    transport = httpx.ASGITransport(app=gateway.http._transport.app, client=(client, 40000))  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://{host}") as http:
        yield http


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no {name} in the page"
    return found.group(1)


async def log_in(http: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await http.get("/dashboard")
    return await http.post("/dashboard/login", data={"login_csrf": field(form.text, "login_csrf"), "password": password})


async def logged_in_csrf(http: httpx.AsyncClient) -> str:
    response = await log_in(http)
    assert response.status_code == 303, response.text
    return field((await http.get("/dashboard")).text, "csrf")


@pytest.fixture
async def dashboard(gateway_factory: GatewayFactory) -> AsyncIterator[Gateway]:
    async with gateway_factory(dashboard=DashboardSettings(password=PASSWORD, login_attempts=3)) as started:
        yield started


async def test_without_a_session_the_dashboard_shows_the_login_form_and_every_data_endpoint_answers_401(dashboard):
    async with browser(dashboard) as http:
        home = await http.get("/dashboard")
        assert home.status_code == 200 and 'id="login-form"' in home.text and 'type="password"' in home.text
        assert "default-src 'none'" in home.headers["content-security-policy"]
        for path in DATA_ENDPOINTS:
            response = await http.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"success": False, "error": "Unauthorized"}
        for path in PAGES:
            response = await http.get(path)
            assert response.status_code == 401 and 'id="login-form"' in response.text, path
        # The cron secret is not the password.
        assert (await log_in(http, CRON_SECRET)).status_code == 401


async def test_login_sets_an_httponly_samesite_strict_cookie_secure_outside_localhost(dashboard):
    async with browser(dashboard) as http:
        wrong = await log_in(http, "not-the-password-at-all")
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        response = await log_in(http)
        assert response.status_code == 303 and response.headers["location"].endswith("/dashboard")
        cookie = response.headers["set-cookie"]
        assert "tb_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie
        assert (await http.get("/dashboard/api/fleet")).status_code == 200
    async with browser(dashboard, host="ops.example.com", scheme="https") as http:   # behind a TLS proxy
        public = await log_in(http)
        assert public.status_code == 303 and "Secure" in public.headers["set-cookie"]


async def test_a_login_form_not_from_this_browser_is_refused(dashboard):
    async with browser(dashboard) as http:
        await http.get("/dashboard")
        forged = await http.post("/dashboard/login", data={"login_csrf": "guessed", "password": PASSWORD})
        assert forged.status_code == 403 and "tb_session" not in forged.headers.get("set-cookie", "")


async def test_failed_logins_are_rate_limited_per_client_even_with_the_right_password_after(dashboard):
    async with browser(dashboard, client="203.0.113.7") as attacker:
        for _ in range(3):
            assert (await log_in(attacker, "wrong-guess-0123456789")).status_code == 401
        blocked = await log_in(attacker)
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert "tb_session" not in blocked.headers.get("set-cookie", "")
    async with browser(dashboard, client="198.51.100.9") as operator:   # another address still logs in
        assert (await log_in(operator)).status_code == 303


async def test_logout_ends_the_session_everywhere_and_a_forged_cookie_opens_nothing(dashboard):
    async with browser(dashboard) as http:
        csrf = await logged_in_csrf(http)
        old = http.cookies.get("tb_session")
        assert old
        out = await http.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert (await http.get("/dashboard/api/fleet")).status_code == 401
    for token in (old, "forged-" + "a" * 40, old[:-2] + "xx"):
        async with browser(dashboard) as stranger:
            cookie = {"Cookie": f"tb_session={token}"}
            assert (await stranger.get("/dashboard/api/bots", headers=cookie)).status_code == 401
            assert 'id="login-form"' in (await stranger.get("/dashboard/bots", headers=cookie)).text


async def test_a_new_password_ends_the_sessions_opened_with_the_old_one(gateway_factory: GatewayFactory):
    async with gateway_factory(dashboard=DashboardSettings(password=PASSWORD)) as first, browser(first) as http:
        await logged_in_csrf(http)
        cookie = {"Cookie": f"tb_session={http.cookies.get('tb_session')}"}
    async with gateway_factory(dashboard=DashboardSettings(password=PASSWORD)) as same, browser(same) as http:
        assert (await http.get("/dashboard/api/fleet", headers=cookie)).status_code == 200   # sessions outlive a restart
    async with gateway_factory(dashboard=DashboardSettings(password=PASSWORD + "-rotated")) as second, \
            browser(second) as http:
        assert (await http.get("/dashboard/api/fleet", headers=cookie)).status_code == 401


async def test_actions_without_the_sessions_csrf_token_or_from_another_origin_are_refused(dashboard):
    async with browser(dashboard) as http:
        csrf = await logged_in_csrf(http)
        attempts: list[tuple[dict[str, str], dict[str, str]]] = [
            ({"reason": "x", "confirm": "yes"}, {}),
            ({"reason": "x", "confirm": "yes", "csrf": "wrong"}, {}),
            ({"reason": "x", "confirm": "yes", "csrf": csrf}, {"Origin": "https://evil.example"}),
        ]
        for form, headers in attempts:
            response = await http.post("/dashboard/halt", data=form, headers=headers)
            assert response.status_code == 403 and "CSRF" in response.text
        assert dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID}) is None
        assert (await http.post("/dashboard/logout", data={})).status_code == 403   # logout too
        assert (await http.get("/dashboard/api/fleet")).status_code == 200


async def test_halt_asks_for_confirmation_then_halts_and_resume_lifts_it(dashboard):
    async with browser(dashboard) as http:
        csrf = await logged_in_csrf(http)
        asked = await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "exchange  incident"})
        assert asked.status_code == 200 and 'id="confirm-halt"' in asked.text
        assert dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID}) is None, "the first click only asks"
        done = await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "exchange incident", "confirm": "yes"})
        assert done.status_code == 303
        halt = dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID})
        assert halt["reason"] == "exchange incident" and halt["by"] == "dashboard (127.0.0.1)" and halt["flatten"] is False
        record = dashboard.db.tradelogs.find_one({"action": "TRADING_HALTED"})
        assert record["severity"] == "CRITICAL" and record["logType"] == "SAFETY"
        fleet = (await http.get("/dashboard/api/fleet")).json()
        assert fleet["controls"]["halted"] is True
        assert any(alert["name"] == "TradingHalted" for alert in fleet["alerts"])
        assert "HALTED" in (await http.get("/dashboard")).text

        empty = await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "   ", "confirm": "yes"})
        assert empty.status_code == 400
        asked = await http.post("/dashboard/resume", data={"csrf": csrf})
        assert 'id="confirm-resume"' in asked.text and "exchange incident" in asked.text
        assert dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID}) is not None
        assert (await http.post("/dashboard/resume", data={"csrf": csrf, "confirm": "yes"})).status_code == 303
        assert dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID}) is None
        assert dashboard.db.tradelogs.find_one({"action": "TRADING_RESUMED"}) is not None


async def test_views_show_ticks_bots_filters_and_one_bots_history(dashboard):
    first, second = dashboard.add_bots(1), dashboard.add_bots(1, symbol="ETHUSDT", botName="<script>alert(1)</script>")
    await dashboard.tick()
    async with browser(dashboard) as http:
        await logged_in_csrf(http)
        fleet = (await http.get("/dashboard/api/fleet")).json()
        tick = fleet["ticks"][-1]
        assert tick["summary"]["totalBots"] == 2 and tick["outcome"] == "ok"
        assert set(tick["aiCalls"]) == {"requested", "used", "fallbacks", "cached"}
        assert fleet["botsByStatus"] == {"ACTIVE": 2}

        listed = (await http.get("/dashboard/api/bots", params={"symbol": "ethusdt"})).json()
        assert listed["total"] == 1 and listed["bots"][0]["botInstanceId"] == str(second[0])
        assert (await http.get("/dashboard/api/bots", params={"user": "not-an-id"})).json()["total"] == 0
        assert (await http.get("/dashboard/api/bots", params={"status": "PAUSED"})).json()["total"] == 0
        page = (await http.get("/dashboard/bots")).text
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page

        detail = (await http.get(f"/dashboard/api/bots/{first[0]}")).json()
        assert detail["bot"]["botInstanceId"] == str(first[0])
        assert len(detail["signals"]) == 1 and detail["signals"][0]["action"] in ("BUY", "SELL", "HOLD")
        assert (await http.get(f"/dashboard/bots/{first[0]}")).status_code == 200
        assert (await http.get(f"/dashboard/api/bots/{ObjectId()}")).status_code == 404
        assert (await http.get("/dashboard/bots/not-an-id")).status_code == 404
        for path in ("/dashboard/accounts", "/dashboard/calibration", "/dashboard/static/dashboard.css"):
            assert (await http.get(path)).status_code == 200, path


@pytest.mark.parametrize(("env", "message"), [
    ({"DASHBOARD_PASSWORD": "short"}, "at least 16"),
    ({"DASHBOARD_PASSWORD": CRON_SECRET}, "must not be the cron secret"),
])
def test_a_weak_or_reused_dashboard_password_stops_the_gateway_at_start(env: dict[str, Any], message: str):
    with pytest.raises(SettingsError, match=message):
        GatewaySettings.from_env({"CRON_SECRET": CRON_SECRET, "MONGODB_URI": "mongodb://127.0.0.1:1", **env})


async def test_the_calibration_view_draws_the_reliability_diagram_from_the_stored_signals(dashboard):
    def close(confidence: float, pnl: str) -> dict[str, Any]:
        return {"botInstanceId": ObjectId(), "logType": "TRADE", "severity": "INFO", "action": "CLOSE_POSITION",
                "message": "closed", "createdAt": datetime.now(UTC),
                "data": {"entryPrice": "100", "quantity": "1", "realizedPnl": pnl,
                         "openingSignal": {"strategy": "Bitcoin Pro", "confidence": confidence, "aiVerdict": "BUY",
                                           "stopLoss": "98"}}}
    # 75 %: 15 wins of +4 (2 R) and 5 losses of -2 (-1 R) -> win rate 75 %, mean +1.25 R.
    dashboard.db.tradelogs.insert_many([close(75.0, "4") for _ in range(15)] + [close(76.0, "-2") for _ in range(5)])
    async with browser(dashboard) as http:
        await logged_in_csrf(http)
        data = (await http.get("/dashboard/api/calibration")).json()
        [report] = data["strategies"]
        [bucket] = report["buckets"]
        assert data["linkedTrades"] == 20 and report["strategy"] == "Bitcoin Pro"
        assert bucket["confidence"] == "70-80" and bucket["trades"] == 20 and bucket["winRate"] == 0.75
        assert bucket["meanR"] == pytest.approx(1.25)
        assert report["suggestedThreshold"] == 70
        page = (await http.get("/dashboard/calibration")).text
        assert page.count('class="reliability-point"') == 1 and "suggested threshold 70" in page


async def test_alertmanagers_active_alerts_join_the_dashboards_own(gateway_factory: GatewayFactory, tmp_path):
    """A real Alertmanager (Debian's prometheus-alertmanager): an alert posted to it shows in the fleet view."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "make test installs prometheus-alertmanager"
    port = free_port()
    (tmp_path / "am.yml").write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as alertmanager:
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    if (await alertmanager.get("/-/ready")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            posted = await alertmanager.post("/api/v2/alerts", json=[{
                "labels": {"alertname": "ExchangeBanned", "severity": "critical"},
                "annotations": {"summary": "Binance banned this IP (418)"}}])
            assert posted.status_code == 200
        settings = DashboardSettings(password=PASSWORD, alertmanager_url=url)
        async with gateway_factory(dashboard=settings) as gateway, browser(gateway) as http:
            await logged_in_csrf(http)
            alerts = (await http.get("/dashboard/api/fleet")).json()["alerts"]
            assert {"name": "ExchangeBanned", "severity": "critical", "summary": "Binance banned this IP (418)",
                    "source": "alertmanager"} in alerts
            process.terminate()
            process.wait(10)
            alerts = (await http.get("/dashboard/api/fleet")).json()["alerts"]
            assert any(alert["name"] == "AlertmanagerUnreachable" for alert in alerts)
    finally:
        process.kill()


async def test_with_mongodb_down_pages_answer_503_and_logins_fail_closed(mongo_db_name, fakes):
    from services.gateway.app import create_app
    from tests.gateway.conftest import gateway_settings

    settings = dataclasses.replace(
        gateway_settings(f"mongodb://127.0.0.1:{free_port()}", mongo_db_name, fakes),
        mongodb_timeout_ms=300, dashboard=DashboardSettings(password=PASSWORD))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.get("/dashboard")).status_code == 200   # the login form needs no database
            session = {"Cookie": "tb_session=" + "a" * 43}
            home = await http.get("/dashboard", headers=session)
            assert home.status_code == 503 and "Database unavailable" in home.text
            assert (await http.get("/dashboard/api/fleet", headers=session)).status_code == 503
            http.cookies.set("tb_login", "token")
            refused = await http.post("/dashboard/login", data={"login_csrf": "token", "password": PASSWORD})
            assert refused.status_code == 503 and "tb_session" not in refused.headers.get("set-cookie", "")


async def test_broken_documents_show_as_what_they_are_and_never_break_a_page(dashboard):
    """Documents the app or a person wrote badly: every view still answers, showing what can be shown."""
    broken = ObjectId()
    dashboard.db.botinstances.insert_many([
        {"_id": broken, "botName": 42, "status": "ACTIVE", "config": "not an object", "statistics": [1],
         "currentPosition": {"side": "LONG", "quantity": "lots", "entryPrice": float("nan"), "openTime": "yesterday"},
         "lastRunAt": "never", "botId": "two"},
        {"_id": ObjectId(), "status": "ACTIVE"},   # nearly empty
    ])
    dashboard.db.tradelogs.insert_many([
        {"botInstanceId": broken, "logType": "ANALYSIS", "createdAt": datetime.now(UTC), "data": {"price": "NaN"}},
        {"botInstanceId": broken, "logType": "ANALYSIS", "createdAt": datetime.now(UTC), "data": "junk"},
        {"botInstanceId": broken, "logType": "TRADE", "action": "CLOSE_POSITION", "createdAt": datetime.now(UTC),
         "data": {"realizedPnl": "x", "openingSignal": {"confidence": "high"}}},
        {"botInstanceId": broken, "logType": "ERROR", "severity": "ERROR", "createdAt": datetime.now(UTC)},
    ])
    async with browser(dashboard) as http:
        await logged_in_csrf(http)
        for path in ("/dashboard", "/dashboard/bots", f"/dashboard/bots/{broken}", "/dashboard/accounts",
                     "/dashboard/calibration"):
            response = await http.get(path)
            assert response.status_code == 200, path
            assert not re.search(r'[\s"=,]nan[\s",]', response.text.lower()), f"a NaN drawn on {path}"
        detail = (await http.get(f"/dashboard/api/bots/{broken}")).json()
        assert detail["bot"]["botName"] == "42" and detail["bot"]["strategy"] == "unknown"
        assert detail["signals"] == [] and detail["bot"]["position"]["entryPrice"] is None
        assert (await http.get("/dashboard/api/calibration")).json()["unlinkedTrades"] == 1


async def test_one_user_can_be_halted_and_resumed_without_touching_the_fleet(dashboard):
    user = ObjectId()
    dashboard.db.users.insert_one({"_id": user, "email": "trader@example.com"})
    async with browser(dashboard) as http:
        csrf = await logged_in_csrf(http)
        for bad in ("not-an-id", str(ObjectId())):
            refused = await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "x", "user": bad, "confirm": "yes"})
            assert refused.status_code == 400
        asked = await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "card dispute", "user": str(user)})
        assert f"Halt trading for user {user}?" in asked.text and f'name="user" value="{user}"' in asked.text
        await http.post("/dashboard/halt", data={"csrf": csrf, "reason": "card dispute", "user": str(user),
                                                 "confirm": "yes"})
        assert dashboard.db[CONTROLS].find_one({"_id": f"halt:user:{user}"})["reason"] == "card dispute"
        assert dashboard.db[CONTROLS].find_one({"_id": FLEET_HALT_ID}) is None
        fleet = (await http.get("/dashboard")).text
        assert f"User {user} HALTED" in fleet and "TRADING: new entries allowed" in fleet
        await http.post("/dashboard/resume", data={"csrf": csrf, "user": str(user), "confirm": "yes"})
        assert dashboard.db[CONTROLS].find_one({"_id": f"halt:user:{user}"}) is None
