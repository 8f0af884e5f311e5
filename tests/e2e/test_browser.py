"""End to end: the real app under `streamlit run`, driven through Chromium as a person would use it.
Each page's screenshot is saved to docs/screenshots/ for the README."""
from __future__ import annotations

import os
import re
import time

import pytest

from tests.e2e.conftest import wait_for_app
from tests.fixtures import make_face_clip, make_face_photo, make_truncated_jpeg, make_truncated_mp4

pytestmark = pytest.mark.e2e

MODELS = ("tiny_efficientnetb7", "tiny_inceptionresnetv2", "tiny_inceptionv3", "tiny_resnet50",
          "tiny_vgg16")
CLIP_SIZE = (320, 240)
VERDICT_TITLE = f"Verdict (mean of {len(MODELS)} models)"
ANALYSIS_STAGES = re.compile(r"Finding faces|Scoring the faces|Drawing the annotated copy")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    return {
        "one_face": make_face_clip(folder / "one_face.mp4", frames=24, size=CLIP_SIZE,
                                   face_size=120),
        # A minute long: its annotated video takes long enough to write that another upload
        # made meanwhile has to wait in line.
        "two_faces": make_face_clip(folder / "two_faces.mp4", frames=1440, size=(640, 360),
                                    faces=2, face_size=140),
        "truncated": make_truncated_mp4(folder / "truncated.mp4"),
        # Stored on its side with EXIF orientation 6, as phones save portrait photos.
        "photo": make_face_photo(folder / "profile.jpg", size=(480, 640), corner=(120, 200),
                                 orientation=6, quality=92),
        "truncated_photo": make_truncated_jpeg(folder / "cut.jpg"),
    }


def upload(page, path) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(path))


def verdict_card(page):
    """The verdict card's text, once the analysis has finished."""
    title = page.get_by_text(VERDICT_TITLE, exact=True)
    title.wait_for()
    return title.locator("xpath=..").inner_text()


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=re.compile(title)).first.wait_for()
    wait_for_app(page)


