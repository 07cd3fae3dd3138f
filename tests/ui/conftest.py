"""The web UI in a real headless browser: Debian's ``chromium`` driven by ``chromedriver`` through selenium,
against a real daemon (``dist/faasd.pyz up``) on 127.0.0.1. Nothing is downloaded at run time: selenium is
given both binaries, so its driver manager is never asked.

One daemon and one browser per module (starting each costs seconds on a loaded 2-core machine); each test
logs in itself (:meth:`Ui.login`), so it runs alone too. What the browser logs to its console is read
after every test (:class:`Console`): an error fails the test unless the test said it expects it.
Screenshots go to ``tests/ui/screenshots/`` (ignored by git; docs/ui-functions.png is a copy of one).
axe-core (``tests/ui/vendor/axe-core/``, MPL-2.0) is injected into a page to check its accessibility.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.daemon_fixtures import PASSWORD, Daemon, daemon_factory, faasd_cli  # noqa: F401 -- a fixture
from tests.helpers import must_run_everything, scaled, wait_for

HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE / "screenshots"
AXE = HERE / "vendor" / "axe-core" / "axe.min.js"
PAGE_LOAD_TIMEOUT_S = 30.0
WAIT_S = 20.0
"""Upper bound for anything the UI shows after an action (it polls every 2-3 s)."""
BLOCKING_IMPACTS = ("serious", "critical")
os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, should anything ask it, must not go online.


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "no chromium/chromedriver: apt-get install chromium chromium-driver (sh scripts/test does)"
    if must_run_everything():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    """A headless Chromium, 1280x900, console logging on; quit at the end of the module."""
    chromium, chromedriver = _binaries()
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # Chromium's own sandbox needs an unprivileged user; CI runs as root.
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=Translate,MediaRouter,OptimizationHints",
        "--password-store=basic",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = HERE / "screenshots" / "chromedriver.log"
    log.parent.mkdir(exist_ok=True)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver, log_output=str(log)))
    browser.set_page_load_timeout(scaled(PAGE_LOAD_TIMEOUT_S))
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def ui_daemon(pyz_python: str, faasd_pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon_factory(pyz_python, faasd_pyz, tmp_path_factory.mktemp("ui-daemon")) as start:
        yield start()


@dataclass
class Console:
    """The browser console's entries since the last read; errors fail the test unless expected."""

    driver: webdriver.Chrome
    expected: list[re.Pattern[str]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        """An error whose message matches ``pattern`` is what this test provokes on purpose."""
        self.expected.append(re.compile(pattern))

    def read(self) -> list[dict[str, Any]]:
        entries = self.driver.get_log("browser")
        self.seen.extend(entries)
        return entries

    def errors(self) -> list[str]:
        self.read()
        return [
            entry["message"]
            for entry in self.seen
            if entry["level"] == "SEVERE" and not any(p.search(entry["message"]) for p in self.expected)
        ]


@dataclass
class Ui:
    """The browser on one daemon's UI, with the steps every test uses."""

    driver: webdriver.Chrome
    daemon: Daemon
    console: Console

    def url(self, page: str = "") -> str:
        return f"{self.daemon.url}/ui/{page}"

    def open(self, page: str) -> None:
        """Open a page of the UI and wait until it has shown its data once (``body[data-loaded]``)."""
        self.driver.get(self.url(page))
        self.wait_loaded()

    def wait_loaded(self) -> None:
        wait_for(
            lambda: self.driver.execute_script("return document.body && document.body.dataset.loaded === 'true'"),
            WAIT_S,
            lambda: f"{self.driver.current_url} to load its data; error line: {self.error_line()!r}",
            interval=0.05,
        )

    def login(self) -> None:
        """Log in through the form unless this tab already holds the credentials."""
        self.driver.get(self.url())
        wait_for(
            lambda: (
                "login.html" in self.driver.current_url
                or self.driver.execute_script("return document.body.dataset.loaded === 'true'")
            ),
            WAIT_S,
            "the list, or the login page it sends to",
            interval=0.05,
        )
        if "login.html" not in self.driver.current_url:
            return
        self.login_here()
        wait_for(lambda: "login.html" not in self.driver.current_url, WAIT_S, "the login to go back")
        self.wait_loaded()

    def login_here(self) -> None:
        """Fill in and send the login form of the page open now."""
        wait_for(lambda: self.driver.find_elements(By.ID, "login-password"), WAIT_S, "the login form")
        self.fill("login-password", PASSWORD)
        self.find("#login button[type=submit]").click()

    def wait_url(self, part: str) -> None:
        wait_for(lambda: part in self.driver.current_url, WAIT_S, lambda: f"{part} in {self.driver.current_url}")

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def fill(self, element_id: str, text: str) -> None:
        element = self.driver.find_element(By.ID, element_id)
        element.clear()
        element.send_keys(text)

    def text(self, css: str) -> str:
        """The text of the element ``css`` now ("" when there is none yet)."""
        try:
            return str(self.find(css).get_attribute("textContent") or "")
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def wait_text(self, css: str, condition: Callable[[str], bool], what: str) -> str:
        """Wait until the text of ``css`` satisfies ``condition``; return it."""
        found: list[str] = []

        def check() -> bool:
            found[:] = [self.text(css)]
            return condition(found[0])

        wait_for(check, WAIT_S, lambda: f"{what}: {css} says {found[0] if found else ''!r}", interval=0.1)
        return found[0]

    def error_line(self) -> str:
        return self.text("#error")

    def screenshot(self, name: str, *, full: bool = True, mobile_width: int = 0) -> Path:
        """Save the page as ``tests/ui/screenshots/<name>.png`` (the whole page, not only the viewport); with
        ``mobile_width``, as a phone that wide shows it (the test has set that emulation)."""
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        size = self.driver.get_window_size()
        self.driver.execute_script("window.scrollTo(0, 0)")
        if mobile_width:
            height = min(int(self.driver.execute_script("return document.documentElement.scrollHeight")), 4000)
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", mobile(mobile_width, height))
            try:
                self.driver.save_screenshot(str(path))
            finally:
                self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", mobile(mobile_width))
            return path
        if full:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(max(int(height) + 120, size["height"]), 4000))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            if full:
                self.driver.set_window_size(size["width"], size["height"])
        return path

    def axe(self) -> list[str]:
        """axe-core's serious and critical violations on this page, one line each (none is the goal)."""
        if not self.driver.execute_script("return typeof window.axe === 'object'"):
            try:
                self.driver.execute_script(AXE.read_text(encoding="utf-8"))
            except JavascriptException as exc:
                raise AssertionError(f"axe-core did not load: {exc.msg}") from None
        self.driver.set_script_timeout(scaled(60))
        violations = self.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ["violations"]})
              .then((result) => done(result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
              }))))
              .catch((error) => done([{id: "axe-error", impact: "critical", help: String(error), targets: []}]));
            """
        )
        return [
            f"{v['id']} ({v['impact']}): {v['help']} at {v['targets']}"
            for v in violations
            if v["impact"] in BLOCKING_IMPACTS
        ]


def mobile(width: int, height: int = 740) -> dict[str, Any]:
    """Chromium's device emulation of a phone ``width`` CSS pixels wide (``Emulation.setDeviceMetricsOverride``)."""
    return {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True}


@pytest.fixture
def ui(driver: webdriver.Chrome, ui_daemon: Daemon) -> Iterator[Ui]:
    """The UI of the module's daemon; the test fails if the browser logged an error it did not expect."""
    console = Console(driver)
    console.read()  # What earlier tests left is theirs.
    yield Ui(driver, ui_daemon, console)
    errors = console.errors()
    assert errors == [], "the browser's console logged errors:\n" + "\n".join(errors)
