"""Entry point: page config, navigation over pages/, and the sidebar whose settings every page uses."""
from __future__ import annotations

# aiortc's SRTP library (under streamlit-webrtc) crashes the process when it is first loaded
# after TensorFlow, which app.cache brings in; loading it first avoids that.
import pylibsrtp  # noqa: F401
import streamlit as st

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from app import views as app_views
from core.verdicts.ensemble import weights_text
from core.settings import AnalysisSettings
from core.verdicts.views import VIEW_NAMES, VIEW_TEXT, parse_views
from core.verdicts.verdict import RULES

st.set_page_config(page_title="Deepfake detector", page_icon=":material/face_retouching_off:",
                   layout="wide")

PAGES = [
    st.Page("pages/analyze.py", title="Analyze", icon=":material/movie:", default=True),
    st.Page("pages/gallery.py", title="Gallery", icon=":material/photo_library:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
    st.Page("pages/live.py", title="Live", icon=":material/videocam:"),
]
page = st.navigation(PAGES)
app_entry.entry_ran(PAGES)

RULE_HELP = {
    "confident": "the DFDC winner's rule: a few confidently fake frames outweigh many unsure ones",
    "mean": "plain mean of the frame scores (the origin project's rule)",
    "fakest_face": "per frame the most suspicious face, then the mean over frames",
}
defaults = AnalysisSettings()

# The widgets sit in a popover: its content is drawn in the browser only when opened, so a
# newcomer's page does not wait for the slider, multiselect, radio and selectbox code (about
# 0.5 s of the Analyze page's 2 s load here); the summary above it says what will run.
with st.sidebar:
    st.header("Settings")
    summary = st.container()
    available = list(app_cache.list_models())
    fitted = app_cache.fitted_ensemble()
    selected: list[str] = []
    ensemble_mode = "mean"
    with st.popover("Change settings", icon=":material/tune:", width="stretch"):
        if available:
            if fitted is not None:
                ensemble_mode = st.radio(
                    "Ensemble", ["fitted", "mean"], key="sidebar_ensemble", horizontal=True,
                    format_func={"fitted": "fitted weights", "mean": "plain mean"}.get,
                    help="fitted: weights chosen on the validation split (models/ensemble.json); "
                         "plain mean: every chosen model counts the same.")
            default = (fitted.members if ensemble_mode == "fitted" and fitted is not None
                       else available)
            selected = st.multiselect("Models", available, default=default, key="sidebar_models",
                                      help="The models that run; the ensemble combines them.")
        frames = st.slider("Frames to sample", 4, 96, defaults.frames, step=4,
                           key="sidebar_frames", help="Evenly spaced over the whole clip.")
        rule = st.selectbox("Aggregation rule", RULES, index=RULES.index(defaults.rule),
                            key="sidebar_rule", format_func=lambda r: r.replace("_", " "),
                            help="; ".join(f"{r}: {text}" for r, text in RULE_HELP.items()))
        band = st.slider("Uncertain band around 0.5", 0.0, 0.3, defaults.band, step=0.01,
                         key="sidebar_band",
                         help="Scores within this distance of 0.5 are UNCERTAIN.")
        views = st.multiselect("Also score each face as", list(VIEW_NAMES),
                               default=list(parse_views(defaults.views)), key="sidebar_views",
                               format_func=lambda v: VIEW_TEXT[v],
                               help="A face's P(fake) is the mean over its views; when they lead "
                                    "to different verdicts, the verdict is UNCERTAIN and says why.")
        views_on = ("all" if st.checkbox(
            "Score the views with every model", value=defaults.views_on == "all",
            key="sidebar_views_on",
            help="Off: only the models that make the verdict score the views, and the others "
                 "are compared on the faces as found, at a third of the cost.") else "verdict")
        views_per_face = ("one" if st.checkbox(
            "Each face seen one way, in turn", value=defaults.views_per_face == "one",
            key="sidebar_views_per_face",
            help="On: a person's faces in a clip take the ways in turn (as found, then each view "
                 "above), so every way still reads the clip, at a third of the cost with two "
                 "views. Off: every face seen every way. A photo's face is always seen every "
                 "way.") else "all")
        with st.expander("Face detector"):
            min_confidence = st.slider("Minimum face confidence", 0.50, 0.99,
                                       defaults.min_confidence, step=0.01,
                                       key="sidebar_min_confidence")
            detect_long_side = st.select_slider("Detection image long side (px)",
                                                [320, 480, 640, 960, 1280],
                                                defaults.detect_long_side,
                                                key="sidebar_detect_long_side")
            min_face_size = st.slider("Smallest face (px)", 20, 160, defaults.min_face_size,
                                      step=4, key="sidebar_min_face_size")
    settings = AnalysisSettings(
        frames=frames, rule=rule, band=band, min_confidence=min_confidence,
        detect_long_side=detect_long_side, min_face_size=min_face_size, views=",".join(views),
        views_on=views_on, views_per_face=views_per_face)
    with summary:
        if not available:
            st.warning("No models in the zoo. Import one on the Models page.")
        elif ensemble_mode == "fitted" and fitted is not None:
            missing = [m for m in fitted.members if m not in selected]
            if missing:
                st.warning(f"The fitted ensemble needs {', '.join(missing)}; without it the "
                           "verdict is the plain mean of the chosen models.")
            else:
                st.caption("Counts in the verdict: " + weights_text(fitted.weights)
                           + (f"; {len(selected) - len(fitted.members)} other model(s) run for "
                              "comparison only" if len(selected) > len(fitted.members) else ""))
        else:
            st.caption("Ensemble: the plain mean of the chosen models"
                       + ("" if fitted is not None else " (this zoo has no fitted weights)") + ".")
        if available:
            st.caption("Models: " + (", ".join(selected) or "none chosen"))
        st.caption(app_views.settings_text(settings))

st.session_state[app_state.SETTINGS_KEY] = settings
st.session_state[app_state.MODELS_KEY] = list(selected)
st.session_state[app_state.ENSEMBLE_KEY] = ensemble_mode

page.run()
