"""The app served by `streamlit run` on a free port, with tiny models, and Debian's Chromium
driven by Playwright with a fake camera that plays a generated face clip."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import write_y4m

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
SERVER_START_SECONDS = 120
# Every wait for the app is generous: the app imports TensorFlow on its first run and the test
# machine's two cores are shared with other test runs.
APP_TIMEOUT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """The server's DEEPFAKE_DATA_ROOT: the only folder a visitor may name files in."""
    return tmp_path_factory.mktemp("data_root")


@pytest.fixture(scope="session")
def app_server(tiny_models_dir, data_root, tmp_path_factory):
    """Base URL of the app, serving the five tiny models, one analysis at a time, with a data
    root; stopped after the session."""
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    port = _free_port()
    env = {**os.environ, "DEEPFAKE_MODELS_DIR": str(tiny_models_dir),
           "DEEPFAKE_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2",
           "DEEPFAKE_ANALYSIS_SLOTS": "1", "DEEPFAKE_DATA_ROOT": str(data_root)}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
               "--server.headless", "true", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while not _healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM} (scripts/setup.sh --dev)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    camera = write_y4m(tmp_path_factory.mktemp("camera") / "cam.y4m", frames=48,
                       size=(640, 480), fps=24)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
            "--autoplay-policy=no-user-gesture-required"]
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser, app_server):
    """A fresh browser context (its own Streamlit session) per call; all closed after the test."""
    contexts = []

    def make(path: str = ""):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(APP_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{app_server}/{path}")
        wait_for_app(page)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def wait_for_app(page) -> None:
    """Connected, and the script run finished (Streamlit's own test suite waits the same way)."""
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached")
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached")

