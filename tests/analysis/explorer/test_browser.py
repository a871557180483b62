"""The live explorer in headless Chromium over HTTP (uvicorn on 127.0.0.1): drag a box on the token grid,
apply a latent, and the edited image changes inside the box more than outside; the URL then holds the
whole view, and opening that URL elsewhere shows the same edit.

Needs Debian's `chromium` and `chromium-driver` and selenium (the `dev` extra); skipped without them. A
screenshot is kept under `test-artifacts/explorer/` (git-ignored)."""

from __future__ import annotations

import io
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "explorer"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, "--window-size=1200,900", "--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-")):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def server(shapes):
    uvicorn = pytest.importorskip("uvicorn")
    client = shapes[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", client
    srv.should_exit = True
    thread.join(10)


def _wait(driver, script: str, timeout: float = 60.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script!r}; status: {driver.execute_script(STATUS)!r}")


STATUS = "return document.getElementById('status').textContent"


def _pixels(client, url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.get(url).content)), dtype=np.float64).mean(-1) / 255.0


def test_paint_a_latent_into_a_box_in_the_browser(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, client = server
    top = max(client.get("/api/latents?sae=0").json()["latents"], key=lambda row: row["firing"])["id"]
    browser.get(f"{url}/?class=1&seed=3&window=0,400&strength=4")
    _wait(browser, "return document.querySelectorAll('#latent-list .latent').length > 0")
    _wait(browser, "const i = document.getElementById('before'); return i.complete && i.naturalWidth > 0")
    browser.find_element(By.ID, "filter").send_keys(str(top))
    browser.find_element(By.CSS_SELECTOR, f'.latent[data-id="{top}"]').click()
    assert browser.find_element(By.ID, "latents").get_attribute("value") == str(top)
    grid = browser.find_element(By.ID, "grid")
    half = grid.size["width"] / 2
    ActionChains(browser).move_to_element_with_offset(
        grid, -half + 3, -half + 3
    ).click_and_hold().move_to_element_with_offset(grid, 1, 1).release().perform()
    assert browser.find_element(By.ID, "box").get_attribute("value") == "0,0,0.5,0.5"
    browser.find_element(By.ID, "apply").click()
    _wait(browser, "return document.getElementById('status').textContent.startsWith('edited in')")
    before = _pixels(client, browser.find_element(By.ID, "before").get_attribute("src"))
    after_src = browser.find_element(By.ID, "after").get_attribute("src")
    change = np.abs(_pixels(client, after_src) - before)
    h, w = change.shape
    inside = np.zeros((h, w), dtype=bool)
    inside[: h // 2, : w // 2] = True
    assert change[inside].mean() > 2 * change[~inside].mean()
    shared = browser.current_url
    assert f"latents={top}" in shared and "box=0%2C0%2C0.5%2C0.5" in shared and "window=0%2C400" in shared
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "explorer.png"))
    browser.get("about:blank")
    browser.get(shared)  # a shared link re-runs the same edit
    _wait(browser, "return document.getElementById('status').textContent.startsWith('edited in')")
    assert browser.find_element(By.ID, "after").get_attribute("src") == after_src
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
