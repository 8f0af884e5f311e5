"""The one place the app caches objects for the whole server process: the workers that analyse
uploads (serving; the server itself loads no model for them), and, for what must run in the
server (the webcam's frames, Grad-CAM heatmaps, evaluations started on the Models page), the face
detector and each classifier, loaded once on first use and shared by every browser session (the
core's Classifier serialises predict with a lock; FaceDetector is thread-safe)."""
from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

import app_state
from core import zoo
from core.ensemble import EnsembleCard
from core.faces import FaceDetector
from core.model_store import Classifier, ModelCard, load_classifier
from core.pipeline import make_detector
from core.settings import AnalysisSettings
from core.threads import limit_threads
from serving import service
from serving.protocol import AnalysisRequest

MODELS_DIR_ENV = "DEEPFAKE_MODELS_DIR"
THREADS_ENV = "DEEPFAKE_TF_THREADS"


def _leave_a_core_for_serving() -> None:
    """TensorFlow takes every core for one analysis by default; then the server has none left
    to send pages to anyone else. One core stays free (of two): analyses take a little longer,
    a newcomer's page does not wait behind them. Only possible before TensorFlow's first op."""
    threads = int(os.environ.get(THREADS_ENV) or max(1, (os.cpu_count() or 2) - 1))
    limit_threads(threads)   # False when this process already ran TensorFlow: keep what it has


def _keep_keras_state_between_runs() -> None:
    """Streamlit ends every script run by clearing the Keras session, for apps that build models
    in their script. This app builds none: its models are cached resources that every session
    shares, and the clearing, run whenever any session's script ends, emptied TensorFlow's kernel
    cache under a running analysis (its next batch took 0.31 s a model instead of 0.07 s) and held
    the GIL for a full garbage collection, stalling every other session's page. Streamlit's other
    clean-up (matplotlib's figures) is kept."""
    from streamlit.runtime.scriptrunner import script_runner

    if not hasattr(script_runner, "_clean_problem_modules"):
        return      # a Streamlit that no longer does it

    def clean_problem_modules_but_keras() -> None:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    script_runner._clean_problem_modules = clean_problem_modules_but_keras


def _freeze_what_is_loaded() -> None:
    """Streamlit runs a full garbage collection after every script run. With TensorFlow and the
    models in memory that scanned ~580,000 objects for 0.3 s with the GIL held, and every page
    being sent meanwhile stopped. What is alive after a load is the server's for good, so it is
    moved out of the collector's sight. Loads are rare and take seconds: each first thaws and
    collects everything, so a model the cache dropped is not kept frozen forever."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


_keep_keras_state_between_runs()
_freeze_what_is_loaded()


def models_dir() -> Path:
    """The model zoo folder: $DEEPFAKE_MODELS_DIR, else the repository's models/."""
    return Path(os.environ.get(MODELS_DIR_ENV) or zoo.DEFAULT_MODELS_DIR)


def _folder_version(folder: Path) -> int:
    """Changes whenever a file in the folder is added, removed or renamed into place."""
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(ttl=120, show_spinner=False)
def _zoo_listing(folder: str, version: int) -> dict[str, ModelCard]:
    return zoo.available_models(folder)


def list_models() -> dict[str, ModelCard]:
    """name -> card of every model in the zoo folder (re-read when the folder changes, at most
    every two minutes otherwise, or right after `forget_model_listing`)."""
    folder = models_dir()
    return _zoo_listing(str(folder), _folder_version(folder))


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
    return _fitted_ensemble(str(folder), _folder_version(folder))


def ensemble_for(mode: str) -> EnsembleCard | None:
    return fitted_ensemble() if mode == "fitted" else None


@st.cache_resource(show_spinner="Loading the face detector...", max_entries=4)
def _detector(min_confidence: float, detect_long_side: int, min_face_size: int) -> FaceDetector:
    _leave_a_core_for_serving()
    loaded = make_detector(AnalysisSettings(min_confidence=min_confidence,
                                            detect_long_side=detect_long_side,
                                            min_face_size=min_face_size))
    _freeze_what_is_loaded()
    return loaded


def detector(settings: AnalysisSettings) -> FaceDetector:
    return _detector(settings.min_confidence, settings.detect_long_side, settings.min_face_size)


# Keyed by the card's sha256 too, so a model re-imported under the same name is loaded afresh.
@st.cache_resource(show_spinner="Loading a model...", max_entries=16)
def _classifier(card_path: str, sha256: str) -> Classifier:
    _leave_a_core_for_serving()
    loaded = load_classifier(card_path)
    _freeze_what_is_loaded()
    return loaded


def classifiers(names: Sequence[str]) -> list[Classifier]:
    """The named models, loaded once per server process. Raises ModelNotFoundError for a name
    not in the zoo and ModelError for a file that does not load."""
    cards = zoo.resolve_selection(list(names), models_dir())
    return [_classifier(str(card.card_path), card.sha256) for card in cards]


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
