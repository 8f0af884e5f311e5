"""The worker's side of an analysis: the scan's `VideoScanner` (the detector and the models
loaded once) for the models a session chose, and the upload analysed in a temporary folder that
is gone before the reply is sent."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import app_state
from core.scan.scanner import ScannerConfig, VideoScanner
from core.settings import AnalysisSettings

from .protocol import AnalysisRequest, Blobs, encode_analysis

# Model selections kept loaded at once: the default pair and, say, Compare's all-models run.
KEPT_SELECTIONS = 2


def _detector_settings(settings: AnalysisSettings) -> AnalysisSettings:
    """The part of the settings a scanner's detector is built with; the rest is per request."""
    defaults = AnalysisSettings()
    return replace(defaults, min_confidence=settings.min_confidence,
                   detect_long_side=settings.detect_long_side,
                   min_face_size=settings.min_face_size)


class Analyst:
    def __init__(self, models_dir: str | None = None):
        self.models_dir = models_dir
        self._scanners: OrderedDict[ScannerConfig, VideoScanner] = OrderedDict()

    def config(self, request: AnalysisRequest) -> ScannerConfig:
        settings = AnalysisSettings.from_dict(request.settings)
        return ScannerConfig(models=",".join(request.models) or "default",
                             models_dir=self.models_dir, ensemble=request.ensemble,
                             settings=_detector_settings(settings))

    def is_loaded(self, request: AnalysisRequest) -> bool:
        return self.config(request) in self._scanners

    def scanner(self, request: AnalysisRequest) -> VideoScanner:
        config = self.config(request)
        if config not in self._scanners:
            while len(self._scanners) >= KEPT_SELECTIONS:
                self._scanners.popitem(last=False)
            self._scanners[config] = VideoScanner(config)
        self._scanners.move_to_end(config)
        return self._scanners[config]

    def analyze(self, request: AnalysisRequest,
                progress: Callable[[str, float], None] | None = None) -> tuple[dict, Blobs]:
        """The reply for one request: the analysis encoded (protocol.encode_analysis).
        Raises what the analysis raises."""
        return encode_analysis(self.analyze_entry(request, progress))

    def analyze_entry(self, request: AnalysisRequest,
                      progress: Callable[[str, float], None] | None = None
                      ) -> app_state.StoredAnalysis:
        """The analysis of one request as the app stores it."""
        if progress is not None and not self.is_loaded(request):
            progress("load", 0.0)
        scanner = self.scanner(request)
        settings = AnalysisSettings.from_dict(request.settings)
        upload = app_state.Upload(request.upload_name, request.data, request.content_hash)

        def analyze(path, **options):
            return scanner.analyze(path, settings, **options)

        return app_state.analyze_upload(upload, analyze, settings, scanner.model_names,
                                        progress, ensemble=request.ensemble)
