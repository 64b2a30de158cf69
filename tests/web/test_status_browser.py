"""The status page in a real headless Chromium (Debian's chromium and chromedriver, driven by selenium).

One running app (the simulator's vendors, plus a vendor whose error bodies
are hostile HTML) serves the page; the browser checks what a user sees:
failing targets first, hostile text shown as text, a target that changes
state between two refreshes of the JSON shown without a reload, the filter,
no sideways scrolling at 420 px, nothing loaded from elsewhere. Screenshots
at 1400 and 420 px go to the test's tmp dir (the path is printed).
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from exporter import poller
from exporter.simulator import SIMULATOR_TOKEN, Fault, Simulator
from exporter.simulator.whatsapp_flows import QUIET_FLOW
from tests.conftest import FROZEN_NOW, k6_config
from tests.web.harness import HOSTILE, EchoVendor, LiveApp, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# As root in a container: no sandbox, no GPU; and no background traffic to
# Google's hosts, which this machine's closed network refuses.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--lang=en-US")
WAIT = 30.0  # seconds; generous for a loaded machine: the page refreshes every second


def browser_config(sim: Simulator, vendor: EchoVendor) -> str:
    return '[server]\nlisten = "127.0.0.1:0"\n' + k6_config(sim, [103054, 103055]).replace('"60s"', '"1h"') + f"""
    [[sources]]
    type = "whatsapp_flows"
    name = "wa"
    interval = "1h"
    base_url = "{sim.base_url('whatsapp')}"
    access_token = "{SIMULATOR_TOKEN}"
    flow_ids = ["1234567890123456", "{QUIET_FLOW}"]

    [[sources]]
    type = "k6_cloud"
    name = "hostile-vendor"
    interval = "1h"
    base_url = "{vendor.url}/hostile"
    token = "tok-Xq3Lm9Vb2Kp7Rt5W"
    test_run_ids = [7]
    http = {{ retries = 0 }}
    """


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApp, Simulator]]:
    with pytest.MonkeyPatch.context() as patch, Simulator("127.0.0.1:0", seed=7, freeze_time=FROZEN_NOW) as sim, \
            EchoVendor() as vendor:
        patch.setattr(poller, "FIRST_POLL_MAX_DELAY", 0.2)
        sim.inject(Fault(path="103055", kind="status", status=500, times=1_000_000))  # down all along
        config = tmp_path_factory.mktemp("browser") / "exporter.toml"
        config.write_text(browser_config(sim, vendor))
        app = LiveApp(config)
        try:
            wait_for(lambda: all(t["health"] != "pending" for t in app.targets()), "every first poll")
            yield app, sim
        finally:
            app.close()


def chrome(download_dir: Path) -> WebDriver:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (run `make test` as root to install Debian chromium and "
                        "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={download_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        browser = chrome(Path(profile))
        try:
            yield browser
        finally:
            browser.quit()


def viewport(driver: WebDriver, width: int, height: int = 900) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 800})


def open_page(driver: WebDriver, url: str, width: int = 1400) -> None:
    viewport(driver, width)
    driver.get(f"{url}/?refresh=1")
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr"))


def rows(driver: WebDriver) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')].map(r => ({source: r.dataset.source, "
        "target: r.dataset.target, health: r.dataset.health, tone: r.className, text: r.textContent}))")
    return found


def counts(driver: WebDriver) -> dict[str, str]:
    found: dict[str, str] = driver.execute_script(
        "const card = document.getElementById('card-targets'); const o = {title: card.querySelector('h2')"
        ".textContent}; for (const k of ['up', 'down', 'pending', 'warning']) o[k] = card.querySelector("
        "'.count-' + k).textContent; return o")
    return found


def refreshes(driver: WebDriver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0)"))


def screenshot(driver: WebDriver, path: Path, width: int) -> None:
    """The whole page at `width` px (the viewport stretched to the page's height)."""
    viewport(driver, width)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    viewport(driver, width, height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))
    viewport(driver, width)


def no_sideways_scroll(driver: WebDriver) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_script("""
        const root = document.documentElement;
        const wide = [...document.querySelectorAll('body *')]
          .filter(e => e.getBoundingClientRect().right > root.clientWidth + 0.5)
          .map(e => e.tagName + '.' + e.className);
        return {scroll: root.scrollWidth, client: root.clientWidth, inner: innerWidth, wide: wide};""")
    return found


def test_failing_first_and_hostile_text_stays_text(stack: tuple[LiveApp, Simulator], driver: WebDriver) -> None:
    app, _ = stack
    open_page(driver, app.url)
    shown = rows(driver)
    assert [(r["source"], r["health"]) for r in shown[:2]] == [("k6", "down"), ("hostile-vendor", "down")] or \
        [(r["source"], r["health"]) for r in shown[:2]] == [("hostile-vendor", "down"), ("k6", "down")]
    assert shown[2]["target"] == QUIET_FLOW and shown[2]["tone"] == "warning" and "insufficient_data" in \
        shown[2]["text"]
    assert {r["health"] for r in shown[3:]} == {"up"}
    hostile = next(r for r in shown if r["source"] == "hostile-vendor")
    assert HOSTILE in hostile["text"]  # shown as the vendor sent it, as text
    assert driver.execute_script("return window.pwned === undefined && document.images.length === 0 "
                                 "&& document.scripts.length === 2")
    assert counts(driver) == {"title": "5 targets", "up": "3 up", "down": "2 down", "pending": "0 pending",
                              "warning": "1 with warnings"}


