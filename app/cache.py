"""The one place the app caches objects for the whole server process: the workers that analyse
uploads, compute Grad-CAM heatmaps, run evaluations and score the webcam's frames (serving; the
server process itself loads no model and imports no TensorFlow for them), the model zoo's
listing and the analysis queue."""
from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from core.models import zoo
from core.models.model_store import ModelCard
from core.settings import AnalysisSettings
from core.verdicts.ensemble import EnsembleCard
from serving import service
from serving.protocol import AnalysisRequest

from . import state as app_state

MODELS_DIR_ENV = "DEEPFAKE_MODELS_DIR"


def _keep_keras_state_between_runs() -> None:
    """Streamlit ends every script run by clearing the Keras session, for apps that build models
    in their script. This app builds one only for an `.h5` import, and the clearing, run
    whenever any session's script ends, would reset Keras' global state under an import running
    in another session (when the models ran in the server it emptied TensorFlow's kernel cache
    under a running analysis: its next batch took 0.31 s a model instead of 0.07 s). Streamlit's
    other clean-up (matplotlib's figures) is kept."""
    from streamlit.runtime.scriptrunner import script_runner

    if not hasattr(script_runner, "_clean_problem_modules"):
        return      # a Streamlit that no longer does it

    def clean_problem_modules_but_keras() -> None:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    script_runner._clean_problem_modules = clean_problem_modules_but_keras


def _freeze_what_is_imported() -> None:
    """Streamlit runs a full garbage collection after every script run, with the GIL held, and
    every page being sent meanwhile waits (with TensorFlow and the models in the server it
    scanned ~580,000 objects for 0.3 s). What the server imported at start is its own for good,
    so it is moved out of the collector's sight."""
    gc.collect()
    gc.freeze()


_keep_keras_state_between_runs()
_freeze_what_is_imported()


def models_dir() -> Path:
    """The model zoo folder: $DEEPFAKE_MODELS_DIR, else the repository's models/."""
    return Path(os.environ.get(MODELS_DIR_ENV) or zoo.DEFAULT_MODELS_DIR)


@st.cache_data(ttl=120, show_spinner=False)
def _zoo_listing(folder: str, version: int) -> dict[str, ModelCard]:
    return zoo.available_models(folder)


def list_models() -> dict[str, ModelCard]:
    """name -> card of every model in the zoo folder (re-read when the folder changes, at most
    every two minutes otherwise, or right after `forget_model_listing`)."""
    folder = models_dir()
    return _zoo_listing(str(folder), zoo.folder_version(folder))


def refused_cards() -> list[tuple[str, str]]:
    """(card file, reason) for the zoo folder's JSON files that are not usable model cards."""
    return zoo.refused_cards(models_dir())


def forget_model_listing() -> None:
    _zoo_listing.clear()
    _fitted_ensemble.clear()


@st.cache_data(ttl=120, show_spinner=False)
def _fitted_ensemble(folder: str, version: int) -> EnsembleCard | None:
    return zoo.fitted_ensemble(folder)


def fitted_ensemble() -> EnsembleCard | None:
    """The zoo's fitted ensemble (models/ensemble.json) when it is current, else None."""
    folder = models_dir()
    return _fitted_ensemble(str(folder), zoo.folder_version(folder))


def ensemble_for(mode: str) -> EnsembleCard | None:
    return fitted_ensemble() if mode == "fitted" else None


@st.cache_resource(show_spinner=False)
def analysis_queue() -> app_state.AnalysisQueue:
    """The server's one line for analyses: as many at a time as there are worker slots
    ($DEEPFAKE_ANALYSIS_SLOTS, default one per two cores, at least one)."""
    return app_state.AnalysisQueue(service.slots())


@st.cache_resource(show_spinner=False, max_entries=2)
def _analysis_workers(folder: str):
    return service.start_workers(folder)


def analysis_workers():
    """The worker processes (or Ray actors, with $DEEPFAKE_RAY_ADDRESS) that run every upload's
    analysis, so that the server process only serves pages; started one per slot on first use
    and kept for the server's life (a worker whose server is gone sees its socket close and
    exits)."""
    return _analysis_workers(str(models_dir()))


def model_names(names: Sequence[str]) -> list[str]:
    """The zoo's names for a selection, read from the cards (no model is loaded). Raises
    ModelNotFoundError for a name not in the zoo."""
    return [card.name for card in zoo.resolve_selection(list(names), models_dir())]


def analyze_server_file(path, names: Sequence[str], settings: AnalysisSettings,
                        ensemble_mode: str = "fitted"):
    """The AnalysisResult (no images) of a file on the server (already checked to be under the
    data root), analysed by a worker where it lies. The caller holds the analysis queue's turn."""
    request = AnalysisRequest(Path(path).name, b"", "", settings.to_dict(), tuple(names),
                              ensemble_mode, path=str(path))
    return analysis_workers().report(request)


@st.cache_resource(show_spinner=False, max_entries=2)
def _live_workers(folder: str):
    return service.start_workers(folder, slots_wanted=1)


def live_scorer(settings: AnalysisSettings, names: Sequence[str], ensemble_mode: str = "fitted"):
    """A core.live scorer whose frames are scored by the Live page's own worker (shared by the
    Live sessions, apart from the uploads' workers so a camera never waits behind a queue of
    uploads)."""
    workers = _live_workers(str(models_dir()))
    request = (settings.to_dict(), tuple(names), ensemble_mode)
    return lambda frame: workers.live_frame(*request, frame)


def gradcam_heatmaps(model: str, crops: list) -> list:
    """Grad-CAM heatmaps of the named model for face crops, computed by a worker (it holds the
    models; the server loads none for this). Raises a DetectorError with one line."""
    return analysis_workers().gradcam(model, crops)


def analyze_upload(upload: app_state.Upload, names: Sequence[str], settings: AnalysisSettings,
                   progress=None, ensemble_mode: str = "fitted",
                   on_wait=None) -> app_state.StoredAnalysis:
    """Analyse an upload with the named models in a worker, in turn with the other sessions
    (on_wait(place in line) while waiting); the ensemble is the fitted one (when ensemble_mode
    is "fitted" and all its members are named) or the mean. Raises a DetectorError with one
    line for an unusable file, and a WorkerError when the worker died or hung meanwhile."""
    request = AnalysisRequest(upload.name, upload.data, upload.content_hash, settings.to_dict(),
                              tuple(names), ensemble_mode)
    with analysis_queue().turn(on_wait):
        return analysis_workers().analyze(request, progress)
