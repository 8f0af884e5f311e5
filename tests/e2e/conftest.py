"""The app served by `streamlit run` on a free port, with tiny models, and Debian's Chromium
driven by Playwright with a fake camera that plays a generated face clip."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures import write_y4m
from tests.serving import streamlit_server

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
SERVER_START_SECONDS = 120
# Every wait for the app is generous: the app imports TensorFlow on its first run and the test
# machine's two cores are shared with other test runs.
APP_TIMEOUT_MS = 240_000
SERVER_PIDS: dict[str, int] = {}    # app_server's URL -> the `streamlit run` process's id


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """The server's DEEPFAKE_DATA_ROOT: the only folder a visitor may name files in."""
    return tmp_path_factory.mktemp("data_root")


@pytest.fixture(scope="session")
def app_server(tiny_models_dir, data_root, tmp_path_factory):
    """Base URL of the app, serving the five tiny models, one analysis at a time, with a data
    root; stopped after the session."""
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "DEEPFAKE_MODELS_DIR": str(tiny_models_dir),
           "DEEPFAKE_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2",
           "DEEPFAKE_ANALYSIS_SLOTS": "1", "DEEPFAKE_DATA_ROOT": str(data_root)}
    with streamlit_server(env, log_path, SERVER_START_SECONDS) as (url, server):
        SERVER_PIDS[url] = server.pid
        yield url


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

