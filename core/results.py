"""The one result object of an analysis, and its JSON and CSV forms."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING

from .settings import AnalysisSettings
from .verdicts.views import ORIGINAL

if TYPE_CHECKING:      # core.media.video needs PyAV; results are also read where none is decoded
    from .media.video import VideoInfo

ENSEMBLE = "ensemble"
NO_FACE = "NO_FACE"


@dataclass
class FaceResult:
    frame_index: int
    time: float
    person_id: int
    box: tuple[float, float, float, float]
    confidence: float
    raw: dict[str, float]      # network output P(fake) per model, the mean over the views
    scores: dict[str, float]   # calibrated P(fake) per model, plus the ensemble
    # calibrated P(fake) of each view of the face (core.verdicts.views) per model and the ensemble
    views: dict[str, dict[str, float]] = field(default_factory=dict)


def scored_views(faces_views: Iterable[dict[str, dict[str, float]]]) -> dict[str, list[str]]:
    """The views (besides the face as found) each model scored on any face, from the faces'
    `views` (AnalysisSettings.views, views_on; with views_per_face "one" each face holds one)."""
    seen: dict[str, dict[str, None]] = {}
    for face_views in faces_views:
        for name, views in face_views.items():
            seen.setdefault(name, {}).update((v, None) for v in views if v != ORIGINAL)
    return {name: list(views) for name, views in seen.items()}


@dataclass
class PersonResult:
    id: int
    frames: list[int]
    scores: dict[str, float]   # aggregated calibrated P(fake) per model and ensemble
    label: str                 # from the primary model


@dataclass
class ModelVerdict:
    model: str
    probability: float | None  # None when no face was found
    label: str                 # REAL, FAKE, UNCERTAIN or NO_FACE
    seconds: float = 0.0       # time spent in this model's classifier
    # why the verdict is UNCERTAIN although P(fake) is outside the band, for a person to read
    reasons: list[str] = field(default_factory=list)


@dataclass
class AnalysisResult:
    video: VideoInfo
    settings: AnalysisSettings
    models: list[str]
    primary: str
    sampled: list[tuple[int, float]]           # (frame_index, time) of each sampled frame
    faces: list[FaceResult]
    persons: list[PersonResult]
    verdicts: dict[str, ModelVerdict]
    timings: dict[str, float]
    annotated_video: str | None = None
    annotated_image: str | None = None         # a photo's annotated copy (JPEG)
    # What ENSEMBLE means here: {"kind": "fitted" | "mean", "weights": {model: weight}}.
    ensemble: dict = field(default_factory=dict)
    # What could not be read (damaged packets, frames that would not decode), for a person.
    warnings: list[str] = field(default_factory=list)
    # Kept in memory for the app's gallery, never serialised: images are large.
    stills: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    crops: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def verdict(self) -> ModelVerdict:
        return self.verdicts[self.primary]

    @property
    def kind(self) -> str:
        """What was analysed: "video", or "image" for a photo."""
        return self.video.kind

    @property
    def no_face(self) -> bool:
        return not self.faces

    @property
    def scored_views(self) -> dict[str, list[str]]:
        return scored_views(f.views for f in self.faces)

    def person_timeline(self, model: str | None = None) -> dict[int, list[tuple[float, float]]]:
        """Per person, (time, calibrated P(fake)) for each sampled frame it appears in."""
        model = model or self.primary
        timeline: dict[int, list[tuple[float, float]]] = {}
        for face in self.faces:
            timeline.setdefault(face.person_id, []).append((face.time, face.scores[model]))
        return timeline

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "video": self.video.to_dict(),
            "settings": self.settings.to_dict(),
            "models": list(self.models),
            "primary": self.primary,
            "verdict": asdict(self.verdict),
            "no_face": self.no_face,
            "verdicts": {name: asdict(v) for name, v in self.verdicts.items()},
            "persons": [asdict(p) for p in self.persons],
            "faces": [asdict(f) for f in self.faces],
            "sampled": [list(s) for s in self.sampled],
            "timings": dict(self.timings),
            "annotated_video": self.annotated_video,
            "annotated_image": self.annotated_image,
            "ensemble": dict(self.ensemble),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, report: dict) -> "AnalysisResult":
        """The result a `to_dict` report describes (without the in-memory images)."""
        from .media.video import VideoInfo

        return cls(
            video=VideoInfo(**report["video"]),
            settings=AnalysisSettings.from_dict(report["settings"]),
            models=list(report["models"]), primary=report["primary"],
            sampled=[(int(i), float(t)) for i, t in report["sampled"]],
            faces=[FaceResult(**{**f, "box": tuple(f["box"])}) for f in report["faces"]],
            persons=[PersonResult(**p) for p in report["persons"]],
            verdicts={name: ModelVerdict(**v) for name, v in report["verdicts"].items()},
            timings=dict(report["timings"]), annotated_video=report.get("annotated_video"),
            annotated_image=report.get("annotated_image"),
            ensemble=dict(report.get("ensemble") or {}),
            warnings=list(report.get("warnings") or []))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def faces_csv(self) -> str:
        """One row per face: the input and its kind, frame, person, box, and raw and calibrated
        score per model."""
        score_names = [*self.models, ENSEMBLE]
        header = ["video", "kind", "frame_index", "time", "person_id", "x1", "y1", "x2", "y2",
                  "confidence"]
        header += [f"raw_{m}" for m in self.models] + [f"p_{m}" for m in score_names]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for face in self.faces:
            writer.writerow(
                [Path(self.video.path).name, self.kind, face.frame_index, f"{face.time:.3f}", face.person_id]
                + [f"{v:.1f}" for v in face.box]
                + [f"{face.confidence:.4f}"]
                + [f"{face.raw[m]:.6f}" for m in self.models]
                + [f"{face.scores[m]:.6f}" for m in score_names]
            )
        return buffer.getvalue()

    def save(self, out_dir: Path, stem: str | None = None) -> tuple[Path, Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or Path(self.video.path).stem
        json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
        json_path.write_text(self.to_json())
        csv_path.write_text(self.faces_csv())
        return json_path, csv_path
