"""The web console of the real ``radbridge run`` in headless Chromium: log in, find by MSH-10, open, reprocess.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium. Without them the test fails; set
``RADBRIDGE_SKIP_BROWSER_TESTS=1`` to skip it on purpose (``RADBRIDGE_CHROMIUM`` and
``RADBRIDGE_CHROMEDRIVER`` override the binaries' paths).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import (
    MLLP_SEND,
    free_port,
    make_orm,
    parse_mllp_send_output,
    run_cli,
    wait_until,
    write_config,
    write_mllp_file,
)

pytestmark = pytest.mark.integration
PASSWORD = "console e2e admin pass"
WAIT = 10.0  # seconds for any one page or element


def _binary(env_name: str, default: str) -> str | None:
    """The path named by *env_name* if set (exactly), else *default* or the same name on PATH."""
    if env_name in os.environ:
        path = os.environ[env_name]
        return path if os.access(path, os.X_OK) else None
    return default if os.access(default, os.X_OK) else shutil.which(os.path.basename(default))


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium driven through chromedriver (quit at teardown); fails when either is missing."""
    chromium = _binary("RADBRIDGE_CHROMIUM", "/usr/bin/chromium")
    driver_path = _binary("RADBRIDGE_CHROMEDRIVER", "/usr/bin/chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver_path)) if p is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("RADBRIDGE_SKIP_BROWSER_TESTS") == "1":
            pytest.skip(reason)
        pytest.fail(reason + "; set RADBRIDGE_SKIP_BROWSER_TESTS=1 to skip on purpose")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, by: str, value: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((by, value)))


def _wait_url(driver: Any, fragment: str) -> None:
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(ec.url_contains(fragment))


def _received(driver: Any, base: str, channel: str) -> int:
    driver.get(f"{base}/console/")
    return int(_wait(driver, "id", f"received-{channel}").text)


def test_login_find_open_reprocess_and_count(tmp_path, downstream, engine_factory, browser) -> None:
    """In Chromium: log in as the bootstrap admin, find an mllp_send message by MSH-10, reprocess it, see +1."""
    port, admin_port = free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", {
        "data_dir": str(tmp_path / "data"),
        "metrics": {"enabled": False},
        "admin": {"enabled": True, "host": "127.0.0.1", "port": admin_port},
        "channels": [{
            "name": "web",
            "source": {"type": "mllp_listener", "port": port},
            "destinations": [{"name": "down", "type": "mllp_sender", "host": "127.0.0.1", "port": downstream.port}],
        }],
    })  # fmt: skip
    engine = engine_factory(config, {"RADBRIDGE_ADMIN_USER": "boss", "RADBRIDGE_ADMIN_PASSWORD": PASSWORD})
    engine.start_ready()
    base = f"http://127.0.0.1:{admin_port}"
    try:
        path = write_mllp_file(tmp_path / "in.hl7", [make_orm("WEB-1", "PAT88", "ACC88")])
        out = subprocess.run([MLLP_SEND, "-p", str(port), "-f", str(path), "127.0.0.1"], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert parse_mllp_send_output(out.stdout) == [("AA", "WEB-1")]
        downstream.wait_for(["WEB-1"], timeout=10)

        browser.get(f"{base}/console/")  # no session: the login form
        _wait(browser, "id", "username").send_keys("boss")
        browser.find_element("id", "password").send_keys(PASSWORD)
        browser.find_element("id", "login").click()
        assert _wait(browser, "id", "whoami").text == "boss (admin)"
        before = int(_wait(browser, "id", "received-web").text)
        assert before == 1

        browser.find_element("link text", "Messages").click()
        _wait(browser, "id", "control_id").send_keys("WEB-1")
        browser.find_element("id", "search-button").click()
        _wait_url(browser, "control_id=WEB-1")
        rows = _wait(browser, "id", "results").find_elements("css selector", "tbody tr[data-id]")
        assert len(rows) == 1 and "PAT88" in rows[0].text
        rows[0].find_element("css selector", "a.open").click()

        assert _wait(browser, "id", "message-control-id").text == "WEB-1"
        assert "DOE^JOHN^Q" in browser.find_element("id", "stage-received").text
        browser.find_element("id", "reprocess").click()
        assert "reprocessed from message" in _wait(browser, "id", "notice").text
        assert browser.find_element("id", "message-control-id").text == "WEB-1"

        assert _received(browser, base, "web") == before + 1
        wait_until(lambda: downstream.count() >= 2, 10, what="the reprocessed copy downstream")
        wait_until(lambda: _received(browser, base, "web") and int(browser.find_element("id", "sent-web").text) == 2,
                   10, interval=0.2, what="both deliveries SENT on the dashboard")  # fmt: skip
    finally:
        assert engine.terminate() == 0
    audit = run_cli("audit", "--config", str(config), "--json", "--user", "boss")
    assert audit.returncode == 0, audit.stderr
    actions = [r["action"] for r in json.loads(audit.stdout)]
    assert {"login.success", "message.search", "message.view", "message.reprocess"} <= set(actions)
    assert "PAT88" not in engine.log() and "DOE" not in engine.log()
