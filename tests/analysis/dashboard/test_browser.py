"""`sae-lens-dit dashboard` for a bundled release, opened in headless Chromium from disk and over HTTP.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and selenium (the `dev`
extra); without them the test is skipped with the command that installs them. The screenshot of a
latent page is kept under `test-artifacts/dashboard/` (git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from sae_lens_dit.cli import main

RELEASE, SAE_ID = "tide-dit-tiny/shapes", "blocks.3.hook_resid_post/tide"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,1500",
)
INSTALL = "apt-get install -y chromium chromium-driver (as root, or run .ci/run) and pip install -e '.[dev]'"


def _browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(f"headless Chromium is missing (chromium: {chromium}, chromedriver: {driver}): {INSTALL}")
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is missing; install it: {INSTALL}")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-profile-"))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


@pytest.fixture(scope="module")
def browser():
    driver = _browser_or_skip()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard")
    argv = [
        "dashboard",
        "--release",
        RELEASE,
        "--sae-id",
        SAE_ID,
        "--output-dir",
        str(out),
        "--num-images",
        "8",
        "--num-inference-steps",
        "6",
        "--max-latents",
        "4",
        "--top-images",
        "4",
        "--strip-steps",
        "4",
    ]
    assert main(argv) == 0
    return out


VISIBLE_ROWS = """return Array.from(document.querySelectorAll("table.latents tbody tr")).filter((r) => !r.hidden)
    .map((r) => ({profile: r.dataset.profile, density: parseFloat(r.cells[2].dataset.value)}));"""
"""The latent table's shown rows, in display order (one WebDriver round trip instead of one per row)."""


def _errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _page_checks(driver, by):
    """On a latent page: every image loaded, two plots with a line each."""
    images = driver.find_elements(by.CSS_SELECTOR, "img")
    assert len(images) >= 2
    assert all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in images
    )
    plots = driver.find_elements(by.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 2 and all(p.find_elements(by.TAG_NAME, "polyline") for p in plots)
    assert all(p.size["width"] > 100 and p.size["height"] > 50 for p in plots)


def test_dashboard_in_headless_chromium_from_disk(browser, site):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    browser.find_element(By.LINK_TEXT, SAE_ID).click()
    assert len(browser.execute_script(VISIBLE_ROWS)) == 1536  # d_sae of the bundled SAEs: every latent is listed
    assert browser.find_element(By.ID, "count").text == "1536 of 1536 latents"
    search = browser.find_element(By.ID, "search")
    search.send_keys("dead")
    shown = browser.execute_script(VISIBLE_ROWS)
    assert 0 < len(shown) < 1536 and {row["profile"] for row in shown} == {"dead"}
    search.clear()
    search.send_keys(" ")  # an input event with an empty query shows every row again
    browser.find_element(By.XPATH, "//th[text()='density']").click()  # sort: densest first
    densities = [row["density"] for row in browser.execute_script(VISIBLE_ROWS)]
    assert len(densities) == 1536 and densities == sorted(densities, reverse=True)
    links = browser.find_elements(By.CSS_SELECTOR, "table.latents tbody a")
    assert len(links) == 4
    links[0].click()
    assert "latent #" in browser.find_element(By.TAG_NAME, "h1").text
    _page_checks(browser, By)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "latent_page.png"
    browser.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert _errors(browser) == []


def test_dashboard_over_http_server(browser, site):
    from selenium.webdriver.common.by import By

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder = SAE_ID.replace("/", "-")
        page = next((site / folder / "latents").glob("*.html")).name
        browser.get(f"http://127.0.0.1:{server.server_port}/{folder}/latents/{page}")
        _page_checks(browser, By)
        browser.find_element(By.LINK_TEXT, "all latents").click()
        assert len(browser.execute_script(VISIBLE_ROWS)) == 1536
        assert _errors(browser) == []
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass
