"""One video or photo in, its report texts out: the unit of work of both engines. A
`VideoScanner` loads the face detector and the models once and then analyses as many files as
it is given."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DetectorError, VideoError
from ..settings import AnalysisSettings
from .jobs import Outcome, ScanJob


@dataclass(frozen=True)
class ScannerConfig:
    """Everything a worker needs to build its scanner; plain values, so it pickles to Ray."""
    models: str = "default"              # 'default', 'all' or comma-separated names
    models_dir: str | None = None        # None: the shipped models/
    ensemble: str = "fitted"             # 'fitted' or 'mean'
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    # write STEM.annotated.mp4 (a photo's: .jpg) here (a path workers see)
    annotate_dir: str | None = None
    # TensorFlow threads per analysis; None keeps TensorFlow's default (every core). Scores
    # and boxes are the same to the last digit only between runs with equal thread counts:
    # oneDNN splits its sums by thread.
    threads: int | None = None

    def load(self):
        """(detector, classifiers, fitted ensemble or None)."""
        from ..pipeline import make_detector
        from ..models.zoo import DEFAULT_MODELS_DIR, fitted_ensemble, load_models

        models_dir = self.models_dir or DEFAULT_MODELS_DIR
        classifiers = load_models(self.models, models_dir)
        ensemble = fitted_ensemble(models_dir) if self.ensemble == "fitted" else None
        return make_detector(self.settings), classifiers, ensemble


class VideoScanner:
    def __init__(self, config: ScannerConfig):
        from ..threads import limit_threads

        self.config = config
        if config.threads is not None and not limit_threads(config.threads, inter=1):
            raise ValueError("--threads: TensorFlow already runs in this process with its own "
                             "thread count; set it before anything else runs")
        self.detector, self.classifiers, self.ensemble = config.load()

    @property
    def model_names(self) -> list[str]:
        return [c.name for c in self.classifiers]

    def analyze(self, path, settings: AnalysisSettings | None = None, **options):
        """One video or photo's AnalysisResult with the loaded detector and models: the
        scanner's settings, or `settings` where a caller (the app's worker) has its own per
        request (the detector's part of them must be the scanner's). Options as
        pipeline.analyze_file's."""
        from ..pipeline import analyze_file

        return analyze_file(path, self.detector, self.classifiers,
                            settings or self.config.settings, ensemble=self.ensemble, **options)

    def scan(self, job: ScanJob) -> Outcome:
        from ..media.image import annotated_file_name

        annotated = (Path(self.config.annotate_dir) / annotated_file_name(job.path, job.stem)
                     if self.config.annotate_dir else None)
        try:
            result = self.analyze(job.path, keep_images=False, annotated_path=annotated)
        except DetectorError as error:
            return Outcome(job, error=str(error), video_error=isinstance(error, VideoError))
        except Exception as error:  # noqa: BLE001 - one bad video must not end a long scan
            return Outcome(job, error=f"{type(error).__name__}: {error}")
        return Outcome(job, report_json=result.to_json(), faces_csv=result.faces_csv())
