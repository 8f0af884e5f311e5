"""An upload and its analysis as the app keeps it: what the app hands a worker (`Upload`), what
comes back (`StoredAnalysis`, under `result_key`: file content + settings + models), and the
worker's analysing of an upload in a temporary folder that is gone before it returns
(`analyze_upload`). The app's session state (app.state) keeps these; the worker (`analyst`)
makes them, and `protocol` carries them between the two."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.media.image import annotated_file_name
from core.results import AnalysisResult
from core.settings import AnalysisSettings


@dataclass(frozen=True)
class Upload:
    """The video or photo a person gave the app, kept so Compare can rerun it with other
    models."""
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
    annotated_jpeg: bytes | None = None       # a photo's annotated copy


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def result_key(digest: str, settings: AnalysisSettings, model_names: Sequence[str],
               ensemble: str = "fitted") -> str:
    settings_part = json.dumps(settings.to_dict(), sort_keys=True)
    return f"{digest}|{settings_part}|{','.join(model_names)}|{ensemble}"


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
    progress=...)`, keep the annotated copy's bytes (MP4 for a video, JPEG for a photo), and
    remove the folder before returning (also when the analysis raises)."""
    with tempfile.TemporaryDirectory(prefix="deepfake-upload-") as folder:
        # The core's messages name the file, so it keeps the name the person knows it by.
        video_path = Path(folder) / safe_file_name(upload.name)
        video_path.write_bytes(upload.data)
        annotated_path = Path(folder) / annotated_file_name(video_path, "upload")
        result = analyze(video_path, annotated_path=annotated_path, progress=progress)
        annotated = annotated_path.read_bytes() if annotated_path.is_file() else None
    # The paths inside the result pointed into the folder just removed; reports name the upload.
    result.annotated_video = result.annotated_image = None
    result.video = dataclasses.replace(result.video, path=upload.name)
    photo = result.kind == "image"
    return StoredAnalysis(
        key=result_key(upload.content_hash, settings, model_names, ensemble),
        upload_name=upload.name, content_hash=upload.content_hash, result=result,
        annotated_mp4=None if photo else annotated, annotated_jpeg=annotated if photo else None)
