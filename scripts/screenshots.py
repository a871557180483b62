"""Screenshots for the README: the index of a bundled release's dashboard, one latent page, and the live explorer.

Why a script: the pictures in docs/images/ should come from the code as it is, by one command anyone can rerun
after changing the pages or the app, not from hand-made captures that drift. It builds a small dashboard of a
bundled release (every SAE, a few latent pages each, with steering previews), starts the app with the real
command line (`sae-lens-dit serve`, on 127.0.0.1 and a free port, its cache in a temporary folder), opens both in
headless Chromium (selenium, as tests/analysis/explorer/test_browser.py does), paints the most frequently firing
latent onto a box in the app, and saves PNGs, re-encoded as palette images when that keeps them under 300 KB.

Run: HF_HUB_OFFLINE=1 python scripts/screenshots.py [--release tide-dit-tiny/shapes] [--out docs/images]
Needs Debian's chromium and chromium-driver, selenium (the `dev` extra) and the `app` extra.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 300_000
"""Largest PNG kept as it is; larger screenshots are saved as 256-colour palette images."""


def build_site(release: str, folder: Path, max_latents: int) -> Path:
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    import sae_lens_dit  # noqa: F401  (registers the bundled releases)
    from sae_lens_dit.analysis.dashboard import DashboardConfig, build_dashboard

    saes = [SAE.from_pretrained(release, i) for i in get_pretrained_saes_directory()[release].saes_map]
    return build_dashboard(saes, folder, DashboardConfig(max_latents=max_latents), progress=False).index


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument("--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-"))
    return webdriver.Chrome(options=options, service=Service(driver))


def wait(driver, script: str, timeout: float = 120.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {script!r}")


def save_png(driver, path: Path) -> int:
    """Save the window as a PNG at `path` (palette-encoded if the plain PNG is over LIMIT); returns its size."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > LIMIT:
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(release: str, sae_id: str, cache: Path, port: int) -> subprocess.Popen:
    """`sae-lens-dit serve` in a child process, once it answers."""
    cli = shutil.which("sae-lens-dit", path=str(Path(sys.executable).parent)) or "sae-lens-dit"
    command = [cli, "serve", "--release", release, "--sae-id", sae_id]
    command += ["--port", str(port), "--cache-dir", str(cache)]
    app = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    end = time.time() + 180
    while time.time() < end:
        if app.poll() is not None:
            raise SystemExit(f"sae-lens-dit serve exited with {app.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2)
            return app
        except OSError:
            time.sleep(0.5)
    app.terminate()
    raise TimeoutError("sae-lens-dit serve did not answer within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="tide-dit-tiny/shapes")
    parser.add_argument("--sae-id", default="blocks.1.hook_resid_post/tide", help="SAE the app opens")
    parser.add_argument("--max-latents", type=int, default=6, help="latent pages per SAE in the dashboard")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="screenshots-"))
    driver = browser(1200, 900)
    app = None
    try:
        index = build_site(args.release, work / "site", args.max_latents)
        driver.get(index.as_uri())
        wait(driver, "return document.readyState === 'complete'")
        sizes = {"dashboard-index.png": save_png(driver, args.out / "dashboard-index.png")}
        page = next(index.parent.glob("*/latents/*.html"))
        driver.get(page.as_uri())
        wait(driver, "return [...document.images].every((i) => i.complete)")
        sizes["dashboard-latent.png"] = save_png(driver, args.out / "dashboard-latent.png")

        port = free_port()
        app = serve(args.release, args.sae_id, work / "cache", port)
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/api/latents?sae=0", timeout=600) as response:
            rows = json.load(response)["latents"]
        top = max(rows, key=lambda row: row["firing"])["id"]
        driver.get(f"{url}/?class=1&seed=3&latents={top}&strength=4&window=0,400&box=0,0,0.5,0.5")
        wait(driver, "return document.getElementById('status').textContent.startsWith('edited in')", 600)
        wait(driver, "const i = document.getElementById('after'); return i.complete && i.naturalWidth > 0")
        sizes["explorer.png"] = save_png(driver, args.out / "explorer.png")
    finally:
        driver.quit()
        if app is not None:
            app.terminate()
            app.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    for name, size in sizes.items():
        print(f"{args.out / name}: {size / 1000:.0f} KB")


if __name__ == "__main__":
    main()
