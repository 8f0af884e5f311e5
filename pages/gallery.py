"""Gallery: the sampled frames (or the photo) with their boxes and every face crop, filterable,
with Grad-CAM."""
from __future__ import annotations

import streamlit as st

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from app import views as app_views
from core.errors import DetectorError
from core.models.gradcam import overlay
from core.verdicts.verdict import LABELS

app_entry.require_entry(__file__)

COLUMNS = 4

st.title("Gallery")
entry = app_state.result_store(st.session_state).current
if entry is None:
    st.info("Analyse a video or photo on the Analyze page first; its frames and faces appear "
            "here.")
    st.page_link("pages/analyze.py", label="Go to Analyze", icon=":material/movie:")
    st.stop()

result = entry.result
photo = result.kind == "image"
pictures = "the photo" if photo else f"{len(result.stills)} sampled frames"
st.caption(f"{entry.upload_name}: {pictures}, {len(result.faces)} faces, "
           f"{len(result.persons)} persons. Boxes and scores are from {result.primary}.")

frame_choices = sorted(result.stills)
if photo:
    if frame_choices:
        st.image(result.stills[frame_choices[0]], caption=entry.upload_name, width="stretch")
else:
    # A clicked timeline point opens its frame; the select box below does the same by hand.
    if result.faces:
        event = st.plotly_chart(app_views.timeline_figure(result, height=300),
                                key="gallery_timeline", on_select="rerun",
                                selection_mode="points")
        clicked = app_views.clicked_frame(event)
        # Only a new click moves the frame, so the slider stays free while a point is selected.
        if clicked in frame_choices and st.session_state.get("gallery_clicked") != clicked:
            st.session_state["gallery_frame"] = clicked
        st.session_state["gallery_clicked"] = clicked
    if frame_choices:
        time_of = dict(result.sampled)
        if st.session_state.get("gallery_frame") not in frame_choices:
            st.session_state["gallery_frame"] = frame_choices[0]
        frame_index = st.select_slider(
            "Frame", frame_choices, key="gallery_frame",
            format_func=lambda i: f"{i} ({time_of.get(i, 0.0):.2f} s)")
        st.image(result.stills[frame_index], caption=f"frame {frame_index} at "
                 f"{time_of.get(frame_index, 0.0):.2f} s", width="stretch")

st.subheader("Faces")
if result.no_face:
    st.warning(f"No face found in this {'photo' if photo else 'video'}.")
    st.stop()

person_ids = sorted({face.person_id for face in result.faces})
filters = st.columns([2, 2, 2, 2])
with filters[0]:
    persons = st.multiselect("Persons", person_ids, default=person_ids, key="gallery_persons",
                             format_func=lambda p: f"person {p}")
with filters[1]:
    labels = st.multiselect("Verdicts", list(LABELS), default=list(LABELS), key="gallery_labels")
with filters[2]:
    order = st.selectbox("Sort", app_views.SORT_ORDERS, key="gallery_order")
with filters[3]:
    heatmap_model = st.selectbox("Grad-CAM model", ["(off)", *result.models], key="gallery_gradcam",
                                 help="Colours the parts of each face that raised this model's "
                                      "P(fake): red most, blue least.")

faces = app_views.gallery_faces(result, persons=persons, labels=labels, order=order)
shown = faces[:st.number_input("Faces shown", 4, 400, 24, step=4, key="gallery_limit")]
if not shown:
    st.info("No face matches these filters.")
    st.stop()

# Heatmaps are computed once per model and face of the analysis shown, by a worker, for all the
# faces shown at once.
if st.session_state.get("gallery_heatmaps_of") != entry.key:
    st.session_state["gallery_heatmaps_of"] = entry.key
    st.session_state["gallery_heatmaps"] = {}
heatmaps = st.session_state["gallery_heatmaps"]
if heatmap_model != "(off)":
    missing = [(heatmap_model, face.frame_index, face.person_id) for face in shown
               if (heatmap_model, face.frame_index, face.person_id) not in heatmaps
               and (face.frame_index, face.person_id) in result.crops]
    if missing:
        try:
            with st.spinner(f"Computing Grad-CAM heatmaps of {heatmap_model}..."):
                computed = app_cache.gradcam_heatmaps(
                    heatmap_model, [result.crops[key[1:]] for key in missing])
            heatmaps.update(zip(missing, computed))
        except DetectorError as error:
            st.error(f"Grad-CAM: {error}")

for row_start in range(0, len(shown), COLUMNS):
    for column, face in zip(st.columns(COLUMNS), shown[row_start:row_start + COLUMNS]):
        crop = result.crops.get((face.frame_index, face.person_id))
        if crop is None:
            continue
        heatmap = heatmaps.get((heatmap_model, face.frame_index, face.person_id))
        if heatmap is not None:
            crop = overlay(crop, heatmap)
        where = "" if photo else f" · frame {face.frame_index} · {face.time:.2f} s"
        with column:
            st.image(crop, width="stretch",
                     caption=f"person {face.person_id}{where} · {face.label} {face.score:.2f}")
if len(faces) > len(shown):
    st.caption(f"{len(faces) - len(shown)} more faces match; raise 'Faces shown' to see them.")
