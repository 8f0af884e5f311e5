"""Live: the webcam through the face detector and the selected models, with boxes, labels and
scores drawn on the returned video and a verdict over the last few seconds."""
from __future__ import annotations

import json
import os

import av
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from core.errors import ModelError
from core.live import LiveAnalyzer, LiveSession

app_entry.require_entry(__file__)

ICE_SERVERS_ENV = "DEEPFAKE_ICE_SERVERS"   # JSON list of ICE servers, for use beyond localhost
WINDOW_SECONDS = 3.0
VERDICT_COLOURS = {"REAL": "green", "FAKE": "red", "UNCERTAIN": "orange"}


def _default_ice_servers() -> str:
    # No STUN by default: on localhost none is needed, and offline a STUN lookup stalls the
    # connection until it times out.
    return os.environ.get(ICE_SERVERS_ENV, "[]")


def _ice_servers() -> list:
    with st.expander("Connection (for a camera on another machine)"):
        text = st.text_area(
            "ICE servers (JSON)", value=_default_ice_servers(), key="live_ice_servers",
            help='Empty for localhost. For remote use e.g. [{"urls": ["stun:stun.l.google.com:19302"]}] '
                 f"and a TURN server if needed. Default from ${ICE_SERVERS_ENV}.")
        try:
            servers = json.loads(text or "[]")
            if not isinstance(servers, list) or not all(
                    isinstance(s, dict) and "urls" in s for s in servers):
                raise ValueError("expected a list of objects with a \"urls\" key")
        except ValueError as error:
            st.error(f"ICE servers ignored, not valid JSON: {error}")
            servers = []
    return servers


st.title("Live")
st.caption("Your camera, analysed as it plays: each face gets a box, the models' verdict and "
           "P(fake). The video runs at camera speed; analysis runs on as many frames as the CPU "
           f"allows, and the verdict covers the last {WINDOW_SECONDS:g} seconds.")

settings = app_state.session_settings(st.session_state)
model_names = list(st.session_state.get(app_state.MODELS_KEY) or [])
try:
    model_names = app_cache.model_names(model_names) if model_names else []
except ModelError as error:
    st.error(str(error))
    model_names = []
if not model_names:
    st.info("No model loaded: faces are boxed with the detector's confidence, no verdict is given. "
            "Add a model on the Models page.")

# One session per browser tab; the callback below only ever sees this object, never
# st.session_state, because it runs on the streaming thread.
session: LiveSession = st.session_state.setdefault(
    "live_session", LiveSession(lambda: None, config_key=None))
band = settings.band
# Frames are scored by a worker process (serving), as uploads are: the server loads no model.
scorer = app_cache.live_scorer(settings, model_names,
                               app_state.session_ensemble_mode(st.session_state))
session.configure(
    lambda: LiveAnalyzer(scorer=scorer, model_names=model_names, band=band,
                         window_seconds=WINDOW_SECONDS, views=settings.views,
                         views_per_face=settings.views_per_face),
    config_key=(tuple(model_names), app_state.session_ensemble_mode(st.session_state),
                settings.band, settings.margin, settings.views, settings.views_per_face,
                settings.min_confidence,
                settings.detect_long_side, settings.min_face_size))


def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
    annotated = session.process(frame.to_ndarray(format="rgb24"), frame.time)
    out = av.VideoFrame.from_ndarray(annotated, format="rgb24")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


ice_servers = _ice_servers()
context = webrtc_streamer(
    key="live",
    mode=WebRtcMode.SENDRECV,
    rtc_configuration={"iceServers": ice_servers},
    media_stream_constraints={"video": {"width": 640, "height": 480}, "audio": False},
    video_frame_callback=video_frame_callback,
    async_processing=True,
    video_html_attrs={"autoPlay": True, "controls": False, "muted": True,
                      "style": {"width": "100%"}},
)
playing = context.state.playing
if not playing and not context.state.signalling:
    session.stop()


@st.fragment(run_every=1.0 if playing else None)
def live_stats() -> None:
    snap = session.snapshot()
    if snap is None:
        st.info("Press START to analyse your camera. The browser will ask for permission.")
        return
    if snap.verdict_label is None:
        st.markdown(f"**Last {snap.window_seconds:g} s:** no face analysed")
    else:
        colour = VERDICT_COLOURS.get(snap.verdict_label, "gray")
        st.markdown(f"**Last {snap.window_seconds:g} s:** :{colour}[**{snap.verdict_label}**] "
                    f"P(fake) {snap.verdict_probability:.2f} over {snap.window_faces} face scores")
        for reason in snap.reasons:
            st.caption(f"Why UNCERTAIN: {reason}.")
    shown, analysed, rate, latency = st.columns(4)
    shown.metric("Frames shown", snap.frames_shown)
    analysed.metric("Frames processed", snap.frames_analyzed)
    rate.metric("Video fps", f"{snap.shown_fps:.1f}",
                help=f"Analyses per second: {snap.analysis_fps:.1f}")
    latency.metric("Analysis latency", "-" if snap.latency_ms is None else f"{snap.latency_ms:.0f} ms",
                   help="From a frame reaching the analyser to its boxes being drawn")
    if snap.faces:
        st.dataframe(
            [{"person": f.person_id, "label": f.label, "P(fake)": round(f.score, 3),
              "box": tuple(round(v) for v in f.box)} for f in snap.faces],
            hide_index=True)
    if snap.error:
        st.warning(f"Last analysis failed: {snap.error}")


live_stats()
