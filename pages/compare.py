"""Compare: the same video or photo through every model and the ensemble, side by side."""
from __future__ import annotations

import streamlit as st

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from app import views as app_views
from core.errors import DetectorError
from core.results import ENSEMBLE

app_entry.require_entry(__file__)

st.title("Compare models")
store = app_state.result_store(st.session_state)
entry = store.current
if entry is None:
    st.info("Analyse a video or photo on the Analyze page first; every model's view of it "
            "appears here.")
    st.page_link("pages/analyze.py", label="Go to Analyze", icon=":material/movie:")
    st.stop()

zoo_cards = app_cache.list_models()
missing = [name for name in zoo_cards if name not in entry.result.models]
upload = st.session_state.get(app_state.UPLOAD_KEY)
if missing and upload is not None and upload.content_hash == entry.content_hash:
    st.info(f"This analysis used {len(entry.result.models)} of the {len(zoo_cards)} models "
            f"(not {', '.join(missing)}).")
    if st.button(f"Analyse with all {len(zoo_cards)} models", key="compare_all"):
        settings = app_state.session_settings(st.session_state)
        names = list(zoo_cards)
        mode = app_state.session_ensemble_mode(st.session_state)
        known = store.get(app_state.result_key(upload.content_hash, settings, names, mode))
        if known is None:
            bar = st.progress(0.0, text="Analysing with every model")
            try:
                store.put(app_cache.analyze_upload(
                    upload, names, settings, ensemble_mode=mode,
                    progress=lambda stage, fraction: bar.progress(
                        fraction, text=app_views.STAGE_TEXT[stage]),
                    on_wait=lambda place: bar.progress(0.0, text=app_views.queue_text(place))))
            except DetectorError as error:
                st.error(str(error))
            bar.empty()
        entry = store.current

result = entry.result
names = [*result.models, ENSEMBLE]
photo = result.kind == "image"
pictures = "the photo" if photo else f"{len(result.sampled)} sampled frames"
st.caption(f"{entry.upload_name}: {len(result.models)} models and their ensemble, "
           f"{len(result.faces)} faces in {pictures}.")
st.markdown(app_views.ensemble_text(result.ensemble))

per_row = 3
for start in range(0, len(names), per_row):
    for column, name in zip(st.columns(per_row), names[start:start + per_row]):
        verdict = result.verdicts[name]
        backbone = (zoo_cards[name].backbone if name in zoo_cards
                    else app_views.ensemble_kind_text(result.ensemble))
        with column:
            st.markdown(app_views.verdict_card_html(
                f"{name} ({backbone})", verdict.label, verdict.probability,
                seconds=verdict.seconds), unsafe_allow_html=True)

if result.no_face:
    st.warning(f"No face found in this {'photo' if photo else 'video'}, so no model has anything "
               "to score.")
    st.stop()

st.subheader("P(fake) per person" if photo else "P(fake) over the clip")
st.plotly_chart(app_views.scores_figure(result, models=names, height=420), key="compare_timeline")

left, right = st.columns(2)
with left:
    st.subheader("Agreement")
    st.caption("Share of faces on which two models give the same label.")
    st.plotly_chart(app_views.agreement_figure(*app_views.agreement_matrix(result)),
                    key="compare_agreement")
with right:
    st.subheader("Time per model")
    st.caption(f"Classifier time on this {'photo' if photo else 'video'}'s faces.")
    st.plotly_chart(app_views.seconds_figure(result), key="compare_seconds")

st.subheader("Validation metrics (from the model cards)")
st.dataframe(app_views.card_rows(zoo_cards[n] for n in result.models if n in zoo_cards),
             hide_index=True)
fitted = app_cache.fitted_ensemble()
if fitted is not None:
    st.caption("The fitted ensemble, measured on the split its weights were fitted on "
               "(optimistic for that reason):")
    st.dataframe([app_views.ensemble_card_row(fitted)], hide_index=True)
