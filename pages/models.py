"""Models: the zoo's cards, an evaluation on a labelled set on the server, and .h5 import."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from app import cache as app_cache
from app import entry as app_entry
from app import state as app_state
from app import views as app_views
from core.errors import DetectorError
from core.evaluation.data_root import DATA_ROOT_ENV, data_root, resolve_under
from core.evaluation.evaluate import evaluate, load_labels
from core.models.backbone_names import ORIGIN_BACKBONES, PREPROCESSING_MODES

app_entry.require_entry(__file__)

st.title("Models")
models_dir = app_cache.models_dir()

flash = st.session_state.pop("models_flash", None)
if flash:
    st.success(flash)

cards = app_cache.list_models()
head = st.columns([4, 1])
head[0].caption(f"{len(cards)} models in the zoo")
if head[1].button("Refresh", key="models_refresh", help="Read the models folder again."):
    app_cache.forget_model_listing()
    st.rerun()

if cards:
    st.dataframe(app_views.card_rows(cards.values()), hide_index=True)
    per_dataset = app_views.dataset_rows(cards.values(), app_cache.ensemble_for("fitted"))
    if per_dataset:
        st.caption("Validation per dataset (full pipeline, `python -m core models record-eval`): "
                   "real clips called FAKE are the costliest error.")
        st.dataframe(per_dataset, hide_index=True)
    for card in cards.values():
        with st.expander(f"{card.name} card"):
            st.json(card.to_dict(), expanded=False)
            if card.notes:
                st.caption(card.notes)
else:
    st.warning("No models yet: train one (python -m core train) or import an .h5 below.")
for card_file, reason in app_cache.refused_cards():
    st.warning(f"Left out of the zoo: {reason}", icon=":material/gpp_bad:")

st.header("Evaluate on a labelled set")
root = data_root()
if root is None:
    st.info(f"Evaluating on files of the server is off. The operator turns it on by setting "
            f"{DATA_ROOT_ENV} to a folder of labelled videos; then a CSV or DFDC folder under it "
            f"can be named here.", icon=":material/lock:")
else:
    st.caption("A CSV with path,label columns (paths relative to it) or a DFDC folder with "
               "metadata.json, under the server's data root; only files under it are read. "
               "Uses the models and settings of the sidebar.")
source = st.text_input("Labels CSV or DFDC folder, relative to the data root",
                       key="evaluate_source", placeholder="labels.csv", disabled=root is None)
split = st.text_input("Split (optional)", key="evaluate_split", disabled=root is None,
                      help="Keep only rows whose 'split' column has this value.")
if st.button("Evaluate", key="evaluate_run", disabled=root is None or not source.strip()):
    settings = app_state.session_settings(st.session_state)
    names = st.session_state.get(app_state.MODELS_KEY, [])
    mode = app_state.session_ensemble_mode(st.session_state)
    try:
        videos = load_labels(resolve_under(root, source), split=split.strip() or None, root=root)
        model_names = app_cache.model_names(names)
        bar = st.progress(0.0, text=f"0 of {len(videos)} videos")
        with app_cache.analysis_queue().turn(
                lambda place: bar.progress(0.0, text=app_views.queue_text(place))):
            report = evaluate(
                videos,
                lambda path: app_cache.analyze_server_file(path, model_names, settings, mode),
                model_names,
                on_video=lambda done, total, video: bar.progress(
                    done / total, text=f"{done} of {total} videos ({video.path.name})"),
                band=settings.band)
        bar.empty()
        st.session_state["evaluation"] = {"source": source.strip(), "report": report}
    except DetectorError as error:
        st.error(str(error))

evaluation = st.session_state.get("evaluation")
if evaluation:
    report = evaluation["report"]
    st.subheader(f"{evaluation['source']}: {len(report['videos'])} videos, {report['seconds']:.0f} s")
    st.dataframe(app_views.evaluation_rows(report), hide_index=True)
    st.plotly_chart(app_views.roc_figure(report), key="evaluate_roc")
    names = list(report["models"])
    for start in range(0, len(names), 3):
        for column, name in zip(st.columns(3), names[start:start + 3]):
            with column:
                st.plotly_chart(app_views.confusion_figure(
                    name, app_views.evaluation_confusion(report, name)), key=f"evaluate_cm_{name}")

st.header("Import an origin-project .h5")
st.caption("The weights are copied into our own architecture for the backbone; nothing in the "
           "file is executed.")
h5_file = st.file_uploader("Keras 2 .h5 model or weights", type=["h5"], key="import_h5_file")
if h5_file is not None and st.session_state.get("import_name_from") != h5_file.file_id:
    # A new file proposes its own name; the person may still change it.
    st.session_state["import_name_from"] = h5_file.file_id
    st.session_state["import_name"] = Path(h5_file.name).stem
options = st.columns(4)
backbone = options[0].selectbox("Backbone", list(ORIGIN_BACKBONES), key="import_backbone")
name = options[1].text_input("Model name", key="import_name")
input_size = options[2].number_input("Input size (px)", 32, 600, 224, key="import_input_size")
preprocessing = options[3].selectbox("Preprocessing", PREPROCESSING_MODES,
                                     index=PREPROCESSING_MODES.index("raw"), key="import_preprocessing",
                                     help="raw: the origin models took RGB [0, 255] as is.")
if st.button("Import", key="import_run", disabled=h5_file is None or not name.strip()):
    try:
        with st.spinner(f"Importing {h5_file.name} as {name.strip()}..."), \
                tempfile.TemporaryDirectory(prefix="deepfake-h5-") as folder:
            h5_path = Path(folder) / Path(h5_file.name).name
            h5_path.write_bytes(h5_file.getvalue())
            from core.models.h5_import import import_h5    # Keras: only when a model is imported

            card = import_h5(h5_path, backbone, name.strip(), models_dir,
                             input_size=int(input_size), preprocessing=preprocessing)
        app_cache.forget_model_listing()
        st.session_state["models_flash"] = f"Imported {card.name} ({card.backbone}, {card.params:,} parameters)."
        st.rerun()
    except (DetectorError, ValueError) as error:
        st.error(str(error))