@pytest.fixture(scope="module")
def analysed(browser, app_server, clips):
    """One browser session that has analysed the one-face clip; Analyze, Gallery, Compare and
    Models are checked on it in turn, as a person would move through the app."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(240_000)
    page = context.new_page()
    page.goto(app_server)
    wait_for_app(page)
    upload(page, clips["one_face"])
    card = verdict_card(page)
    yield page, card
    context.close()


def test_upload_shows_the_verdict_card_and_the_annotated_video(analysed, screenshots):
    page, card = analysed
    assert re.search(r"\b(REAL|FAKE|UNCERTAIN)\b", card), card
    assert re.search(r"P\(fake\) [01]\.\d\d", card), card
    assert "1 person" in card and re.search(r"\b\d+ faces\b", card), card

    video = page.locator("video").first
    video.wait_for()
    video.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('video').readyState === 4")
    size = page.evaluate("() => { const v = document.querySelector('video');"
                         " return [v.videoWidth, v.videoHeight]; }")
    assert size == list(CLIP_SIZE)
    page.screenshot(path=str(screenshots / "analyze.png"), full_page=True)


def test_gallery_shows_the_sampled_frames_and_faces(analysed, screenshots):
    page, _ = analysed
    open_page(page, "Gallery")
    caption = page.get_by_text(re.compile(r"one_face\.mp4: \d+ sampled frames")).inner_text()
    frames = int(re.search(r"(\d+) sampled frames", caption).group(1))
    assert frames == 24                      # a 24-frame clip, 32 asked for: every frame
    page.get_by_text(re.compile(r"^frame \d+ at \d+\.\d\d s$")).wait_for()   # the chosen still
    crops = page.get_by_text(re.compile(r"^person \d+ · frame \d+ · "))
    crops.first.wait_for()
    assert crops.count() >= 2                # face crops, one per sampled frame shown
    assert page.get_by_test_id("stImage").count() >= 1 + crops.count()
    page.screenshot(path=str(screenshots / "gallery.png"), full_page=True)


def test_compare_shows_every_model_and_the_ensemble(analysed, screenshots):
    page, _ = analysed
    open_page(page, "Compare")
    for name in MODELS:
        backbone = name.removeprefix("tiny_")
        page.get_by_text(f"{name} ({backbone})", exact=True).wait_for()
    page.get_by_text("ensemble (mean of the models)", exact=True).wait_for()
    page.screenshot(path=str(screenshots / "compare.png"), full_page=True)


def test_models_page_lists_the_zoo(analysed, screenshots):
    page, _ = analysed
    open_page(page, "Models")
    for name in MODELS:
        assert page.get_by_text(name).count() >= 1, name
    page.screenshot(path=str(screenshots / "models.png"), full_page=True)


def test_the_toolbar_has_its_menu_but_no_deploy_button(new_page):
    """.streamlit/config.toml's toolbarMode "viewer": on localhost Streamlit's default would show
    Deploy; this app is deployed as its README says."""
    page = new_page()
    page.get_by_test_id("stMainMenu").wait_for()
    assert page.get_by_test_id("stAppDeployButton").count() == 0


def test_the_settings_popover_draws_its_widgets_on_opening_and_a_change_reaches_the_sidebar(
        new_page):
    page = new_page()
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("32 frames, confident rule").wait_for()
    frames = page.get_by_role("slider", name="Frames to sample")
    assert frames.count() == 0                 # not drawn until the popover opens
    sidebar.get_by_role("button", name=re.compile("Change settings")).click()
    frames.wait_for()
    frames.focus()
    frames.press("ArrowRight")                 # one step: 32 -> 36
    sidebar.get_by_text("36 frames, confident rule").wait_for()


def test_a_corrupt_upload_shows_its_message_and_a_good_one_then_works(new_page, clips):
    page = new_page()
    upload(page, clips["truncated"])
    # An error (red) alert naming the file; the wording is the core's typed error message.
    error = page.get_by_test_id("stAlertContentError").filter(has_text="truncated.mp4")
    error.wait_for()
    assert len(error.inner_text().strip()) > len("truncated.mp4")
    assert page.get_by_text(VERDICT_TITLE, exact=True).count() == 0

    upload(page, clips["one_face"])
    card = verdict_card(page)
    assert "1 person" in card
    assert page.get_by_test_id("stAlert").filter(has_text="truncated.mp4").count() == 0


def test_a_photo_upload_shows_its_verdict_and_the_annotated_photo_upright(new_page, clips,
                                                                        screenshots):
    page = new_page()
    upload(page, clips["truncated_photo"])
    error = page.get_by_test_id("stAlertContentError").filter(has_text="cut.jpg")
    error.wait_for()
    assert "truncated" in error.inner_text()

    upload(page, clips["photo"])
    card = verdict_card(page)
    assert re.search(r"\b(REAL|FAKE|UNCERTAIN)\b", card) and "1 person" in card, card
    assert page.get_by_test_id("stAlert").filter(has_text="cut.jpg").count() == 0
    picture = page.get_by_role("img", name="profile.jpg, annotated")
    picture.wait_for()
    picture.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.images].some(i => i.alt === "
                           "'profile.jpg, annotated' && i.complete && i.naturalWidth > 0)")
    size = picture.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    # Shown upright, as the phone meant it (480x640, scaled to fit the page: 3:4 portrait).
    assert size[1] > size[0] and size[0] / size[1] == pytest.approx(480 / 640, abs=0.01), size
    page.get_by_role("button", name="Annotated photo (JPEG)").wait_for()
    page.get_by_role("heading", name="profile.jpg").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "analyze_photo.png"), full_page=True)


def test_two_sessions_analysing_at_once_each_get_their_own_result(new_page, clips):
    first, second = new_page(), new_page()
    # Both uploads are in flight before either result is read; the server runs one analysis at
    # a time, so the second waits in line and is told so.
    upload(first, clips["two_faces"])
    # Its turn has come (the models are loaded, it holds the one slot) once a stage is named.
    first.get_by_test_id("stProgress").filter(has_text=ANALYSIS_STAGES).wait_for()
    upload(second, clips["one_face"])
    second.get_by_text(re.compile(r"number 1 in line")).wait_for()
    first_card, second_card = verdict_card(first), verdict_card(second)

    assert "2 persons" in first_card, first_card
    assert "1 person" in second_card and "persons" not in second_card, second_card
    first.get_by_role("heading", name="two_faces.mp4").wait_for()
    second.get_by_role("heading", name="one_face.mp4").wait_for()
    assert first.get_by_role("heading", name="one_face.mp4").count() == 0
    assert second.get_by_role("heading", name="two_faces.mp4").count() == 0


def frames_processed(page) -> int:
    value = (page.get_by_test_id("stMetric").filter(has_text="Frames processed")
             .get_by_test_id("stMetricValue"))
    value.wait_for()
    return int(value.inner_text().replace(",", ""))


def test_live_page_analyses_the_camera_and_the_counter_rises(new_page, screenshots):
    page = new_page("live")
    page.get_by_role("heading", name="Live").wait_for()
    streamer = page.frame_locator("iframe[title*='streamlit_webrtc']").first
    streamer.get_by_role("button", name="START").click()

    first = frames_processed(page)
    deadline = time.monotonic() + 60
    later = first
    while later < first + 3 and time.monotonic() < deadline:
        time.sleep(1)
        later = frames_processed(page)
    assert later >= first + 3, (first, later)   # refreshed while playing, without any click

    # The camera's 640x480 frames come back through the analyser at full size.
    video_size = streamer.locator("video").evaluate("v => [v.videoWidth, v.videoHeight]")
    assert video_size == [640, 480]
    verdict = page.locator("p", has_text=re.compile(r"^Last 3 s:")).first
    verdict.wait_for()
    assert re.search(r"(REAL|FAKE|UNCERTAIN|no face analysed)", verdict.inner_text())
    page.screenshot(path=str(screenshots / "live.png"), full_page=True)
    streamer.get_by_role("button", name="STOP").click()


def test_server_files_only_under_the_data_root(new_page, data_root, clips):
    import shutil

    shutil.copy2(clips["one_face"], data_root / "one_face.mp4")
    (data_root / "labels.csv").write_text("path,label\none_face.mp4,REAL\n")
    page = new_page()
    open_page(page, "Models")
    source = page.get_by_label("Labels CSV or DFDC folder, relative to the data root")
    for attempt in ("/etc/passwd", "../../../etc/passwd"):
        source.fill(attempt)
        source.press("Enter")
        wait_for_app(page)
        page.get_by_role("button", name="Evaluate").click()
        error = page.get_by_test_id("stAlertContentError").filter(has_text="outside the data root")
        error.wait_for()
        assert "root:" not in page.content()            # nothing of /etc/passwd reached the page
    source.fill("labels.csv")
    source.press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_role("heading", name=re.compile(r"labels\.csv: 1 videos")).wait_for()


def test_a_deep_link_to_a_fresh_server_opens_the_page_with_its_sidebar(browser, tiny_models_dir,
                                                                      tmp_path):
    """The first request a fresh server gets is a link to /live: the Live page, with the sidebar,
    its settings and the zoo's models, as when the app is opened at / first."""
    from tests.e2e.conftest import APP_TIMEOUT_MS, SERVER_START_SECONDS
    from tests.serving import streamlit_server

    env = {**os.environ, "DEEPFAKE_MODELS_DIR": str(tiny_models_dir),
           "DEEPFAKE_ICE_SERVERS": "[]", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with streamlit_server(env, tmp_path / "server.log", SERVER_START_SECONDS) as (url, _):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(APP_TIMEOUT_MS)
        try:
            page = context.new_page()
            page.goto(f"{url}/live")
            page.get_by_role("heading", name="Live").first.wait_for()
            wait_for_app(page)
            page.get_by_role("heading", name="Settings").wait_for()
            nav = page.get_by_test_id("stSidebarNav")
            assert nav.get_by_role("link", name="Analyze").count() == 1
            page.get_by_text("tiny_resnet50").first.wait_for()           # the sidebar's models
            assert page.get_by_text("No model loaded").count() == 0
            assert page.url.rstrip("/").endswith("/live")
        finally:
            context.close()


def test_zz_the_server_process_never_loaded_tensorflow(app_server):
    """Run last (pytest keeps file order): after every page above, uploads, the gallery, Compare,
    Models and the Live camera included, the `streamlit run` process has no TensorFlow library
    mapped: the models ran in its worker processes."""
    from pathlib import Path

    from tests.e2e.conftest import SERVER_PIDS

    maps = Path(f"/proc/{SERVER_PIDS[app_server]}/maps").read_text()
    assert "tensorflow" not in maps and "libtensorflow" not in maps
    workers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
               and b"serving.worker" in _read(p / "cmdline")]
    assert any("tensorflow" in _read(p / "maps").decode(errors="replace") for p in workers)


def _read(path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
