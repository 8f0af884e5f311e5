"""What the app keeps per browser session, as plain Python (no Streamlit import): the sidebar's
settings, the analyses already done (keyed by file content + settings + models, so moving between
pages never recomputes), and running one analysis on an upload without leaving files behind."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import VideoError
from core.results import AnalysisResult
from core.settings import AnalysisSettings

SETTINGS_KEY = "analysis_settings"
MODELS_KEY = "selected_models"
ENSEMBLE_KEY = "ensemble_mode"        # "fitted" (models/ensemble.json) or "mean"
STORE_KEY = "analyses"
UPLOAD_KEY = "current_upload"

VIDEO_TYPES = ("mp4", "mov", "avi", "mkv", "webm")
# Each stored analysis holds its gallery images (~3 MB a still); a few per session is plenty.
MAX_STORED_ANALYSES = 3


class UploadTooLargeError(VideoError):
    pass


@dataclass(frozen=True)
class Upload:
    """The video a person gave the app, kept so Compare can rerun it with other models."""
    name: str
    data: bytes
    content_hash: str


@dataclass
class StoredAnalysis:
    key: str
    upload_name: str
    content_hash: str
    result: AnalysisResult
    annotated_mp4: bytes | None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def result_key(digest: str, settings: AnalysisSettings, model_names: Sequence[str],
               ensemble: str = "fitted") -> str:
    settings_part = json.dumps(settings.to_dict(), sort_keys=True)
    return f"{digest}|{settings_part}|{','.join(model_names)}|{ensemble}"


def session_ensemble_mode(state: MutableMapping) -> str:
    return state.get(ENSEMBLE_KEY) or "fitted"


class ResultStore:
    """Analyses of one session, most recent last, at most `capacity` of them. `current` is the
    one every page shows."""

    def __init__(self, capacity: int = MAX_STORED_ANALYSES):
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredAnalysis] = OrderedDict()
        self.current_key: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> StoredAnalysis | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.current_key = key
        return entry

    def put(self, entry: StoredAnalysis) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        self.current_key = entry.key

    @property
    def current(self) -> StoredAnalysis | None:
        return self._entries.get(self.current_key) if self.current_key else None

    def clear_current(self) -> None:
        self.current_key = None


def result_store(state: MutableMapping) -> ResultStore:
    if STORE_KEY not in state:
        state[STORE_KEY] = ResultStore()
    return state[STORE_KEY]


def session_settings(state: MutableMapping) -> AnalysisSettings:
    return state.get(SETTINGS_KEY) or AnalysisSettings()


def check_upload_size(name: str, size_bytes: int, limit_mb: int) -> None:
    if size_bytes > limit_mb * 1024 * 1024:
        raise UploadTooLargeError(
            f"{name} is {size_bytes / 1024 / 1024:.1f} MB; the limit is {limit_mb} MB")


def safe_file_name(name: str) -> str:
    """The upload's own name without folders or characters a file system may refuse."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "upload"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "", Path(name).suffix.lower()) or ".mp4"
    return f"{stem[:100]}{suffix}"


def analyze_upload(
    upload: Upload,
    analyze: Callable[..., AnalysisResult],
    settings: AnalysisSettings,
    model_names: Sequence[str],
    progress: Callable[[str, float], None] | None = None,
    ensemble: str = "fitted",
) -> StoredAnalysis:
    """Write the upload into a temporary folder, analyse it with `analyze(path, annotated_path=...,
    progress=...)`, keep the annotated MP4's bytes, and remove the folder before returning (also
    when the analysis raises)."""
    with tempfile.TemporaryDirectory(prefix="deepfake-upload-") as folder:
        # The core's messages name the file, so it keeps the name the person knows it by.
        video_path = Path(folder) / safe_file_name(upload.name)
        video_path.write_bytes(upload.data)
        annotated_path = Path(folder) / "annotated.mp4"
        result = analyze(video_path, annotated_path=annotated_path, progress=progress)
        annotated = annotated_path.read_bytes() if annotated_path.is_file() else None
    # The paths inside the result pointed into the folder just removed; reports name the upload.
    result.annotated_video = None
    result.video = dataclasses.replace(result.video, path=upload.name)
    return StoredAnalysis(
        key=result_key(upload.content_hash, settings, model_names, ensemble),
        upload_name=upload.name, content_hash=upload.content_hash, result=result,
        annotated_mp4=annotated)
