"""The worker's side of an analysis: the scan's `VideoScanner` (the detector and the models
loaded once) for the models a session chose, and the upload analysed in a temporary folder that
is gone before the reply is sent."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from core.scan.scanner import ScannerConfig, VideoScanner
from core.settings import AnalysisSettings

from .protocol import (AnalysisRequest, Blobs, encode_analysis, gradcam_crops,
                       heatmaps_reply, live_faces_reply, live_frame, report_reply)
from .uploads import StoredAnalysis, Upload, analyze_upload

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
        self._classifiers: dict[tuple, object] = {}   # Grad-CAM's models not in a scanner
        self._scorers: dict[tuple, object] = {}         # live frame scorers by their settings
        self._detectors: dict[AnalysisSettings, object] = {}
        self._keys: dict[ScannerConfig, tuple[int, tuple]] = {}   # config -> (zoo version, key)

    def config(self, request: AnalysisRequest) -> ScannerConfig:
        settings = AnalysisSettings.from_dict(request.settings)
        return ScannerConfig(models=",".join(request.models) or "default",
                             models_dir=self.models_dir, ensemble=request.ensemble,
                             settings=_detector_settings(settings))

    def _zoo(self) -> Path:
        from core.models.zoo import DEFAULT_MODELS_DIR

        return Path(self.models_dir or DEFAULT_MODELS_DIR)

    def _key(self, config: ScannerConfig) -> tuple:
        """A loaded selection is reused while its models' files and the fitted ensemble are the
        ones it was loaded from: a model re-imported or retrained under the same name, or a
        refitted ensemble, is loaded afresh. The cards are read again only when the zoo folder
        changed (reading them took 5 ms, on every live frame)."""
        from core.verdicts.ensemble import ENSEMBLE_CARD
        from core.models.zoo import folder_version, resolve_selection

        version = folder_version(self._zoo())
        known = self._keys.get(config)
        if known is not None and known[0] == version:
            return known[1]
        cards = resolve_selection(config.models, self._zoo())
        try:
            fitted = (self._zoo() / ENSEMBLE_CARD).stat().st_mtime_ns
        except OSError:
            fitted = None
        key = config, tuple(card.sha256 for card in cards), fitted
        self._keys[config] = (version, key)
        return key

    def is_loaded(self, request: AnalysisRequest) -> bool:
        return self._key(self.config(request)) in self._scanners

    def scanner(self, request: AnalysisRequest) -> VideoScanner:
        return self._scanner(self.config(request))[1]

    def _scanner(self, config: ScannerConfig) -> tuple[tuple, VideoScanner]:
        key = self._key(config)
        if key not in self._scanners:
            while len(self._scanners) >= KEPT_SELECTIONS:
                self._scanners.popitem(last=False)
            self._scanners[key] = VideoScanner(config)
        self._scanners.move_to_end(key)
        return key, self._scanners[key]

    def classifier(self, name: str):
        """The named model: one a scanner already holds, else loaded (sha256 checked) once per
        version of its file."""
        from core.models.model_store import load_classifier
        from core.models.zoo import resolve_selection

        [card] = resolve_selection([name], self._zoo())
        for scanner in self._scanners.values():
            for classifier in scanner.classifiers:
                if classifier.name == name and classifier.card.sha256 == card.sha256:
                    return classifier
        key = (name, card.sha256)
        if key not in self._classifiers:
            self._classifiers[key] = load_classifier(card.card_path)
        return self._classifiers[key]

    def gradcam(self, model: str, crops: list) -> list:
        """Grad-CAM heatmaps (core.models.gradcam) of the named model for each face crop."""
        from core.models.gradcam import gradcam

        classifier = self.classifier(model)
        return [gradcam(classifier, crop) for crop in crops]

    def live_scorer(self, settings: AnalysisSettings, models: tuple[str, ...], ensemble: str):
        """The FrameScorer for a live session's settings and models (none: faces only), built
        on the scanner's detector and models, kept for the next frame."""
        from core.live import FrameScorer

        scanner_key = scanner = None
        if models:
            scanner_key, scanner = self._scanner(self.config(AnalysisRequest(
                "live", b"", "", settings.to_dict(), models, ensemble)))
        key = (settings, models, ensemble, scanner_key)
        if key not in self._scorers:
            if len(self._scorers) >= 8:         # settings changed often: keep the recent ones
                self._scorers.pop(next(iter(self._scorers)))
            if models:
                detector, classifiers, mix = (scanner.detector, scanner.classifiers,
                                              scanner.ensemble)
            else:
                detector, classifiers, mix = self.detector(settings), [], None
            self._scorers[key] = FrameScorer(detector, classifiers, settings.band,
                                             margin=settings.margin, ensemble=mix,
                                             views=settings.views)
        return self._scorers[key]

    def detector(self, settings: AnalysisSettings):
        from core.pipeline import make_detector

        key = _detector_settings(settings)
        if key not in self._detectors:
            self._detectors[key] = make_detector(key)
        return self._detectors[key]

    def answer(self, header: dict, blobs: Blobs,
               progress: Callable[[str, float], None] | None = None) -> tuple[dict, Blobs]:
        """The reply to any request a worker receives (an analysis or Grad-CAM)."""
        if header["kind"] == "gradcam":
            return heatmaps_reply(self.gradcam(header["model"], gradcam_crops(header, blobs)))
        if header["kind"] == "live":
            scorer = self.live_scorer(AnalysisSettings.from_dict(header["settings"]),
                                      tuple(header["models"]), header["ensemble"])
            return live_faces_reply(scorer(live_frame(header, blobs)))
        request = AnalysisRequest.from_message(header, blobs)
        if request.path:
            return report_reply(self.analyze_in_place(request))
        return self.analyze(request, progress)

    def analyze_in_place(self, request: AnalysisRequest):
        """The AnalysisResult of the file at request.path, read where it is; no images."""
        return self.scanner(request).analyze(
            request.path, AnalysisSettings.from_dict(request.settings), keep_images=False)

    def analyze(self, request: AnalysisRequest,
                progress: Callable[[str, float], None] | None = None) -> tuple[dict, Blobs]:
        """The reply for one request: the analysis encoded (protocol.encode_analysis).
        Raises what the analysis raises."""
        return encode_analysis(self.analyze_entry(request, progress))

    def analyze_entry(self, request: AnalysisRequest,
                      progress: Callable[[str, float], None] | None = None
                      ) -> StoredAnalysis:
        """The analysis of one request as the app stores it."""
        if progress is not None and not self.is_loaded(request):
            progress("load", 0.0)
        scanner = self.scanner(request)
        settings = AnalysisSettings.from_dict(request.settings)
        upload = Upload(request.upload_name, request.data, request.content_hash)

        def analyze(path, **options):
            return scanner.analyze(path, settings, **options)

        return analyze_upload(upload, analyze, settings, scanner.model_names, progress,
                              ensemble=request.ensemble)