def test_a_change_between_two_refreshes_appears_without_a_reload(stack: tuple[LiveApp, Simulator],
                                                                 driver: WebDriver) -> None:
    app, sim = stack
    open_page(driver, app.url)
    driver.execute_script("window.notReloaded = 42")
    before = refreshes(driver)
    sim.inject(Fault(path="103054", kind="status", status=503, times=10_000))
    try:
        assert not app.poll("103054")
        WebDriverWait(driver, WAIT).until(
            lambda d: any(r["target"] == "103054" and r["health"] == "down" for r in rows(d)))
    finally:
        sim.clear_faults()
        sim.inject(Fault(path="103055", kind="status", status=500, times=1_000_000))
    shown = rows(driver)
    assert [r["health"] for r in shown[:3]] == ["down"] * 3  # moved up with the failing ones
    changed = next(r for r in shown if r["target"] == "103054")
    assert "http_5xx" in changed["text"] and "HTTP 503" in changed["text"]
    assert counts(driver)["down"] == "3 down"
    assert driver.execute_script("return window.notReloaded") == 42
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
    assert refreshes(driver) > before

    assert app.poll("103054")  # and back
    WebDriverWait(driver, WAIT).until(
        lambda d: any(r["target"] == "103054" and r["health"] == "up" for r in rows(d)))
    assert driver.execute_script("return window.notReloaded") == 42


def test_the_filter_survives_refreshes_and_lives_in_the_address(stack: tuple[LiveApp, Simulator],
                                                                driver: WebDriver) -> None:
    app, _ = stack
    open_page(driver, app.url)
    box = driver.find_element(By.ID, "filter")
    box.send_keys("insufficient")
    assert [r["target"] for r in rows(driver)] == [QUIET_FLOW]
    assert "q=insufficient" in driver.current_url
    after = refreshes(driver)
    WebDriverWait(driver, WAIT).until(lambda d: refreshes(d) > after)
    assert [r["target"] for r in rows(driver)] == [QUIET_FLOW]  # still filtered after a refresh
    box.clear()
    box.send_keys("WA")  # case-insensitive, on every field
    assert {r["source"] for r in rows(driver)} == {"wa"}
    box.clear()
    Select(driver.find_element(By.ID, "show")).select_by_value("down")
    assert {r["health"] for r in rows(driver)} == {"down"} and len(rows(driver)) == 2
    Select(driver.find_element(By.ID, "show")).select_by_value("up")
    box.send_keys("no such target")
    assert rows(driver) == [] and driver.find_element(By.ID, "empty").is_displayed()
    driver.get(driver.current_url)  # a shared address opens the same view
    WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "filter").get_attribute("value"))
    assert driver.find_element(By.ID, "filter").get_attribute("value") == "no such target"
    assert Select(driver.find_element(By.ID, "show")).first_selected_option.get_attribute("value") == "up"


def test_wide_and_narrow_without_sideways_scrolling(stack: tuple[LiveApp, Simulator], driver: WebDriver,
                                                     tmp_path: Path) -> None:
    app, _ = stack
    for width in (1400, 420):
        open_page(driver, app.url, width)
        fit = no_sideways_scroll(driver)
        assert fit["scroll"] <= fit["client"] == width and not fit["wide"], fit
        screenshot(driver, tmp_path / f"status-{width}.png", width)
        assert (tmp_path / f"status-{width}.png").stat().st_size > 10_000
    # At 420 px each target is a card: no table header, the health badge beside the source.
    assert not driver.find_element(By.CSS_SELECTOR, "thead").is_displayed()
    print(f"screenshots: {tmp_path}")


def test_nothing_is_loaded_from_elsewhere_and_nothing_fails(stack: tuple[LiveApp, Simulator],
                                                           driver: WebDriver) -> None:
    app, _ = stack
    driver.get_log("browser")  # drop what earlier tests logged
    open_page(driver, app.url)
    after = refreshes(driver)
    WebDriverWait(driver, WAIT).until(lambda d: refreshes(d) > after)
    origins = driver.execute_script(
        "return [...performance.getEntriesByType('resource')].map(e => new URL(e.name).origin)")
    assert set(origins) <= {app.url}, origins
    assert driver.execute_script(
        "return document.querySelectorAll('link[rel=stylesheet], script[src], img[src], iframe').length") == 0
    problems = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == []  # no script error, no CSP violation


def test_the_page_refreshes_under_basic_auth(tmp_path: Path, driver: WebDriver, simulator: Simulator) -> None:
    hashed = bcrypt.hashpw(b"pa55word", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "exporter.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:0"\n[server.basic_auth.users]\n'
                      f'admin = "{hashed}"\n' + k6_config(simulator, [103054]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(poller, "FIRST_POLL_MAX_DELAY", 0.2)
        app = LiveApp(config)
    try:
        port = app.url.rsplit(":", 1)[1]
        driver.get(f"http://admin:pa55word@127.0.0.1:{port}/?refresh=1")
        WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr"))
        after = refreshes(driver)
        WebDriverWait(driver, WAIT).until(lambda d: refreshes(d) > after)
        state = driver.find_element(By.ID, "refresh-state").text
        assert "could not refresh" not in state, state
        assert json.loads(driver.execute_script("return JSON.stringify(document.body.dataset)"))["refreshes"]
    finally:
        app.close()
