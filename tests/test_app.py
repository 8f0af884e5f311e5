"""The Streamlit app through AppTest: real uploads of generated clips, the real detector and tiny real
models of all five backbones; plus the app's plain-Python state and view helpers on real results."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from streamlit import config as st_config
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from app import cache as app_cache
from app import state as app_state
from app import views as app_views
from app.cache import MODELS_DIR_ENV
from core.errors import VideoError
from core.evaluation.data_root import DATA_ROOT_ENV
from core.media.video import probe
from core.results import ENSEMBLE
from core.settings import AnalysisSettings
from tests.fixtures import make_blank_clip, make_face_clip, make_text_file, make_truncated_mp4

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
FRAMES = 8
TIMEOUT = 120


@pytest.fixture(scope="module", autouse=True)
def navigation_only_pages():
    """AppTest (1.67) resets PagesManager.uses_pages_directory before every run, and with a pages/
    folder beside the script that turns on the old pages-folder mode: reruns then execute the page
    file alone, without the entry script and its sidebar. Under `streamlit run` the first
    st.navigation call switches that mode off for good; this does the same for AppTest."""
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    yield
    PagesManager.__init__ = original


@pytest.fixture(scope="module")
def models_dir(tiny_models_dir, tmp_path_factory):
    """A private copy of the five tiny models (the import test adds to it)."""
    folder = tmp_path_factory.mktemp("app_models")
    for path in tiny_models_dir.iterdir():
        shutil.copy2(path, folder / path.name)
    return folder


@pytest.fixture(scope="module", autouse=True)
def models_env(models_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODELS_DIR_ENV, str(models_dir))
        yield


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        "face": make_face_clip(folder / "face.mp4", frames=24, size=(320, 240), face_size=120),
        "blank": make_blank_clip(folder / "blank.mp4", frames=12),
        "truncated": make_truncated_mp4(folder / "truncated.mp4"),
        "text": make_text_file(folder / "notes.mp4"),
    }


def new_app(frames: int = FRAMES) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    at.sidebar.slider(key="sidebar_frames").set_value(frames)
    return at.run()


def upload(at: AppTest, path: Path, name: str | None = None) -> AppTest:
    at.file_uploader(key="analyze_upload").set_value((name or path.name, path.read_bytes(), "video/mp4"))
    at.run()
    assert not at.exception, at.exception
    return at


def upload_dirs() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("deepfake-upload-*"))


@pytest.fixture(scope="module")
def analysed(clips):
    """One session that analysed the face clip with all five models; tests walk its pages."""
    at = new_app()
    before = upload_dirs()
    upload(at, clips["face"])
    assert upload_dirs() == before      # the upload's temporary folder is gone
    return at


def current(at: AppTest) -> app_state.StoredAnalysis:
    return at.session_state[app_state.STORE_KEY].current


def card_markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "P(fake)" in m.value or "NO FACE" in m.value]


def test_sidebar_settings_reach_the_analysis(analysed):
    settings = analysed.session_state[app_state.SETTINGS_KEY]
    assert settings.frames == FRAMES
    result = current(analysed).result
    assert result.settings == settings
    assert len(result.sampled) == FRAMES
    assert sorted(analysed.sidebar.multiselect(key="sidebar_models").value) == sorted(result.models)
    assert len(result.models) == 5


def test_the_sidebar_says_what_will_run_and_keeps_its_widgets_in_a_popover(analysed):
    """The widgets are drawn in the browser only when the popover opens (a lighter first page);
    the sidebar itself says which models and settings the next analysis uses."""
    popovers = [block for block in analysed.sidebar.children.values()
                if getattr(block, "type", None) == "popover"]
    assert len(popovers) == 1
    inside = {w.key for kind in ("slider", "selectbox", "multiselect", "select_slider",
                                 "checkbox")
              for w in getattr(popovers[0], kind)}
    assert {"sidebar_frames", "sidebar_band", "sidebar_rule", "sidebar_models", "sidebar_views",
            "sidebar_views_on", "sidebar_views_per_face", "sidebar_min_confidence",
            "sidebar_detect_long_side"} <= inside
    captions = " ".join(c.value for c in analysed.sidebar.caption)
    settings = analysed.session_state[app_state.SETTINGS_KEY]
    assert f"{FRAMES} frames, {settings.rule.replace('_', ' ')} rule" in captions
    assert f"UNCERTAIN within {settings.band:.2f} of 0.5" in captions
    assert "by the verdict's models" in captions and settings.views_on == "verdict"
    each_in_turn = ("each face seen one way in turn (the faces as found / their mirror images / "
                    "the faces re-encoded (JPEG quality 60))")
    assert (each_in_turn in captions) == (settings.views_per_face == "one")
    assert "Models: " + ", ".join(current(analysed).result.models) in captions


def test_analyze_shows_verdict_card_timeline_video_and_downloads(analysed):
    result = current(analysed).result
    [card] = card_markdown(analysed)
    verdict = result.verdict
    assert verdict.model == ENSEMBLE and verdict.label in ("REAL", "FAKE", "UNCERTAIN")
    assert f">{verdict.label}<" in card
    assert f"P(fake) {verdict.probability:.2f}" in card
    assert f"{len(result.persons)} person" in card and f"{len(result.faces)} faces" in card
    assert app_views.LABEL_COLOURS[verdict.label] in card
    assert len(result.persons) == 1 and len(result.faces) == FRAMES
    assert len(analysed.get("plotly_chart")) == 1
    assert len(analysed.get("video")) == 1
    assert len(analysed.get("download_button")) == 3


def test_annotated_video_is_kept_in_memory_as_playable_h264(analysed):
    entry = current(analysed)
    assert entry.result.annotated_video is None        # its file is gone with the request
    assert entry.result.video.path == "face.mp4"
    with av.open(io.BytesIO(entry.annotated_mp4)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
    assert frames == 24
    report = json.loads(entry.result.to_json())
    assert report["verdict"]["label"] == entry.result.verdict.label
    assert entry.result.faces_csv().count("\n") == 1 + FRAMES


def test_pages_reuse_the_analysis_instead_of_recomputing(analysed):
    entry = current(analysed)
    analysed.switch_page("pages/compare.py").run()
    analysed.switch_page("pages/analyze.py").run()
    assert not analysed.exception
    assert current(analysed) is entry
    assert len(analysed.session_state[app_state.STORE_KEY]) == 1
    assert card_markdown(analysed)      # shown again from the store, with no upload on the page


def test_gallery_shows_stills_and_crops_and_opens_a_frame(analysed):
    analysed.switch_page("pages/gallery.py").run()
    assert not analysed.exception
    result = current(analysed).result
    captions = [c for image in analysed.get("image") for c in image.captions]
    frame_captions = [c for c in captions if c.startswith("frame ")]
    face_captions = [c for c in captions if c.startswith("person ")]
    assert len(frame_captions) == 1 and len(face_captions) == FRAMES
    assert len(analysed.get("plotly_chart")) == 1                  # the clickable timeline
    # Fakest first: the captions' scores do not increase.
    scores = [float(c.rsplit(" ", 1)[1]) for c in face_captions]
    assert scores == sorted(scores, reverse=True)

    last = max(result.stills)
    analysed.select_slider(key="gallery_frame").set_value(last).run()
    frame_caption = [c for image in analysed.get("image") for c in image.captions
                     if c.startswith("frame ")]
    assert frame_caption[0].startswith(f"frame {last} at")


def test_a_point_clicked_on_the_timeline_opens_its_frame(analysed):
    analysed.switch_page("pages/gallery.py").run()
    result = current(analysed).result
    [trace] = app_views.timeline_figure(result).data
    index = 2
    frame_index, person_id = trace.customdata[index]
    assert frame_index != analysed.select_slider(key="gallery_frame").value
    # The selection state the browser sends for a click on that point of the chart.
    analysed.session_state["gallery_timeline"] = {"selection": {
        "points": [{"curve_number": 0, "point_number": index, "point_index": index,
                    "x": trace.x[index], "y": trace.y[index],
                    "customdata": [int(frame_index), int(person_id)]}],
        "point_indices": [index], "box": [], "lasso": []}}
    analysed.run()
    assert not analysed.exception, analysed.exception
    frame_caption = [c for image in analysed.get("image") for c in image.captions
                     if c.startswith("frame ")]
    assert frame_caption == [f"frame {frame_index} at {dict(result.sampled)[frame_index]:.2f} s"]


def test_gallery_filters_by_verdict(analysed):
    analysed.switch_page("pages/gallery.py").run()
    result = current(analysed).result
    wanted = app_views.gallery_faces(result)[0].label
    analysed.multiselect(key="gallery_labels").set_value([wanted]).run()
    face_captions = [c for image in analysed.get("image") for c in image.captions
                     if c.startswith("person ")]
    expected = sum(1 for face in app_views.gallery_faces(result) if face.label == wanted)
    assert len(face_captions) == expected
    assert all(f"{wanted} " in c for c in face_captions)
    analysed.multiselect(key="gallery_labels").set_value(["REAL", "FAKE", "UNCERTAIN"]).run()


def test_gallery_grad_cam_colours_each_face(analysed):
    analysed.switch_page("pages/gallery.py").run()
    model = current(analysed).result.models[0]
    analysed.selectbox(key="gallery_gradcam").set_value(model).run()
    assert not analysed.exception, analysed.exception
    heatmaps = analysed.session_state["gallery_heatmaps"]
    assert len(heatmaps) == FRAMES
    for (name, _, _), heatmap in heatmaps.items():
        assert name == model
        assert heatmap.shape == (160, 160)
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    analysed.selectbox(key="gallery_gradcam").set_value("(off)").run()


def test_compare_shows_five_models_and_the_ensemble(analysed):
    analysed.switch_page("pages/compare.py").run()
    assert not analysed.exception
    result = current(analysed).result
    cards = card_markdown(analysed)
    assert len(cards) == 6
    for name in [*result.models, ENSEMBLE]:
        verdict = result.verdicts[name]
        [card] = [c for c in cards if f">{name} (" in c]
        assert f">{verdict.label}<" in card and f"P(fake) {verdict.probability:.2f}" in card
    assert len(analysed.get("plotly_chart")) == 3        # timelines, agreement, time per model
    [metrics] = analysed.dataframe
    assert sorted(metrics.value["name"]) == sorted(result.models)
    assert list(metrics.value["val_video_auc"]) == [0.5] * 5


def test_compare_runs_all_models_when_the_sidebar_chose_fewer(clips):
    at = new_app()
    chosen = at.sidebar.multiselect(key="sidebar_models").value[:2]
    at.sidebar.multiselect(key="sidebar_models").set_value(chosen).run()
    upload(at, clips["face"])
    assert current(at).result.models == chosen
    at.switch_page("pages/compare.py").run()
    assert len(card_markdown(at)) == 3
    at.button(key="compare_all").click().run()
    assert not at.exception, at.exception
    assert len(current(at).result.models) == 5
    assert len(card_markdown(at)) == 6
    assert len(at.session_state[app_state.STORE_KEY]) == 2


def test_models_lists_the_cards(analysed, models_dir):
    analysed.switch_page("pages/models.py").run()
    assert not analysed.exception
    table = analysed.dataframe[0].value
    assert sorted(table["name"]) == sorted(p.stem for p in models_dir.glob("*.keras"))
    assert set(table["backbone"]) == {"efficientnetb7", "inceptionresnetv2", "inceptionv3",
                                      "resnet50", "vgg16"}


@pytest.fixture
def data_root_dir(tmp_path, clips, monkeypatch):
    """A data root the operator set, holding two clips and a labels CSV."""
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    shutil.copy2(clips["face"], root / "videos" / "face.mp4")
    shutil.copy2(clips["blank"], root / "videos" / "blank.mp4")
    (root / "labels.csv").write_text("path,label\nvideos/face.mp4,FAKE\nvideos/blank.mp4,REAL\n")
    monkeypatch.setenv(DATA_ROOT_ENV, str(root))
    return root


def test_models_evaluates_a_labelled_csv_under_the_data_root(analysed, data_root_dir):
    analysed.switch_page("pages/models.py").run()
    analysed.text_input(key="evaluate_source").set_value("labels.csv").run()
    analysed.button(key="evaluate_run").click().run()
    assert not analysed.exception, analysed.exception
    assert not analysed.error
    report = analysed.session_state["evaluation"]["report"]
    assert [v["label"] for v in report["videos"]] == [1, 0]
    assert report["models"][ENSEMBLE]["no_face"] == 1
    assert len(analysed.get("plotly_chart")) == 1 + 6     # ROC, one confusion matrix per model
    counts = app_views.evaluation_confusion(report, ENSEMBLE)
    assert counts.sum() == 2 and counts[0].sum() == 1 and counts[1].sum() == 1
    analysed.session_state["evaluation"] = None


def test_without_a_data_root_the_browser_cannot_name_server_files(analysed, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    analysed.switch_page("pages/models.py").run()
    assert analysed.text_input(key="evaluate_source").disabled
    assert analysed.button(key="evaluate_run").disabled
    assert any(DATA_ROOT_ENV in i.value for i in analysed.info)
    # Nothing on the page names the server's folders.
    assert not any(str(Path(tempfile.gettempdir()).parent) in c.value and "/" in c.value
                   for c in analysed.caption)


@pytest.mark.parametrize("name, reason", [
    ("/etc/passwd", "outside the data root"),
    ("../../../../etc/passwd", "outside the data root"),
    ("escape.csv", "outside the data root"),          # a symbolic link pointing out of the root
    ("rows_escape.csv", "outside the data root"),     # a CSV whose row names a file outside
])
def test_paths_outside_the_data_root_are_refused_in_one_line(analysed, data_root_dir, tmp_path,
                                                             name, reason):
    outside = tmp_path / "secret.csv"
    outside.write_text("path,label\n/etc/passwd,REAL\n")
    (data_root_dir / "escape.csv").symlink_to(outside)
    (data_root_dir / "rows_escape.csv").write_text("path,label\n../secret.csv,REAL\n")
    analysed.switch_page("pages/models.py").run()
    analysed.text_input(key="evaluate_source").set_value(name).run()
    analysed.button(key="evaluate_run").click().run()
    assert not analysed.exception
    [error] = analysed.error
    assert reason in error.value and len(error.value.splitlines()) == 1
    assert str(tmp_path) not in error.value          # no server folder in the message
    assert ("evaluation" not in analysed.session_state
            or analysed.session_state["evaluation"] is None)


def test_corrupt_upload_shows_its_message_then_a_good_upload_works(clips):
    at = new_app()
    upload(at, clips["truncated"])
    with pytest.raises(VideoError) as expected:
        probe(clips["truncated"])
    [error] = at.error
    assert error.value == str(expected.value)
    assert error.value.startswith("truncated.mp4 ")
    assert current(at) is None and not card_markdown(at)

    before = upload_dirs()
    upload(at, clips["face"])
    assert not at.error
    assert len(card_markdown(at)) == 1 and len(at.get("plotly_chart")) == 1
    assert upload_dirs() == before


def test_text_renamed_to_mp4_is_refused(clips):
    at = new_app()
    upload(at, clips["text"])
    [error] = at.error
    with pytest.raises(VideoError) as expected:
        probe(clips["text"])
    assert error.value == str(expected.value) and "notes.mp4" in error.value


def test_clip_without_a_face_says_so(clips):
    at = new_app()
    upload(at, clips["blank"])
    assert any("No face found" in w.value for w in at.warning)
    [card] = card_markdown(at)
    assert ">NO FACE<" in card
    assert not at.get("plotly_chart")
    at.switch_page("pages/gallery.py").run()
    assert not at.exception
    assert any("No face found" in w.value for w in at.warning)


def test_file_over_the_upload_limit_is_refused(clips):
    at = new_app()
    limit = st_config.get_option("server.maxUploadSize")
    st_config.set_option("server.maxUploadSize", 1)
    try:
        at.file_uploader(key="analyze_upload").set_value(
            ("huge.mp4", clips["face"].read_bytes() + bytes(1024 * 1024), "video/mp4"))
        at.run()
    finally:
        st_config.set_option("server.maxUploadSize", limit)
    [error] = at.error
    assert error.value.startswith("huge.mp4 is 1.") and error.value.endswith("the limit is 1 MB")
    assert current(at) is None


def test_the_toolbar_offers_no_deploy_button():
    """The app is deployed as its README says, not from the page: Streamlit reads toolbarMode
    "viewer" from .streamlit/config.toml, which hides the toolbar's developer options (Deploy
    among them) also on localhost (the browser tests check the toolbar itself)."""
    code = "from streamlit import config; print(config.get_option('client.toolbarMode'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=APP.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "viewer"


def test_importing_an_h5_adds_the_model_everywhere(models_dir, tmp_path):
    import keras

    from core.models.backbones import build_classifier

    keras.utils.set_random_seed(5)
    origin = build_classifier("vgg16", input_size=32, preprocessing="raw")
    h5_path = tmp_path / "origin_vgg.h5"
    origin.save(h5_path)                   # the Keras 2 HDF5 layout the origin project wrote

    at = new_app()
    at.switch_page("pages/models.py").run()
    at.file_uploader(key="import_h5_file").set_value(
        ("origin_vgg.h5", h5_path.read_bytes(), "application/x-hdf5")).run()
    assert at.text_input(key="import_name").value == "origin_vgg"
    at.selectbox(key="import_backbone").set_value("vgg16")
    at.number_input(key="import_input_size").set_value(32)
    at.button(key="import_run").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert any("Imported origin_vgg" in s.value for s in at.success)
    assert (models_dir / "origin_vgg.keras").is_file()
    assert "origin_vgg" in list(at.dataframe[0].value["name"])
    assert "origin_vgg" in at.sidebar.multiselect(key="sidebar_models").options
    (models_dir / "origin_vgg.keras").unlink()
    (models_dir / "origin_vgg.json").unlink()


def test_bad_h5_shows_its_message(tmp_path):
    at = new_app()
    at.switch_page("pages/models.py").run()
    at.file_uploader(key="import_h5_file").set_value(
        ("notes.h5", b"not hdf5 at all", "application/x-hdf5")).run()
    at.button(key="import_run").click().run()
    [error] = at.error
    assert "is not an HDF5 file" in error.value


# Plain-Python parts, on real results.

def test_safe_file_name_keeps_the_name_people_know():
    assert app_state.safe_file_name("My clip (1).MP4") == "My_clip_1.mp4"
    assert app_state.safe_file_name("../../etc/passwd") == "passwd.mp4"
    assert app_state.safe_file_name("...") == "upload.mp4"


def test_result_key_changes_with_content_settings_and_models():
    base = app_state.result_key("abc", AnalysisSettings(frames=8), ["a", "b"])
    assert base == app_state.result_key("abc", AnalysisSettings(frames=8), ["a", "b"])
    assert base != app_state.result_key("abd", AnalysisSettings(frames=8), ["a", "b"])
    assert base != app_state.result_key("abc", AnalysisSettings(frames=16), ["a", "b"])
    assert base != app_state.result_key("abc", AnalysisSettings(frames=8), ["a"])
    assert base != app_state.result_key("abc", AnalysisSettings(frames=8), ["a", "b"], "mean")


def test_result_store_keeps_the_most_recent(analysed):
    entry = current(analysed)
    store = app_state.ResultStore(capacity=2)
    copies = [app_state.StoredAnalysis(f"k{i}", "x.mp4", "h", entry.result, None) for i in range(3)]
    for copy in copies:
        store.put(copy)
    assert len(store) == 2 and store.get("k0") is None
    assert store.current is copies[2]
    assert store.get("k1") is copies[1] and store.current is copies[1]
    store.clear_current()
    assert store.current is None


def test_analyze_upload_removes_its_folder_when_the_video_is_broken(clips):
    upload = app_state.Upload("t.mp4", clips["truncated"].read_bytes(), "h")
    seen = []

    def analyze(path, **options):
        seen.append(Path(path))
        probe(path)

    with pytest.raises(VideoError):
        app_state.analyze_upload(upload, analyze, AnalysisSettings(), ["m"])
    assert seen and not seen[0].parent.exists()


def test_agreement_matrix_counts_same_labels(analysed):
    result = current(analysed).result
    names, matrix = app_views.agreement_matrix(result)
    assert names == [*result.models, ENSEMBLE]
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    from core.verdicts.verdict import label_for

    a, b = names[0], names[-1]
    same = np.mean([label_for(f.scores[a], result.settings.band)
                    == label_for(f.scores[b], result.settings.band) for f in result.faces])
    assert matrix[0, -1] == pytest.approx(same)


def test_gallery_faces_filter_and_sort(analysed):
    result = current(analysed).result
    by_time = app_views.gallery_faces(result, order="by time")
    assert [f.time for f in by_time] == sorted(f.time for f in result.faces)
    assert app_views.gallery_faces(result, persons=[999]) == []
    fakest = app_views.gallery_faces(result, model=result.models[0])
    assert fakest[0].score == max(f.scores[result.models[0]] for f in result.faces)


def test_fitted_ensemble_is_the_default_and_the_sidebar_and_compare_say_how_it_weighs(
        models_dir, clips, tmp_path, monkeypatch):
    from core.verdicts.ensemble import ENSEMBLE_CARD, EnsembleCard
    from core.models.model_store import ModelCard

    zoo = tmp_path / "zoo"
    shutil.copytree(models_dir, zoo)
    members = {"tiny_resnet50": 0.75, "tiny_vgg16": 0.25}
    EnsembleCard(weights=members, threshold=0.45, temperature=1.5,
                 member_sha256={n: ModelCard.load(zoo / f"{n}.json").sha256 for n in members},
                 metrics={"val_video_auc": 0.9, "val_video_auc_ci95": [0.8, 1.0]}
                 ).save(zoo / ENSEMBLE_CARD)
    monkeypatch.setenv(MODELS_DIR_ENV, str(zoo))
    at = new_app()
    assert at.sidebar.radio(key="sidebar_ensemble").value == "fitted"
    assert at.sidebar.multiselect(key="sidebar_models").value == list(members)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "tiny_resnet50 × 0.75" in captions and "tiny_vgg16 × 0.25" in captions

    upload(at, clips["face"])
    result = current(at).result
    assert result.models == list(members)
    assert result.ensemble == {"kind": "fitted", "weights": members}
    assert any("fitted ensemble: tiny_resnet50 × 0.75" in m for m in card_markdown(at))
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert any("weights fitted on the validation split" in m.value for m in at.markdown)
    assert any("ensemble (fitted)" in str(frame.value) for frame in at.dataframe)

    # The plain mean stays available; it is a different analysis of the same upload.
    at.switch_page("pages/analyze.py").run()
    at.sidebar.radio(key="sidebar_ensemble").set_value("mean").run()
    upload(at, clips["face"])
    assert current(at).result.ensemble["kind"] == "mean"
    assert len(at.session_state[app_state.STORE_KEY]) == 2


def test_models_page_names_cards_it_refused_and_keeps_them_out(models_dir, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    shutil.copytree(models_dir, zoo)
    card = json.loads((zoo / "tiny_vgg16.json").read_text())
    card["threshold"] = 7
    (zoo / "tiny_vgg16.json").write_text(json.dumps(card))
    (zoo / "tiny_resnet50.keras").write_bytes((zoo / "tiny_resnet50.keras").read_bytes() + b"x")
    monkeypatch.setenv(MODELS_DIR_ENV, str(zoo))
    at = new_app()
    assert "tiny_vgg16" not in at.sidebar.multiselect(key="sidebar_models").options
    at.switch_page("pages/models.py").run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("tiny_vgg16.json is not usable: threshold 7" in w for w in warnings)
    # A model whose file no longer matches its card is listed but never loaded.
    at.switch_page("pages/analyze.py").run()
    at.sidebar.multiselect(key="sidebar_models").set_value(["tiny_resnet50"]).run()
    upload(at, make_face_clip(tmp_path / "face.mp4", frames=12, size=(320, 240), face_size=120))
    assert any("does not match its card" in e.value for e in at.error)


def test_hostile_uploads_get_one_line_messages_and_the_app_stays_usable(clips, tmp_path,
                                                                        private_tempdir):
    from tests import fixtures

    at = new_app()
    huge = fixtures.make_huge_header_clip(tmp_path / "huge.mp4")
    upload(at, huge)
    [error] = at.error
    assert "16000x16000" in error.value and "max_frame_pixels" in error.value
    assert len(error.value.splitlines()) == 1 and current(at) is None

    corrupted = fixtures.make_corrupted_clip(tmp_path / "corrupted.mp4")
    upload(at, corrupted)
    assert not at.error and current(at) is not None
    assert any("could be read" in w.value or "damaged" in w.value for w in at.warning)

    upload(at, clips["face"])
    assert not at.error and current(at).upload_name == clips["face"].name
    # TensorFlow's autograph keeps the source it generates when a model is first traced (once
    # per process, not per request); anything else left here would be ours.
    left = [p.name for p in private_tempdir.iterdir()
            if not p.name.startswith("__autograph_generated_file")]
    assert upload_dirs() == [] and left == []


def test_analysis_queue_serves_in_order_and_tells_each_their_place():
    queue = app_state.AnalysisQueue(slots=1)
    order, places = [], {}
    first_inside = threading.Event()
    release = threading.Event()

    def first():
        with queue.turn():
            order.append("first")
            first_inside.set()
            release.wait(10)

    def later(name):
        with queue.turn(on_wait=lambda place: places.setdefault(name, []).append(place),
                        poll_seconds=0.02):
            order.append(name)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_inside.wait(10)
    for name in ("second", "third"):
        threads.append(threading.Thread(target=later, args=(name,)))
        threads[-1].start()
        while queue.waiting < len(threads) - 1:
            time.sleep(0.005)
    time.sleep(0.1)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "third"]
    assert places["second"][0] == 1 and places["third"][0] == 2
    assert queue.waiting == 0


def test_a_person_who_must_wait_is_told_their_place_at_once():
    queue = app_state.AnalysisQueue(slots=1)
    told = threading.Event()
    places = []

    def wait_in_line():
        # A poll far longer than the test: the place must come before the first poll ends.
        with queue.turn(lambda place: (places.append(place), told.set()), poll_seconds=600):
            pass

    with queue.turn():
        waiting = threading.Thread(target=wait_in_line)
        waiting.start()
        assert told.wait(30)
    waiting.join(30)
    assert places[0] == 1 and not waiting.is_alive()


def test_a_failed_analysis_frees_its_place():
    queue = app_state.AnalysisQueue(slots=1)
    with pytest.raises(RuntimeError):
        with queue.turn():
            raise RuntimeError("broken video")
    ticket = queue.join()
    assert queue.position(ticket) == 0          # admitted at once: the slot was given back
    queue.leave(ticket)
    with pytest.raises(ValueError):
        app_state.AnalysisQueue(slots=0)


def test_another_sessions_script_run_keeps_keras_state(analysed):
    """Streamlit clears the Keras session after every script run, for apps that build models in
    the script; app.cache stops that: a session's run must not reset Keras' state under an .h5
    import running in another session."""
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("deepfake_detector_probe", "kept")
    new_app()
    assert global_state.get_global_attribute("deepfake_detector_probe") == "kept"
