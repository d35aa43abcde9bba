"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by selenium) on the
`make run` stack: log in, open every view, halt and resume, log out, and the refusals a stolen or forged
cookie and a missing CSRF token meet.

Screenshots go to $DASHBOARD_SCREENSHOTS (``make screenshots`` sets docs/screenshots, shown in the README),
else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from services.common.trading_controls import COLLECTION as CONTROLS, FLEET_HALT_ID
from services.devstack.processes import ChildProcess, free_port, python_module

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CLICK_ATTEMPTS = 3
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@dataclass
class Stack:
    url: str
    password: str
    cron_secret: str
    mongo_uri: str
    screenshots: Path

    def tick(self) -> dict:
        response = httpx.get(f"{self.url}/api/cron/run-bots", headers={"Authorization": f"Bearer {self.cron_secret}"},
                             timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def controls(self) -> dict | None:
        with MongoClient(self.mongo_uri) as client:
            return client["tradebots"][CONTROLS].find_one({"_id": FLEET_HALT_ID})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make run` (python -m services.devstack) on free ports and its own data directory."""
    data = tmp_path_factory.mktemp("devstack") / "dev"
    ports = {name: free_port() for name in ("market", "strategy", "executor", "gateway", "mongo")}
    env = {
        "DEVSTACK_DATA_DIR": str(data), "MARKET_ADDR": f"127.0.0.1:{ports['market']}",
        "STRATEGY_ADDR": f"127.0.0.1:{ports['strategy']}", "EXECUTOR_ADDR": f"127.0.0.1:{ports['executor']}",
        "GATEWAY_PORT": str(ports["gateway"]), "DEVSTACK_MONGO_PORT": str(ports["mongo"]),
        "CRON_LOCAL_INTERVAL": "3600", "MONGODB_URI": "", "CRON_SECRET": "", "CREDENTIALS_KEYS": "",
        "OPENAI_API_KEY": "", "DASHBOARD_PASSWORD": "", "STATUS_TOKEN": "",
    }
    devstack = ChildProcess("devstack", python_module("services.devstack"), env)
    try:
        banner = devstack.wait_for_line(r"log in with the password in (\S+)\):", timeout=40)
        url = devstack.wait_for_line(r"^\s+(http://\S+)/dashboard$", timeout=5).group(1)
        devstack.wait_for_line(r"tick \S+ 200 in [\d.]+s: 4 bots", timeout=30)
        password_file = Path(banner.group(1))
        assert password_file == data / "dashboard_password" and (password_file.stat().st_mode & 0o077) == 0
        screenshots = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
        screenshots.mkdir(parents=True, exist_ok=True)
        started = Stack(url, password_file.read_text().strip(), (data / "cron_secret").read_text().strip(),
                        f"mongodb://127.0.0.1:{ports['mongo']}", screenshots)
        for _ in range(3):   # a few ticks for the charts
            started.tick()
        yield started
    finally:
        devstack.process.send_signal(signal.SIGINT)
        devstack.process.wait(30)
        devstack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromium-driver are required (make test installs them)")
    os.environ["SE_OFFLINE"] = "true"   # selenium must not try to download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No password manager: its save-password and leak-check flows act on the login page behind our back.
    options.add_experimental_option("prefs", {"credentials_enable_service": False,
                                              "profile.password_manager_enabled": False,
                                              "profile.password_manager_leak_detection": False})
    for argument in ("--disable-features=PasswordLeakDetection,PasswordManagerOnboarding",
                     "--disable-save-password-bubble", "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1360,1000", "--lang=en"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(driver: WebDriver, stack: Stack, name: str) -> None:
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1360, min(max(height + 40, 700), 2400))
    driver.save_screenshot(str(stack.screenshots / f"dashboard-{name}.png"))
    driver.set_window_size(1360, 1000)


def _out_of_sync(error: Exception) -> bool:
    """Chrome 156's driver now and then hands out nodes of a document its DOM agent has not caught up with
    ("Node with given id does not belong to the document") for a moment after a page loads."""
    return isinstance(error, StaleElementReferenceException) or "does not belong to the document" in str(error)


def _usable(use: Callable[[], object]) -> bool:
    """Whether a node answers in the driver's current document (False: stale, or not caught up yet)."""
    try:
        use()
    except WebDriverException as error:
        if _out_of_sync(error):
            return False
        raise
    return True


def loaded(driver: WebDriver) -> None:
    """The page has loaded and the driver's view of it is in step: a node found now can be used."""
    WebDriverWait(driver, 15, poll_frequency=0.1).until(
        lambda current: current.execute_script("return document.readyState") == "complete"
        and _usable(lambda: current.find_element(By.TAG_NAME, "body").is_displayed()))


def click_and_load(driver: WebDriver, by: str, value: str) -> None:
    """Click what ``(by, value)`` finds, a link or button that loads a page, and wait until the old page is gone
    and the new one has loaded and is in step (else finds see the old page, or nodes the driver cannot use)."""
    loaded(driver)
    for attempt in range(CLICK_ATTEMPTS):
        page = driver.find_element(By.TAG_NAME, "html")
        try:
            driver.find_element(by, value).click()
        except WebDriverException as error:
            if attempt == CLICK_ATTEMPTS - 1 or not _out_of_sync(error):
                raise
            loaded(driver)   # the click did not happen: find the node again once in step
            continue
        WebDriverWait(driver, 10, poll_frequency=0.1).until(lambda _: not _usable(page.is_enabled))
        loaded(driver)
        return


def log_in(driver: WebDriver, password: str) -> None:
    loaded(driver)
    field = driver.find_element(By.ID, "password")
    field.clear()
    field.send_keys(password)
    click_and_load(driver, By.ID, "login-button")


def test_login_form_refuses_a_wrong_password_and_opens_the_fleet_view(stack: Stack, browser: WebDriver):
    browser.get(f"{stack.url}/dashboard")
    assert browser.find_element(By.ID, "login-form").is_displayed()
    shoot(browser, stack, "login")
    log_in(browser, "not-the-password-0123456789")
    assert "Wrong password" in browser.find_element(By.ID, "login-error").text
    log_in(browser, stack.password)
    assert browser.find_element(By.ID, "fleet").is_displayed()
    assert "ACTIVE 4" in browser.find_element(By.ID, "bot-counts").text
    assert "TRADING" in browser.find_element(By.ID, "halt-state").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart:not(.empty)")) == 4
    cookie = browser.get_cookie("tb_session")
    assert cookie is not None and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False   # localhost; Secure everywhere else
    assert browser.execute_script("return document.cookie").find("tb_session") == -1, "scripts cannot read it"
    shoot(browser, stack, "fleet")


def test_every_view_opens_and_the_bots_table_filters(stack: Stack, browser: WebDriver):
    click_and_load(browser, By.LINK_TEXT, "Bots")
    rows = browser.find_elements(By.CSS_SELECTOR, "#bots-table tbody tr")
    assert len(rows) == 4
    Select(browser.find_element(By.ID, "filter-strategy")).select_by_value("2")
    click_and_load(browser, By.ID, "filter-button")
    rows = browser.find_elements(By.CSS_SELECTOR, "#bots-table tbody tr")
    assert len(rows) == 1 and "Safe Trader" in rows[0].text
    shoot(browser, stack, "bots")
    Select(browser.find_element(By.ID, "filter-strategy")).select_by_value("1")
    click_and_load(browser, By.ID, "filter-button")
    click_and_load(browser, By.LINK_TEXT, "Bitcoin Pro")
    page = browser.find_element(By.ID, "bot-page")
    assert "Bitcoin Pro" in page.find_element(By.TAG_NAME, "h2").text
    assert browser.find_elements(By.CSS_SELECTOR, "#bot-page svg.chart polyline"), "the price chart is drawn"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#signals tbody tr")) >= 4
    shoot(browser, stack, "bot")
    click_and_load(browser, By.LINK_TEXT, "Accounts")
    positions = browser.find_elements(By.CSS_SELECTOR, "#positions tbody tr")
    # The simulated prices are a function of the time of day: how many bots hold a position varies.
    with MongoClient(stack.mongo_uri) as client:
        held = client["tradebots"].botinstances.count_documents({"currentPosition.side": {"$in": ["LONG", "SHORT"]}})
    if held:
        assert len(positions) == held
        assert all("PROTECTED" in row.text and "paper" in row.text for row in positions)
    else:
        assert len(positions) == 1 and "No open position" in positions[0].text
    shoot(browser, stack, "accounts")
    click_and_load(browser, By.LINK_TEXT, "Calibration")
    assert browser.find_element(By.ID, "calibration").is_displayed()


def test_halt_and_resume_from_the_browser_stop_and_restore_entries(stack: Stack, browser: WebDriver):
    click_and_load(browser, By.LINK_TEXT, "Fleet")
    browser.find_element(By.ID, "halt-reason").send_keys("exchange incident drill")
    click_and_load(browser, By.ID, "halt-button")
    assert "exchange incident drill" in browser.find_element(By.ID, "confirm-reason").text
    assert stack.controls() is None, "the first click only asks"
    shoot(browser, stack, "halt-confirm")
    click_and_load(browser, By.ID, "confirm-halt")
    assert "HALTED" in browser.find_element(By.ID, "halt-state").text
    halt = stack.controls()
    assert halt is not None and halt["reason"] == "exchange incident drill" and halt["by"] == "dashboard (127.0.0.1)"
    results = stack.tick()["results"]
    flat = [result for result in results if not result["hasPosition"]]
    assert flat and all(result["status"] == "skipped" and "halted" in result["error"] for result in flat)
    browser.refresh()
    assert any(alert.text.startswith("TradingHalted") for alert in browser.find_elements(By.CSS_SELECTOR, "#alerts td"))
    shoot(browser, stack, "halted")
    click_and_load(browser, By.ID, "resume-button")
    click_and_load(browser, By.ID, "confirm-resume")
    assert "TRADING" in browser.find_element(By.ID, "halt-state").text
    assert stack.controls() is None
    assert all(result["status"] == "success" for result in stack.tick()["results"])


def test_after_logout_the_old_cookie_a_forged_one_and_a_form_without_csrf_are_refused(stack: Stack, browser: WebDriver):
    old = browser.get_cookie("tb_session")["value"]
    click_and_load(browser, By.ID, "logout")
    assert browser.find_element(By.ID, "login-form").is_displayed()
    assert browser.get_cookie("tb_session") is None
    for token in (old, "forged" + old[6:]):
        response = httpx.get(f"{stack.url}/dashboard/api/fleet", headers={"Cookie": f"tb_session={token}"})
        assert response.status_code == 401
        page = httpx.get(f"{stack.url}/dashboard/bots", headers={"Cookie": f"tb_session={token}"})
        assert page.status_code == 401 and 'id="login-form"' in page.text

    # A live session (logged in again) still cannot act without its CSRF token.
    log_in(browser, stack.password)
    assert browser.find_element(By.ID, "fleet").is_displayed()   # waits for the page the login leads to
    cookie = {"Cookie": f"tb_session={browser.get_cookie('tb_session')['value']}"}
    for form in ({"reason": "forged", "confirm": "yes"}, {"reason": "forged", "confirm": "yes", "csrf": "guess"}):
        refused = httpx.post(f"{stack.url}/dashboard/halt", data=form, headers=cookie)
        assert refused.status_code == 403
    assert stack.controls() is None
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.page_source).group(1)
    cross_site = httpx.post(f"{stack.url}/dashboard/halt", data={"reason": "x", "confirm": "yes", "csrf": csrf},
                            headers={**cookie, "Origin": "https://attacker.example"})
    assert cross_site.status_code == 403 and stack.controls() is None
