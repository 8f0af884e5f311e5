"""Analyze: upload a video or a photo, watch the stages, read the verdict, see and download the
annotated copy and the reports."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from app import views as app_views
from core.errors import DetectorError

app_entry.require_entry(__file__)

st.title("Analyze a video or photo")
st.caption("Upload a clip or a photo; faces are found (in a clip's evenly spaced frames), scored "
           "by each model, and combined into one verdict. Settings are in the sidebar.")

settings = app_state.session_settings(st.session_state)
model_names = st.session_state.get(app_state.MODELS_KEY, [])
ensemble_mode = app_state.session_ensemble_mode(st.session_state)
store = app_state.result_store(st.session_state)

uploaded = st.file_uploader(
    "Video or photo", type=[*app_state.VIDEO_TYPES, *app_state.PHOTO_TYPES], key="analyze_upload",
    help=f"Up to {st.get_option('server.maxUploadSize')} MB; photos up to "
         f"{settings.max_image_pixels / 1e6:.0f} megapixels.")

if uploaded is not None:
    try:
        app_state.check_upload_size(uploaded.name, uploaded.size,
                                    st.get_option("server.maxUploadSize"))
        hashes = st.session_state.setdefault("upload_hashes", {})
        if uploaded.file_id not in hashes:
            hashes.clear()
            hashes[uploaded.file_id] = app_state.content_hash(uploaded.getvalue())
        upload = app_state.Upload(uploaded.name, uploaded.getvalue(), hashes[uploaded.file_id])
        st.session_state[app_state.UPLOAD_KEY] = upload
        known = store.get(app_state.result_key(upload.content_hash, settings, model_names,
                                               ensemble_mode))
        if known is None:
            bar = st.progress(0.0, text="Reading the file")
            entry = app_cache.analyze_upload(
                upload, model_names, settings, ensemble_mode=ensemble_mode,
                progress=lambda stage, fraction: bar.progress(fraction, text=app_views.STAGE_TEXT[stage]),
                on_wait=lambda place: bar.progress(0.0, text=app_views.queue_text(place)))
            bar.empty()
            store.put(entry)
    except DetectorError as error:
        store.clear_current()
        st.session_state.pop(app_state.UPLOAD_KEY, None)
        st.error(str(error), icon=":material/error:")

entry = store.current
if entry is None:
    if uploaded is None:
        st.info("Upload a video (mp4, mov, avi, mkv or webm) or a photo (jpg, png, webp or bmp) "
                "to start.")
    st.stop()

result = entry.result
verdict = result.verdict
st.subheader(entry.upload_name)
st.markdown(app_views.verdict_card_html(
    app_views.verdict_title(result),
    verdict.label, verdict.probability, persons=len(result.persons), faces=len(result.faces),
    seconds=result.timings.get("total")), unsafe_allow_html=True)

for reason in verdict.reasons:
    st.warning(f"Why UNCERTAIN: {reason}.", icon=":material/help:")
for warning in result.warnings:
    st.warning(warning, icon=":material/broken_image:")
photo = result.kind == "image"
if entry.annotated_jpeg:     # a photo: the picture itself first, its scores below
    st.image(entry.annotated_jpeg, caption=f"{entry.upload_name}, annotated",
             width=app_views.photo_width(result.video.width, result.video.height),
             alt=f"{entry.upload_name}, annotated")
if result.no_face:
    where = "the photo" if photo else f"the {len(result.sampled)} sampled frames"
    st.warning(f"No face found in {where}, so there is nothing to judge. Try a lower face "
               "confidence in the sidebar" + ("." if photo else " or more frames."))
else:
    st.plotly_chart(app_views.scores_figure(result), key="analyze_scores")
    st.page_link("pages/gallery.py", label="Open the gallery of frames and faces",
                 icon=":material/photo_library:")

if entry.annotated_mp4:
    st.video(entry.annotated_mp4, format="video/mp4")

stem = Path(entry.upload_name).stem
columns = st.columns(3)
with columns[0]:
    if entry.annotated_mp4:
        st.download_button("Annotated video (MP4)", entry.annotated_mp4, f"{stem}_annotated.mp4",
                           "video/mp4", key="download_mp4")
    if entry.annotated_jpeg:
        st.download_button("Annotated photo (JPEG)", entry.annotated_jpeg,
                           f"{stem}_annotated.jpg", "image/jpeg", key="download_jpeg")
with columns[1]:
    st.download_button("Report (JSON)", result.to_json(), f"{stem}.json", "application/json",
                       key="download_json")
with columns[2]:
    st.download_button("Faces (CSV)", result.faces_csv(), f"{stem}.csv", "text/csv",
                       key="download_csv")

with st.expander("Details"):
    st.write({result.kind: result.video.to_dict(), "settings": result.settings.to_dict(),
              "models": result.models, "timings (s)": {k: round(v, 3) for k, v in result.timings.items()}})
